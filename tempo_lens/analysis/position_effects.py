"""Position-sharing effects: how a parallel set's attention depends on n and on positions.

Input: a tidy table with one row per ``(prompt_id, n, scheme, delta, layer)`` and the
attention the continuation queries pay to the set, ``attention_set_total`` (the
``attention.csv`` of :mod:`tempo_lens.experiments.position_sharing`). Schemes: ``shared``
(``delta = 0``), ``offset`` (member ``i`` at ``L + i·delta``), ``distinct`` (control).
Everything is computed on the layer mean ``T`` per prompt, with prompts as the unit of
replication (:func:`tempo_lens.analysis.estimate`):

* ``n_effect`` — per scheme: per-prompt Spearman rho between n and T, and T(n_max)/T(n_min);
* ``scheme_effect`` — per n > 1 and scheme: T(scheme)/T(shared) and the *recovery*
  (T(scheme) - T(shared)) / (T(distinct) - T(shared)), the fraction of the gap closed;
* ``critical_delta`` — the smallest offset whose mean recovery reaches ``recovery``;
* ``layers_most_affected`` — shared scheme, largest |log T(n_max)/T(n_min)| per layer;
* ``n1_max_scheme_difference`` — n = 1 makes every scheme the same sequence (must be ~0).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from tempo_lens.analysis.stats import MIN_N, estimate, rank_correlation

__all__ = ["position_effects"]


def _label(scheme: str, delta: float) -> str:
    return f"offset:{delta!r}" if scheme == "offset" else scheme


def position_effects(
    table: pd.DataFrame, *, recovery: float = 0.9, min_n: int = MIN_N, seed: int = 0
) -> dict[str, Any]:
    """The effects listed in the module docstring, as JSON-ready dicts and lists.

    Args:
        table: ``prompt_id, n, scheme, delta, layer, attention_set_total`` rows; ``shared``
            must be present (``delta`` of ``distinct`` rows is ignored).
        recovery: Fraction of the shared-to-distinct gap that counts as recovered.
        min_n: Fewest prompts before a direction is claimed.
        seed: Bootstrap seed.
    """
    est = {"min_n": min_n, "seed": seed}
    lm = table.groupby(["prompt_id", "n", "scheme", "delta"], dropna=False)
    lm = lm["attention_set_total"].mean().reset_index()
    lm["label"] = [_label(s, d) for s, d in zip(lm["scheme"], lm["delta"], strict=True)]
    wide = lm.pivot_table(index=["prompt_id", "n"], columns="label", values="attention_set_total")
    n_min, n_max = int(table["n"].min()), int(table["n"].max())
    offsets = sorted(set(table.loc[table["scheme"] == "offset", "delta"]))
    has_distinct = "distinct" in wide.columns
    grid = [("shared", 0.0), *(("offset", d) for d in offsets)]
    grid += [("distinct", 0.0)] if has_distinct else []
    n_effect, scheme_effect, n1_diff = [], [], 0.0
    for scheme, delta in grid:
        t = wide[_label(scheme, delta)].unstack("n")  # prompt x n
        rho = estimate([rank_correlation(t.columns, row)[0] for row in t.to_numpy()], **est)
        ratio = estimate((t[n_max] / t[n_min]).where(t[n_min] > 0), null=1.0, **est)
        n_effect.append(
            {
                "scheme": scheme,
                "delta": delta,
                "n_min": n_min,
                "n_max": n_max,
                "rho_mean": rho.mean,
                "rho_ci": list(rho.ci),
                "ratio_mean": ratio.mean,
                "ratio_ci": list(ratio.ci),
                "verdict": rho.verdict(
                    "set total attention increases with n", "set total attention decreases with n"
                ),
            }
        )
    shared = wide["shared"]
    for scheme, delta in grid[1:]:
        diff = wide[_label(scheme, delta)] - shared
        if n_min == 1:
            n1_diff = max(n1_diff, float(diff.xs(1, level="n").abs().max()))
        for n in sorted(x for x in table["n"].unique() if x > 1):
            r = estimate((wide[_label(scheme, delta)] / shared).xs(n, level="n"), null=1.0, **est)
            gap = (wide["distinct"] - shared).xs(n, level="n") if has_distinct else None
            closed = [] if gap is None else (diff.xs(n, level="n") / gap).where(gap.abs() > 1e-9)
            rec = estimate(closed, **est)
            scheme_effect.append(
                {
                    "n": int(n),
                    "scheme": scheme,
                    "delta": delta,
                    "ratio_mean": r.mean,
                    "ratio_ci": list(r.ci),
                    "recovery_mean": rec.mean,
                    "recovery_ci": list(rec.ci),
                    "verdict": r.verdict(
                        "more set attention than shared", "less set attention than shared"
                    ),
                }
            )
    return {
        "n_effect": n_effect,
        "scheme_effect": scheme_effect,
        "critical_delta": _critical_delta(scheme_effect, n_max, recovery, has_distinct),
        "layers_most_affected": _layers_most_affected(table, n_min, n_max),
        "n1_max_scheme_difference": n1_diff if n_min == 1 else None,
    }


def _critical_delta(
    effect: list[dict[str, Any]], n: int, recovery: float, has_distinct: bool
) -> dict[str, Any]:
    """Smallest offset whose mean recovery (toward distinct) reaches ``recovery`` at ``n``."""
    rows = [r for r in effect if r["n"] == n and r["scheme"] == "offset"]
    if not has_distinct or not rows:
        return {"delta": None, "text": "not computed (needs offsets, distinct control, n > 1)"}
    control = next(r for r in effect if r["n"] == n and r["scheme"] == "distinct")
    if not control["verdict"].endswith("than shared"):
        return {
            "delta": None,
            "text": f"no gap to recover: distinct vs shared at n={n} is "
            f"'{control['verdict']}' (ratio {control['ratio_mean']:.3g})",
        }
    finite = [r for r in rows if math.isfinite(r["recovery_mean"])]
    hit = [r for r in finite if r["recovery_mean"] >= recovery]
    if not hit:
        best = max((r["recovery_mean"] for r in finite), default=math.nan)
        return {
            "delta": None,
            "text": f"no offset recovers {recovery:.0%} at n={n} (best {best:.3g})",
        }
    r = min(hit, key=lambda r: r["delta"])
    lo, hi = r["recovery_ci"]
    return {
        "delta": r["delta"],
        "text": f"delta={r['delta']:g} recovers {r['recovery_mean']:.3g} of the gap at n={n} "
        f"(CI [{lo:.3g}, {hi:.3g}])",
    }


def _layers_most_affected(
    table: pd.DataFrame, n_min: int, n_max: int, k: int = 3
) -> list[dict[str, Any]]:
    """Shared scheme: layers with the largest |log T(n_max)/T(n_min)| (mean over prompts)."""
    if n_min == n_max:
        return []
    s = table[table["scheme"] == "shared"].pivot_table(
        index=["prompt_id", "layer"], columns="n", values="attention_set_total"
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        lr = np.log(s[n_max] / s[n_min]).groupby(level="layer").mean()
    lr = lr[np.isfinite(lr)]
    top = lr.abs().sort_values(ascending=False).index[:k]
    return [{"layer": int(layer), "ratio": float(np.exp(lr[layer]))} for layer in top]
