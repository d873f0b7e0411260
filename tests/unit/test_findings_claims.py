"""The claims table on synthetic per-prompt numbers: every claim can come out each way."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tempo_lens.experiments.findings import Config
from tempo_lens.experiments.findings_claims import claims_table

N = 24
CONDS = [
    (readout, mode, tau)
    for tau in (0.1, 0.15)
    for readout in ("mixture", "last")
    for mode in ("isolated", "visible")
]
LAYERS = 6  # relative depths 1/12 .. 11/12: bands early (0, 1), middle (2, 3), late (4, 5)


def synthetic(
    *,
    ratio: float = 0.5,
    distinct: float = 0.8,
    visible: float = 0.5,
    middle: float = 0.8,
    roles: tuple[float, float, float] = (0.4, 0.4, 0.2),
    special: float = 1.0,
    attention_follows: bool = True,
    sibling: float = 0.0,
    last: float | None = None,
    late: float | None = None,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    # the mixture arm draws from the stream the tables had before the last arm and the
    # layers table existed (other tests rely on its values); those draw from their own
    base_rng = np.random.default_rng(seed)
    last_rng, layer_rng = np.random.default_rng(seed + 1), np.random.default_rng(seed + 2)
    rows, heads, members, layers = [], [], [], []
    for i in range(N):
        pid = f"p{i:02d}"
        for readout, mode, tau in CONDS:
            rng = base_rng if readout == "mixture" else last_rng
            base = visible if mode == "visible" else ratio
            if readout == "last" and last is not None:
                base = last
            for layer in range(LAYERS):
                band_value = late if late is not None and layer >= 4 else base
                layers.append(
                    {
                        "prompt_id": pid,
                        "readout": readout,
                        "mode": mode,
                        "tau": tau,
                        "layer": layer,
                        "relative_depth": (layer + 0.5) / LAYERS,
                        "matched_ratio": band_value * np.exp(layer_rng.normal(0, 0.03)),
                    }
                )
            rows.append(
                {
                    "prompt_id": pid,
                    "readout": readout,
                    "mode": mode,
                    "tau": tau,
                    "degenerate": i == 0,
                    "matched_ratio": base + rng.normal(0, 0.02),
                    "ratio": base + rng.normal(0, 0.02),
                    "ratio_sink": base + rng.normal(0, 0.02),
                    "set_ratio": base + rng.normal(0, 0.02),
                    "distinct_matched_ratio": distinct + rng.normal(0, 0.02),
                    "other_mask_matched_ratio": visible + rng.normal(0, 0.02),
                    "size_rho": -0.5 + rng.normal(0, 0.05),
                    "entropy_early": 0.5 + rng.normal(0, 0.01),
                    "entropy_middle": middle + rng.normal(0, 0.01),
                    "entropy_late": 0.5 + rng.normal(0, 0.01),
                    "head_entropy_min": 0.4 + rng.normal(0, 0.01),
                    "head_entropy_max": 1.2 + rng.normal(0, 0.01),
                    "role_local": roles[0],
                    "role_balanced": roles[1],
                    "role_long_range": roles[2],
                    "positions_ok": True,
                    "position_max_error": 1e-7,
                    "n_parallel_sets": 3,
                    "max_sibling_attention": sibling if mode == "isolated" else 0.3,
                    "width_steps": 10,
                    "width_judged": 10,
                    "width_matches": 10,
                }
            )
            for layer in range(3):
                for head in range(4):
                    r = special if (layer, head) == (0, 0) else 1.0
                    heads.append(
                        {
                            "prompt_id": pid,
                            "readout": readout,
                            "mode": mode,
                            "tau": tau,
                            "layer": layer,
                            "head": head,
                            "ratio_generated": r * np.exp(rng.normal(0, 0.05)),
                        }
                    )
            if (readout, mode, tau) != ("mixture", "isolated", 0.1):
                continue
            for s in range(4):
                att = rng.random(3)
                probs = rng.random(3)
                win = int(np.argmax(att) if attention_follows else np.argmin(att))
                if rng.random() < 0.15:
                    win = int(rng.integers(3))
                for k in range(3):
                    members.append(
                        {
                            "prompt_id": pid,
                            "readout": readout,
                            "mode": mode,
                            "tau": tau,
                            "set_step": s,
                            "probability": probs[k],
                            "attention": att[k],
                            "supported": k == win,
                            "heldout_supported": float(k == win),
                        }
                    )
    return {
        "per_prompt": pd.DataFrame(rows),
        "heads": pd.DataFrame(heads),
        "members": pd.DataFrame(members),
        "layers": pd.DataFrame(layers),
    }


def verdicts(**kw) -> dict[str, str]:
    table = claims_table(Config(), synthetic(**kw))
    return dict(zip(table["claim"], table["verdict"], strict=True))


@pytest.mark.parametrize(
    ("kw", "claim", "want"),
    [
        ({}, "1", "supported"),
        ({"ratio": 0.9}, "1", "refuted"),
        ({}, "1.pos", "supported"),
        ({"distinct": 0.5}, "1.pos", "refuted"),
        ({}, "2", "supported"),
        ({"visible": 0.9}, "2", "refuted"),
        ({}, "3", "supported"),
        ({"middle": 0.3}, "3", "refuted"),
        ({}, "4", "supported"),
        ({"roles": (0.6, 0.4, 0.0)}, "4", "refuted"),
        ({"special": 2.0}, "4.par", "supported"),
        ({}, "4.par", "refuted"),
        ({}, "5", "supported"),
        ({"attention_follows": False}, "5", "refuted"),
        ({}, "5.near", "supported"),
        ({"attention_follows": False}, "5.near", "refuted"),
        ({}, "1.log", "supported"),
        ({"ratio": 0.9}, "1.log", "refuted"),
        ({}, "1.late", "supported"),
        ({"late": 1.0}, "1.late", "refuted"),
        ({"late": 1.0}, "1.early", "supported"),
        ({}, "1.last", "supported"),
        ({"last": 1.0}, "1.last", "refuted"),
        ({}, "1.readout", "supported"),
        ({"last": 1.0}, "1.readout", "refuted"),
        ({}, "6.iso", "supported"),
        ({"sibling": 1e-9}, "6.iso", "refuted"),
    ],
)
def test_each_claim_each_way(kw, claim, want) -> None:
    assert verdicts(**kw)[claim] == want


def test_degenerate_prompts_are_left_out_of_the_filtered_estimate() -> None:
    table = claims_table(Config(), synthetic()).set_index("claim")
    assert table.loc["1", "n_prompts"] == N
    assert table.loc["1", "n_prompts_filtered"] == N - 1


# ---------------------------------------------------------------------------- claim 4 (issue 23)
def _without_queries(n_empty: int) -> dict[str, pd.DataFrame]:
    """``synthetic()`` where ``n_empty`` prompts had no generated queries: per-prompt tables
    written before issue 23 stored 0 for every role there (NaN local fractions compare false)."""
    tables = synthetic()
    pp = tables["per_prompt"].copy()
    empty = pp["prompt_id"].isin([f"p{i:02d}" for i in range(1, 1 + n_empty)])
    pp.loc[empty, ["role_local", "role_balanced", "role_long_range"]] = 0.0
    tables["per_prompt"] = pp
    return tables


def test_claim4_counts_only_prompts_with_generated_queries() -> None:
    """Old code: n_prompts 24 (4 prompts without queries counted as 0 in every role), the
    role fractions summing to 20/24; now: n 20, the roles as measured, summing to 1."""
    table = claims_table(Config(), _without_queries(4)).set_index("claim")
    r = table.loc["4"]
    assert r["n_prompts"] == N - 4
    assert r["estimate"] == pytest.approx(0.2)  # the smallest role, long-range
    assert "20 of 24 prompts had generated queries" in r["detail"]
    means = [float(part.split()[1]) for part in r["detail"].split("; ")[:3]]
    assert sum(means) == pytest.approx(1.0, abs=2e-3)


def test_role_fractions_leave_out_heads_without_generated_queries() -> None:
    from tempo_lens.experiments.findings import role_fractions

    local = np.array([0.6, 0.1, np.nan, 0.3, 0.7])
    got = role_fractions(local)
    assert got == {"role_local": 0.5, "role_long_range": 0.25, "role_balanced": 0.25}
    assert all(np.isnan(v) for v in role_fractions(np.full(4, np.nan)).values())


def test_6pos_judges_only_units_with_a_parallel_set() -> None:
    """A unit without a set passes 6.pos trivially (no siblings to compare): it is reported
    in the detail, not counted; a failing unit with a set still refutes (issue 23)."""
    tables = synthetic()
    pp = tables["per_prompt"].copy()
    pp.loc[:9, "n_parallel_sets"] = 0  # 10 units without a set
    tables["per_prompt"] = pp
    r = claims_table(Config(), tables).set_index("claim").loc["6.pos"]
    assert r["verdict"] == "supported" and r["estimate"] == 1.0
    assert r["detail"].startswith(f"{len(pp) - 10}/{len(pp) - 10} units with a parallel set")
    assert "units without a set (not judged): 10/10" in r["detail"]
    pp.loc[0, "positions_ok"] = False  # a failure where nothing is judged does not count
    pp.loc[20, "positions_ok"] = False  # one that is judged refutes
    tables["per_prompt"] = pp
    r = claims_table(Config(), tables).set_index("claim").loc["6.pos"]
    assert r["verdict"] == "refuted"
    assert r["estimate"] == pytest.approx((len(pp) - 11) / (len(pp) - 10))


def test_holm_adjusts_the_claim1_multiverse_only() -> None:
    """p_holm = statsmodels' Holm over the claim-1 rows; NaN elsewhere."""
    from statsmodels.stats.multitest import multipletests

    from tempo_lens.experiments._claim_rows import MULTIVERSE

    table = claims_table(Config(), synthetic()).set_index("claim")
    multi = table.loc[[c for c in MULTIVERSE if c in table.index]]
    multi = multi[np.isfinite(multi["p_value"].astype(float))]
    assert len(multi) >= 8
    want = multipletests(multi["p_value"].astype(float), method="holm")[1]
    np.testing.assert_allclose(multi["p_holm"].astype(float), want)
    assert (multi["p_holm"] >= multi["p_value"]).all()
    assert table.loc[["2", "3.ml", "5"], "p_holm"].isna().all()


def test_geometric_row_is_exp_of_the_log_scale_estimate() -> None:
    """1.log = exp(mean log ratio) with exp'd CI ends, not the arithmetic mean of ratios."""
    from tempo_lens.analysis.stats import estimate

    tables = synthetic()
    table = claims_table(Config(), tables).set_index("claim")
    pp = tables["per_prompt"]
    iso = pp[(pp["readout"] == "mixture") & (pp["mode"] == "isolated") & (pp["tau"] == 0.1)]
    e = estimate(np.log(iso["matched_ratio"].to_numpy()), seed=0, min_n=1)
    assert table.loc["1.log", "estimate"] == pytest.approx(np.exp(e.mean))
    assert table.loc["1.log", "ci_low"] == pytest.approx(np.exp(e.ci[0]))
    assert table.loc["1.log", "ci_high"] == pytest.approx(np.exp(e.ci[1]))


def test_geometric_row_saturates_on_a_tiny_sample() -> None:
    """Three prompts: the log-scale bootstrap-t bound is astronomically wide; exp of it is
    inf (not an OverflowError), and the row says insufficient (a user's --quick run)."""
    from tempo_lens.experiments._claim_rows import geometric_row, interval

    values = pd.Series([0.903, 0.094, -0.743], index=["a", "b", "c"])  # log bound ~5e15
    r = geometric_row("1.log", "", "", values, values.index, interval(0.4, 0.6), 0)
    assert r["verdict"] == "insufficient" and r["ci_high"] == math.inf
    assert r["estimate"] == pytest.approx(np.exp(values.mean()))
