"""The claims table of the findings experiment: per-prompt values -> estimates -> verdicts.

Every row applies one pre-registered rule of ``docs/findings.md`` (implemented in
:mod:`.findings_rules`) to statistics from :mod:`tempo_lens.analysis.stats`. Rows are
computed on all prompts (``verdict``) and without degenerate generations
(``estimate_filtered`` / ``verdict_filtered``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

import tempo_lens.experiments.findings_rules as rules
from tempo_lens.analysis.controls import band_of
from tempo_lens.analysis.stats import estimate
from tempo_lens.experiments._claim_rows import (
    COLUMNS,
    SEED,
    STATEMENT,
    holm_column,
    member_features,
)
from tempo_lens.experiments._claim_rows import blank as _blank
from tempo_lens.experiments._claim_rows import claim5 as _claim5
from tempo_lens.experiments._claim_rows import claim5_near as _claim5_near
from tempo_lens.experiments._claim_rows import direction as _direction
from tempo_lens.experiments._claim_rows import geometric_row as _geometric_row
from tempo_lens.experiments._claim_rows import head_specialisation as _head_specialisation
from tempo_lens.experiments._claim_rows import interval as _interval
from tempo_lens.experiments._claim_rows import row as _row

__all__ = ["COLUMNS", "SEED", "claims_table", "condition", "member_features", "role_table"]


def in_condition(df: pd.DataFrame, mode: str, tau: float, readout: str) -> pd.Series:
    """Which rows of a unit table belong to one condition (a boolean mask).

    Tables written before issue 23 have no ``readout`` column: their rows are the primary
    (``mixture``) arm's.
    """
    sel = (df["mode"] == mode) & np.isclose(df["tau"].astype(float), tau)
    if "readout" in df:
        sel &= df["readout"] == readout
    elif readout != "mixture":
        sel &= False
    return sel


def condition(pp: pd.DataFrame, mode: str, tau: float, readout: str = "mixture") -> pd.DataFrame:
    """The per-prompt rows of one condition, indexed by ``prompt_id``."""
    return pp[in_condition(pp, mode, tau, readout)].set_index("prompt_id")


def role_table(iso: pd.DataFrame) -> pd.DataFrame:
    """Claim 4's per-prompt role fractions among the heads with generated queries.

    Columns ``local``, ``balanced``, ``long_range``, each row summing to 1; NaN for a prompt
    without generated queries, which does not enter claim 4. Per-prompt tables written
    before issue 23 counted heads without generated queries in no role (their three
    fractions sum to the share of heads with queries, 0 for a prompt without any); dividing
    by the sum gives the fractions among the heads with queries for those tables too.
    """
    cols = {k: iso[f"role_{k}"].astype(float) for k in ("local", "balanced", "long_range")}
    total = sum(cols.values())
    assert isinstance(total, pd.Series)
    total = total.where(total > 0)
    return pd.DataFrame({k: v / total for k, v in cols.items()}, index=iso.index)


def _clean(*frames: pd.DataFrame) -> pd.Index:
    """Prompts that are not degenerate in any of ``frames``."""
    idx = frames[0].index
    for f in frames:
        idx = idx.intersection(f.index[~f["degenerate"].astype(bool)])
    return idx


def claims_table(cfg: Any, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per claim (see ``docs/findings.md``), columns :data:`COLUMNS`."""
    pp = tables["per_prompt"]
    tau0 = float(cfg.taus[0])
    tau1 = float(cfg.taus[1]) if len(cfg.taus) > 1 else None
    arm = cfg.readouts[0]
    iso, vis = condition(pp, "isolated", tau0, arm), condition(pp, "visible", tau0, arm)
    seed = cfg.seed
    rows: list[dict[str, Any]] = []
    r = "distance-matched per-token ratio, generated baseline, sink excluded"
    one = _interval(0.4, 0.6)
    rows.append(
        _row(
            "1",
            STATEMENT,
            f"{r} (isolated, tau {tau0})",
            iso["matched_ratio"],
            _clean(iso),
            one,
            1.0,  # no effect: parallel tokens receive what the baseline receives
            seed,
        )
    )
    rows.append(
        _row(
            "1.vis",
            STATEMENT,
            f"{r} (visible, tau {tau0})",
            vis["matched_ratio"],
            _clean(vis),
            one,
            1.0,  # no effect: parallel tokens receive what the baseline receives
            seed,
        )
    )
    if tau1 is not None:
        i15 = condition(pp, "isolated", tau1, arm)
        rows.append(
            _row(
                "1.t15",
                STATEMENT,
                f"{r} (isolated, tau {tau1})",
                i15["matched_ratio"],
                _clean(i15),
                one,
                1.0,
                seed,
            )
        )
    rows.append(
        _row(
            "1.raw",
            STATEMENT + " (original definition)",
            f"unmatched per-token ratio vs all non-parallel tokens, sink excluded "
            f"(isolated, tau {tau0})",
            iso["ratio"],
            _clean(iso),
            one,
            1.0,  # no effect: parallel tokens receive what the baseline receives
            seed,
        )
    )
    rows.append(
        _row(
            "1.sink",
            STATEMENT + " (sink included)",
            f"unmatched per-token ratio vs all non-parallel tokens, sink included "
            f"(isolated, tau {tau0})",
            iso["ratio_sink"],
            _clean(iso),
            one,
            1.0,  # no effect: parallel tokens receive what the baseline receives
            seed,
        )
    )
    rows.append(
        _row(
            "1.set",
            STATEMENT + " (per set)",
            f"per-set total / singleton total (isolated, tau {tau0})",
            iso["set_ratio"],
            _clean(iso),
            one,
            1.0,  # no effect: parallel tokens receive what the baseline receives
            seed,
        )
    )
    rows += _log_rows(cfg, tables, iso, one, r)
    rows += _readout_rows(cfg, pp, iso, one, r)
    rows.append(
        _row(
            "1.pos",
            "The reduction is caused by position sharing",
            f"matched ratio shared - distinct-position replay (isolated, tau {tau0})",
            iso["matched_ratio"] - iso["distinct_matched_ratio"],
            _clean(iso),
            _direction(-1, 0.05),
            0.0,
            seed,
        )
    )
    rows.append(
        _row(
            "1.n",
            "The ratio decreases as the set size n increases",
            f"per-prompt Spearman rho of set size vs member r_j / generated-singleton "
            f"mean (isolated, tau {tau0})",
            iso["size_rho"],
            _clean(iso),
            _direction(-1, 0.1),
            0.0,
            seed,
        )
    )
    both = iso.index.intersection(vis.index)
    rel = iso["matched_ratio"].reindex(both) / vis["matched_ratio"].reindex(both) - 1
    rows.append(
        _row(
            "2",
            "Isolation has minimal effect on attention to prior parallel tokens (~10% difference)",
            f"matched ratio isolated / visible - 1, paired by "
            f"prompt (tau {tau0}; separate generations)",
            rel,
            _clean(iso, vis),
            _interval(-0.2, 0.2),
            0.0,
            seed,
        )
    )
    rows.append(
        _row(
            "2.mask",
            "Isolation has minimal effect (tokens held fixed)",
            f"matched ratio of the isolated generation / its visible-mask replay - 1 (tau {tau0})",
            iso["matched_ratio"] / iso["other_mask_matched_ratio"] - 1,
            _clean(iso),
            _interval(-0.2, 0.2),
            0.0,
            seed,
        )
    )
    ml = _row(
        "3.ml",
        "Middle layers are more diffuse than late layers",
        f"normalised entropy middle - late (isolated, tau {tau0})",
        iso["entropy_middle"] - iso["entropy_late"],
        _clean(iso),
        _direction(+1, 0.02),
        0.0,
        seed,
    )
    me = _row(
        "3.me",
        "Middle layers are more diffuse than early layers",
        f"normalised entropy middle - early (isolated, tau {tau0})",
        iso["entropy_middle"] - iso["entropy_early"],
        _clean(iso),
        _direction(+1, 0.02),
        0.0,
        seed,
    )
    funnel = _blank(
        "3",
        "Layer entropy funnel: early mixed, middle high, late low",
        "3.ml and 3.me",
        n_prompts=ml["n_prompts"],
        verdict=rules.composite([ml["verdict"], me["verdict"]]),
        n_prompts_filtered=ml["n_prompts_filtered"],
        verdict_filtered=rules.composite([ml["verdict_filtered"], me["verdict_filtered"]]),
    )
    rows += [funnel, ml, me]
    hmin = estimate(iso["head_entropy_min"].to_numpy(float), seed=seed, min_n=1)
    hmax = _row(
        "3.h",
        "Head entropy ranges from 0.40 to 1.21",
        f"per-prompt max over heads of mean entropy in nats (isolated, tau {tau0}); min in detail",
        iso["head_entropy_max"],
        _clean(iso),
        lambda ci, n: rules.head_range(hmin.ci, ci, n),
        None,  # no "no effect" value for a range claim: the verdict is the CI's
        seed,
        detail=f"min over heads {hmin.mean:.3f} [{hmin.ci[0]:.3f}, {hmin.ci[1]:.3f}]",
    )
    hmax["verdict_filtered"] = ""  # the rule needs both ends; reported for all prompts only
    rows.append(hmax)
    fractions = role_table(iso)
    role_est = {
        k: estimate(fractions[k].to_numpy(float), seed=seed, min_n=1)
        for k in ("local", "balanced", "long_range")
    }
    n_queries = int(fractions["local"].notna().sum())
    smallest = min(role_est, key=lambda k: role_est[k].mean)
    rows.append(
        _blank(
            "4",
            "Heads divide into long-range, local and balanced roles",
            f"per-prompt fraction of heads per role (sink removed; isolated, tau {tau0}); "
            "estimate = the smallest role",
            estimate=role_est[smallest].mean,
            ci_low=role_est[smallest].ci[0],
            ci_high=role_est[smallest].ci[1],
            n_prompts=role_est[smallest].n,
            verdict=rules.roles([e.ci for e in role_est.values()], role_est[smallest].n),
            detail="; ".join(
                f"{k} {e.mean:.3f} [{e.ci[0]:.3f}, {e.ci[1]:.3f}]" for k, e in role_est.items()
            )
            + f"; {n_queries} of {len(fractions)} prompts had generated queries",
        )
    )
    heads = tables["heads"]
    heads_iso = heads[in_condition(heads, "isolated", tau0, arm)]
    rows.append(_head_specialisation(heads_iso, seed))
    members = tables.get("members", pd.DataFrame())
    if not members.empty:
        members = members[in_condition(members, "isolated", tau0, arm)]
    rows.append(_claim5(members, _clean(iso)))
    rows.append(_claim5_near(members, _clean(iso)))
    rows += _exact_rows(pp)
    holm_column(rows)
    return pd.DataFrame(rows, columns=COLUMNS)


def _log_rows(
    cfg: Any, tables: dict[str, pd.DataFrame], iso: pd.DataFrame, rule: Any, metric: str
) -> list[dict[str, Any]]:
    """1.log and the layer bands 1.early / 1.middle / 1.late (geometric means; issue 23)."""
    tau0, arm, seed = float(cfg.taus[0]), cfg.readouts[0], cfg.seed
    log = np.log(iso["matched_ratio"].astype(float).where(lambda v: v > 0))
    out = [
        _geometric_row(
            "1.log",
            STATEMENT + " (geometric mean)",
            f"exp(mean log {metric}) (isolated, tau {tau0})",
            log,
            _clean(iso),
            rule,
            seed,
        )
    ]
    layers = tables.get("layers", pd.DataFrame())
    lay = layers[in_condition(layers, "isolated", tau0, arm)] if not layers.empty else layers
    for band in ("early", "middle", "late"):
        if lay.empty:
            values = pd.Series(dtype=float)
        else:
            sel = lay[band_of(lay["relative_depth"]) == band]
            ratio = sel["matched_ratio"].astype(float)
            values = np.log(ratio.where(ratio > 0)).groupby(sel["prompt_id"]).mean()
        out.append(
            _geometric_row(
                f"1.{band}",
                STATEMENT + f" ({band} layers)",
                f"exp(mean over prompts of the mean over {band} layers of log per-layer "
                f"distance-matched ratio) (isolated, tau {tau0})",
                values,
                _clean(iso),
                rule,
                seed,
            )
        )
    return out


def _readout_rows(
    cfg: Any, pp: pd.DataFrame, iso: pd.DataFrame, rule: Any, metric: str
) -> list[dict[str, Any]]:
    """1.last, 1.last.vis (the notes' readout) and 1.readout (last - mixture; issue 23)."""
    if "last" not in cfg.readouts or cfg.readouts[0] == "last":
        return []
    tau0, seed = float(cfg.taus[0]), cfg.seed
    li, lv = condition(pp, "isolated", tau0, "last"), condition(pp, "visible", tau0, "last")
    both = iso.index.intersection(li.index)
    diff = li["matched_ratio"].reindex(both) - iso["matched_ratio"].reindex(both)
    return [
        _row(
            "1.last",
            STATEMENT + " (readout last)",
            f"{metric} (last, isolated, tau {tau0})",
            li["matched_ratio"],
            _clean(li),
            rule,
            1.0,
            seed,
        ),
        _row(
            "1.last.vis",
            STATEMENT + " (readout last)",
            f"{metric} (last, visible, tau {tau0})",
            lv["matched_ratio"],
            _clean(lv),
            rule,
            1.0,
            seed,
        ),
        _row(
            "1.readout",
            "The readout does not change claim 1 (|last - mixture| <= 0.1)",
            f"matched ratio last - mixture, paired by prompt (isolated, tau {tau0}; "
            "separate generations)",
            diff,
            _clean(iso, li),
            _interval(-0.1, 0.1),
            0.0,
            seed,
        ),
    ]


def _exact_rows(pp: pd.DataFrame) -> list[dict[str, Any]]:
    n_prompts = int(pp["prompt_id"].nunique())
    # 6.pos judges the units with a parallel set: elsewhere "siblings share a position" is
    # vacuous and the unit would pass trivially (issue 23); those are reported, not counted.
    has_set = pp["n_parallel_sets"].fillna(0).astype(int) > 0
    pos_all = pp["positions_ok"].astype(bool)
    pos_ok = pos_all[has_set]
    iso = pp[(pp["mode"] == "isolated") & (pp["n_parallel_sets"] > 0)]
    vis = pp[(pp["mode"] == "visible") & (pp["n_parallel_sets"] > 0)]
    sib_iso = iso["max_sibling_attention"].astype(float)
    sib_vis = vis["max_sibling_attention"].astype(float)
    n_iso_ok = int((sib_iso == 0.0).sum()) + int((sib_vis > 0.0).sum())
    judged, matched = int(pp["width_judged"].sum()), int(pp["width_matches"].sum())
    return [
        _blank(
            "6.pos",
            "Parallel tokens share logical positions (measured at the hooks)",
            "position recovered from layer-0 hook_k -> hook_rot_k equals the logical "
            "position, siblings equal (tolerance 1e-3); estimate = fraction of the units with "
            "a parallel set",
            estimate=float(pos_ok.mean()) if len(pos_ok) else math.nan,
            n_prompts=int(pp.loc[has_set, "prompt_id"].nunique()),
            verdict=rules.exact(int(pos_ok.sum()), len(pos_ok)),
            detail=f"{int(pos_ok.sum())}/{len(pos_ok)} units with a parallel set; max error "
            f"{pp['position_max_error'].astype(float).max():.2e} positions; units without a "
            f"set (not judged): {int(pos_all[~has_set].sum())}/{int((~has_set).sum())} "
            "recover every position",
        ),
        _blank(
            "6.iso",
            "Parallel tokens are isolated (exact zeros)",
            "max sibling attention == 0.0 in every isolated unit with a set and > 0 in "
            "every visible one; estimate = max over isolated units",
            estimate=float(sib_iso.max()) if len(sib_iso) else math.nan,
            n_prompts=n_prompts,
            verdict=rules.exact(n_iso_ok, len(sib_iso) + len(sib_vis)),
            detail=f"isolated units {len(sib_iso)} (max {sib_iso.max():.3g}); visible units "
            f"{len(sib_vis)} (min of max {sib_vis.min():.3g})",
        ),
        _blank(
            "6.width",
            "Width follows the threshold",
            "set size == min(cap, max(1, #{p >= tau})) with p recomputed from the final "
            "residual; estimate = fraction of judged steps",
            estimate=matched / judged if judged else math.nan,
            n_prompts=n_prompts,
            verdict=rules.exact(matched, judged),
            detail=f"{matched}/{judged} judged steps match; "
            f"{int(pp['width_steps'].sum()) - judged} steps not judged (tie/EOS)",
        ),
    ]
