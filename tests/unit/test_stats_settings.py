"""Statistics settings that change results (issue 27): the bootstrap's seed, the per-head
claim's multiplicity correction, and the filtered verdicts of the findings claims.

Each test sits where a wrong setting changes the answer: two seeds that give different
intervals, a head whose deviation is significant at 5% but not at the Bonferroni level
5%/m, and a data set whose filtered subset supports a claim that all prompts do not.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import tempo_lens.experiments.findings_rules as rules
from tempo_lens.analysis.stats import bootstrap_ci, estimate
from tempo_lens.experiments._claim_rows import direction, head_specialisation, interval, row
from tempo_lens.experiments.findings import Config
from tempo_lens.experiments.findings_claims import claims_table

from .test_findings_claims import synthetic


# ---------------------------------------------------------------------------- bootstrap seed
def _reference_ci(x: np.ndarray, seed: int, n_boot: int, level: float) -> tuple[float, float]:
    """Percentile bootstrap of the mean written out (resample rows with default_rng(seed))."""
    rng = np.random.default_rng(seed)
    means = np.array([x[rng.integers(0, len(x), len(x))].mean() for _ in range(n_boot)])
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def _reference_t_ci(x: np.ndarray, seed: int, n_boot: int, level: float) -> tuple[float, float]:
    """Bootstrap-t of the mean written out (Efron & Tibshirani 1993, sec. 12.5)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    m, se = x.mean(), x.std(ddof=1) / np.sqrt(len(x))
    t = np.array([(x[i].mean() - m) / (x[i].std(ddof=1) / np.sqrt(len(x))) for i in idx])
    a = (1 - level) / 2
    lo, hi = np.quantile(t, [a, 1 - a], method="inverted_cdf")
    return float(m - hi * se), float(m - lo * se)


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_estimate_uses_its_seed(seed: int) -> None:
    x = np.random.default_rng(99).normal(0.3, 1.0, 15)
    e = estimate(x, seed=seed, n_boot=2000)
    assert e.ci == estimate(x, seed=seed, n_boot=2000).ci  # the same seed: the same interval
    assert e.ci == pytest.approx(_reference_t_ci(x, seed, 2000, 0.95), abs=1e-12)
    others = {estimate(x, seed=s, n_boot=2000).ci for s in (seed + 1, seed + 2, seed + 3)}
    assert e.ci not in others and len(others) == 3  # another seed: another interval


def test_bootstrap_ci_uses_its_seed() -> None:
    x = np.random.default_rng(5).normal(0.0, 1.0, 12)
    a, b = bootstrap_ci(x, n_boot=1000, seed=3), bootstrap_ci(x, n_boot=1000, seed=4)
    assert a != b and a == bootstrap_ci(x, n_boot=1000, seed=3)
    assert a == pytest.approx(_reference_ci(x, 3, 1000, 0.95), abs=1e-12)


def test_estimate_seed_reaches_a_findings_row() -> None:
    """The seed given to a claims row reaches its bootstrap (all prompts and filtered): each
    interval is exactly ``estimate``'s at that seed, and the p-value and effect size are
    those of the paired tests against the reference value."""
    from scipy import stats as sps

    values = pd.Series(np.random.default_rng(1).normal(0.5, 0.2, 12), index=list("abcdefghijkl"))
    keep = pd.Index(list("abcdefghij"))
    rows = {s: row("1", "", "", values, keep, interval(0.4, 0.6), 0.45, s) for s in (0, 1)}
    for s, r in rows.items():
        assert (r["ci_low"], r["ci_high"]) == estimate(values.to_numpy(), seed=s).ci
        f = estimate(values[keep].to_numpy(), seed=s)
        assert (r["ci_low_filtered"], r["ci_high_filtered"]) == f.ci
        assert r["estimate"] == pytest.approx(values.mean())
        assert r["estimate_filtered"] == pytest.approx(values[keep].mean())
        assert r["n_prompts"] == 12 and r["n_prompts_filtered"] == 10
    assert (rows[0]["ci_low"], rows[0]["ci_high"]) != (rows[1]["ci_low"], rows[1]["ci_high"])
    d = values.to_numpy() - 0.45
    assert rows[0]["p_value"] == pytest.approx(sps.wilcoxon(d).pvalue)
    assert rows[0]["effect_size"] == pytest.approx(d.mean() / d.std(ddof=1))


# ---------------------------------------------------------------------------- multiplicity
N_PROMPTS = 20
GRID = [(layer, head) for layer in range(3) for head in range(4)]  # m = 12 heads


def _heads(special_mean: float, special_sd: float) -> pd.DataFrame:
    """Head (0, 0)'s log ratio is ``mean + sd * z`` (z standardised), every other head's 0."""
    z = np.random.default_rng(3).standard_normal(N_PROMPTS)
    z = (z - z.mean()) / z.std(ddof=1)
    rows = []
    for i in range(N_PROMPTS):
        for la, h in GRID:
            x = special_mean + special_sd * z[i] if (la, h) == (0, 0) else 0.0
            rows.append(
                {"prompt_id": f"p{i:02d}", "layer": la, "head": h, "ratio_generated": math.exp(x)}
            )
    return pd.DataFrame(rows)


def _deviation(heads: pd.DataFrame) -> np.ndarray:
    """Head (0, 0)'s log ratio minus the prompt's mean over heads (independent pivot)."""
    h = heads.assign(x=np.log(heads["ratio_generated"]))
    mean = h.groupby("prompt_id")["x"].transform("mean")
    sel = (h["layer"] == 0) & (h["head"] == 0)
    return (h["x"] - mean)[sel].to_numpy()


def test_per_head_claim_is_bonferroni_corrected_at_the_boundary() -> None:
    heads = _heads(0.5, 1.0)
    dev = _deviation(heads)
    m = len(GRID)
    # the data sit between the two levels: significant at 5%, not at 5%/m
    assert abs(dev.mean()) > math.log(1.25)
    assert estimate(dev, seed=0).ci[0] > 0
    assert estimate(dev, seed=0, level=1 - 0.05 / m).ci[0] < 0
    out = head_specialisation(heads, seed=0)
    assert out["estimate"] == 0.0, out["detail"]
    assert out["detail"] == f"0 of {m} heads specialised"
    assert out["verdict"] == "refuted"


def test_per_head_claim_counts_a_head_beyond_the_corrected_level() -> None:
    heads = _heads(0.5, 0.5)
    dev = _deviation(heads)
    assert estimate(dev, seed=0, level=1 - 0.05 / len(GRID)).ci[0] > 0
    out = head_specialisation(heads, seed=0)
    assert out["estimate"] == pytest.approx(1 / len(GRID))
    assert out["detail"].startswith(f"1 of {len(GRID)} heads specialised: L0H0")
    assert out["verdict"] == "supported"


# ---------------------------------------------------------------------------- filtered verdicts
N_BAD = 8  # degenerate prompts, given values that contradict the claims


def _with_degenerate_contrary() -> dict[str, pd.DataFrame]:
    """``synthetic()`` with prompts p00..p07 degenerate and contrary to claims 1 and 3."""
    tables = synthetic()
    pp = tables["per_prompt"].copy()
    bad = pp["prompt_id"].isin([f"p{i:02d}" for i in range(N_BAD)])
    pp["degenerate"] = bad
    rng = np.random.default_rng(11)
    pp.loc[bad, "matched_ratio"] = 0.9 + rng.normal(0, 0.02, int(bad.sum()))
    pp.loc[bad, "entropy_middle"] = 0.2 + rng.normal(0, 0.01, int(bad.sum()))
    tables["per_prompt"] = pp
    members = tables["members"].copy()
    bad_m = members["prompt_id"].isin([f"p{i:02d}" for i in range(16)])
    # claim 5 on the degenerate-rich set: 16 prompts where the weakest-attention member wins
    for _, g in members[bad_m].groupby(["prompt_id", "set_step"]):
        members.loc[g.index, "supported"] = g["attention"] == g["attention"].min()
    tables["members"] = members
    return tables


def test_row_judges_the_filtered_interval() -> None:
    rng = np.random.default_rng(2)
    values = pd.Series(
        np.r_[rng.normal(0.5, 0.02, 12), rng.normal(0.9, 0.02, 8)],
        index=[f"p{i:02d}" for i in range(20)],
    )
    keep = values.index[:12]
    r = row("1", "", "", values, keep, interval(0.4, 0.6), 0.5, seed=0)
    f = estimate(values[keep].to_numpy(), seed=0, min_n=1)
    assert (r["ci_low_filtered"], r["ci_high_filtered"]) == f.ci
    assert r["verdict_filtered"] == rules.interval(f.ci, 0.4, 0.6, f.n) == "supported"
    assert r["verdict"] != "supported"


def test_claims_table_filtered_verdicts_differ_from_all_prompts() -> None:
    table = claims_table(Config(), _with_degenerate_contrary()).set_index("claim")
    one = table.loc["1"]
    assert one["n_prompts"] == 24 and one["n_prompts_filtered"] == 24 - N_BAD
    assert one["verdict"] != "supported"  # the degenerate prompts pull the CI above 0.6
    ci = (one["ci_low_filtered"], one["ci_high_filtered"])
    assert rules.interval(ci, 0.4, 0.6, int(one["n_prompts_filtered"])) == "supported"
    assert one["verdict_filtered"] == "supported"
    # claim 3 (composite of 3.ml and 3.me, each filtered on its own interval)
    for c in ("3.ml", "3.me"):
        r = table.loc[c]
        ci = (r["ci_low_filtered"], r["ci_high_filtered"])
        want = rules.direction(ci, sign=+1, margin=0.02, n=int(r["n_prompts_filtered"]))
        assert r["verdict_filtered"] == want == "supported", c
        assert r["verdict"] != "supported", c
    assert table.loc["3", "verdict_filtered"] == "supported"
    assert table.loc["3", "verdict"] != "supported"
    # claim 5.near (a logistic fit per subset): the verdict of each subset's own interval
    five = table.loc["5.near"]
    ci = (five["ci_low_filtered"], five["ci_high_filtered"])
    assert five["verdict_filtered"] == rules.direction(
        ci, sign=+1, margin=0.1, n=int(five["n_prompts_filtered"])
    )
    assert five["verdict_filtered"] != five["verdict"]


@pytest.mark.parametrize(
    "verdict", [interval(0.4, 0.6), direction(+1, 0.02)], ids=["interval", "direction"]
)
def test_row_verdicts_need_enough_prompts(verdict) -> None:
    """A clear interval from fewer than ``MIN_PROMPTS`` prompts is insufficient (the prompt
    count reaches the rule), for all prompts and for the filtered subset."""
    n = rules.MIN_PROMPTS - 1
    values = pd.Series(np.linspace(0.49, 0.51, n), index=[f"p{i}" for i in range(n)])
    r = row("x", "", "", values, values.index, verdict, 0.5, seed=0)
    assert r["verdict"] == r["verdict_filtered"] == "insufficient"
    more = pd.Series(np.linspace(0.49, 0.51, n + 1), index=[f"p{i}" for i in range(n + 1)])
    r = row("x", "", "", more, more.index, verdict, 0.5, seed=0)
    assert r["verdict"] == r["verdict_filtered"] == "supported"
