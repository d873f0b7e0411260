"""The summary of ``compare_decoders``: per-method estimates, paired comparisons, figures.

Every number is a mean over prompts with a seeded bootstrap CI, and every comparison a
paired test across prompts (:func:`tempo_lens.analysis.stats.estimate`,
:func:`~tempo_lens.analysis.stats.paired_tests`); nothing else computes statistics here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tempo_lens.analysis.stats import estimate, paired_tests
from tempo_lens.display.decoder_figures import branching_figure, budget_quality_figure
from tempo_lens.experiments._common import fmt, fmt_ci
from tempo_lens.io import atomic_write_json, atomic_write_text, jsonable

__all__ = ["summarize"]

METRICS = (
    "nll",
    "cos_distance",
    "alternatives_per_step",
    "distinct_alternatives_per_step",
    "distinct_2",
    "pooled_distinct_2",
    "forwards",
    "tokens_forwarded",
    "peak_kv_bytes",
    "seconds_per_token",
    "seconds_per_alternative",
)


def _est(values: Any, cfg: Any, null: float = 0.0) -> dict[str, Any]:
    e = estimate(np.asarray(values, dtype=float), null=null, min_n=cfg.min_prompts, seed=cfg.seed)
    return {"mean": e.mean, "ci": list(e.ci), "n": e.n, "direction": e.direction}


def _paired(a: pd.Series, b: pd.Series, cfg: Any) -> dict[str, Any]:
    """``a - b`` over the prompts both have (estimate + Wilcoxon)."""
    both = pd.concat([a.rename("a"), b.rename("b")], axis=1).dropna()
    out = _est(both["a"] - both["b"], cfg)
    a, b = both["a"].to_numpy(float), both["b"].to_numpy(float)
    out["wilcoxon_p"] = paired_tests(a, b).wilcoxon_p if len(both) else math.nan
    return out


def _per_prompt(df: pd.DataFrame, method: str, col: str) -> pd.Series:
    sub = df[df["method"] == method]
    return sub.groupby("prompt_id")[col].apply(lambda x: pd.to_numeric(x, errors="coerce").mean())


def _line(label: str, e: dict[str, Any]) -> str:
    p = f" p={fmt(e['wilcoxon_p'])}" if "wilcoxon_p" in e else ""
    return f"{label}: {fmt(e['mean'])} {fmt_ci(e['ci'])} (n={e['n']}, {e['direction']}{p})"


def summarize(cfg: Any, tables: dict[str, pd.DataFrame], out: Path) -> str:
    """Write ``summary.json``, ``methods.csv``, ``trees.png``, ``compute.png``; report text."""
    runs = tables["runs"]
    methods = list(dict.fromkeys(runs["method"]))
    family = dict(zip(runs["method"], runs["family"], strict=True))
    table: list[dict[str, Any]] = []
    per_method: dict[str, dict[str, Any]] = {}
    for m in methods:
        row: dict[str, Any] = {"method": m, "family": family[m]}
        per_method[m] = {}
        for col in METRICS:
            e = _est(_per_prompt(runs, m, col), cfg)
            per_method[m][col] = e
            row |= {col: e["mean"], f"{col}_lo": e["ci"][0], f"{col}_hi": e["ci"][1]}
        table.append(row)
    mtab = pd.DataFrame(table)
    atomic_write_text(out / "methods.csv", mtab.to_csv(index=False))
    budget_quality_figure(mtab, path=out / "compute.png")
    lines = [f"prompts={runs['prompt_id'].nunique()} methods={len(methods)}"]
    lines.append(
        f"{'method':<34} {'NLL':>22} {'cos dist':>8} {'alt/step':>8} {'tok fwd':>8} "
        f"{'KV MB':>7} {'ms/tok':>8}"
    )
    for r in table:
        lines.append(
            f"{r['method']:<34} {fmt(r['nll']):>6} {fmt_ci([r['nll_lo'], r['nll_hi']]):>15} "
            f"{fmt(r['cos_distance']):>8} {fmt(r['alternatives_per_step']):>8} "
            f"{fmt(r['tokens_forwarded']):>8} {fmt(r['peak_kv_bytes'] / 1e6):>7} "
            f"{fmt(1e3 * r['seconds_per_token']):>8}"
        )
    greedy_nll = _per_prompt(runs, "greedy", "nll")
    vs_greedy = {m: _paired(_per_prompt(runs, m, "nll"), greedy_nll, cfg) for m in methods}
    lines.append("NLL minus greedy NLL (paired over prompts):")
    lines += [f"  {_line(m, vs_greedy[m])}" for m in methods if m != "greedy"]

    tempo = [m for m in methods if family[m] == "tempo"]
    beams = [m for m in methods if family[m] == "beam"]
    matched = {}
    for m in tempo:
        cost = per_method[m]["tokens_forwarded"]["mean"]
        b = min(beams, key=lambda x: abs(per_method[x]["tokens_forwarded"]["mean"] - cost))
        matched[m] = {
            "beam": b,
            "tokens_forwarded_ratio": cost / per_method[b]["tokens_forwarded"]["mean"],
            **{
                f"{col}_minus_beam": _paired(
                    _per_prompt(runs, m, col), _per_prompt(runs, b, col), cfg
                )
                for col in ("nll", "cos_distance", "alternatives_per_step")
            },
        }
    lines.append("Matched budget (beam with the nearest mean tokens forwarded), TEMPO - beam:")
    for m, d in matched.items():
        lines.append(f"  {m} vs {d['beam']} (tokens ratio {fmt(d['tokens_forwarded_ratio'])})")
        lines.append(f"    {_line('NLL', d['nll_minus_beam'])}")
        lines.append(f"    {_line('cos distance', d['cos_distance_minus_beam'])}")

    samplers = [m for m in methods if family[m] == "sampling"]
    vs_sampling = {
        m: {
            smp: {
                col: _paired(_per_prompt(runs, m, col), _per_prompt(runs, smp, col), cfg)
                for col in ("cos_distance", "nll")
            }
            for smp in samplers
        }
        for m in tempo
    }
    if samplers:
        lines.append("TEMPO - sampling (paired over prompts):")
    for m, d in vs_sampling.items():
        for smp, e in d.items():
            lines.append(f"  {m} vs {smp}")
            lines.append(f"    {_line('cos distance', e['cos_distance'])}")
            lines.append(f"    {_line('NLL', e['nll'])}")

    sets, cov, steps = tables.get("sets"), tables.get("coverage"), tables["steps"]
    correction: dict[str, Any] = {}
    coverage: dict[str, Any] = {}
    trees: dict[str, dict[str, Any]] = {}
    entropy: dict[str, Any] = {}
    widths, depths = {}, {}
    for m in tempo:
        s = sets[sets["method"] == m] if sets is not None and len(sets) else pd.DataFrame()
        if len(s):
            n_followed = s["followed"].fillna("").astype(str).str.split().str.len()
            follows = pd.to_numeric(s["readout_follows_best"].map(_num))
            s = s.assign(
                excess=s["kept_is_best"].astype(float) - s["chance"],
                follow_excess=follows - n_followed / s["width"],
            )
        correction[m] = {
            "sets": int(len(s)),
            "kept_is_best": _est(_pp(s, "kept_is_best"), cfg),
            "kept_minus_chance": _est(_pp(s, "excess"), cfg),
            "readout_follows_best": _est(_pp(s, "readout_follows_best"), cfg),
            "follows_minus_chance": _est(_pp(s, "follow_excess"), cfg),
            "pruned_worse": _est(_pp(s, "pruned_worse"), cfg, null=0.5),
        }
        ds = [None if pd.isna(d) else int(d) for d in s["convergence_depth"]] if len(s) else []
        depths[m] = ds
        trees[m] = {
            "converged_share": _est(_pp(s, "converged"), cfg),
            "depth_if_converged": _est(_pp(s, "convergence_depth"), cfg),
            "mean_width": per_method[m]["alternatives_per_step"],
        }
        st = steps[steps["method"] == m]
        widths[m] = [
            g.sort_values("step")["alternatives"].tolist() for _, g in st.groupby("prompt_id")
        ]
        c = cov[cov["method"] == m] if cov is not None and len(cov) else pd.DataFrame()
        coverage[m] = {
            b: _est(c[c["beam"] == b].groupby("prompt_id")["coverage"].mean(), cfg) for b in beams
        } if len(c) else {}  # fmt: skip
        entropy[m] = {b: _entropy_diff(steps, m, b, cfg) for b in beams}
    if tempo:
        branching_figure(widths, depths, horizon=cfg.horizon, path=out / "trees.png")
    lines.append("Error correction (replayed member continuations, per prompt means):")
    for m, d in correction.items():
        lines.append(f"  {m}: sets={d['sets']}")
        keys = ("kept_is_best", "kept_minus_chance", "readout_follows_best", "follows_minus_chance")
        for k in (*keys, "pruned_worse"):
            lines.append(f"    {_line(k, d[k])}")
    lines.append("Trees and coverage of beam hypotheses' first divergent token:")
    for m in tempo:
        lines.append(
            f"  {m}: {_line('converged share', trees[m]['converged_share'])}; "
            f"{_line('depth', trees[m]['depth_if_converged'])}"
        )
        lines += [f"    {_line(f'coverage {b}', e)}" for b, e in coverage[m].items()]
        lines += [f"    {_line(f'entropy - {b}', e)}" for b, e in entropy[m].items()]

    budget_ok = runs["budget_matches_count"].dropna()
    hf = _hf_checks(runs, cfg)
    lines.append(
        f"budget rule == forward counter: {int(budget_ok.astype(bool).sum())}/{len(budget_ok)} "
        f"runs; PLD output == HF greedy: {hf['pld_equals_hf_greedy']}; HF greedy == greedy: "
        f"{hf['hf_greedy_equals_greedy']}; {_line('PLD speed-up (HF greedy s / PLD s)', hf['pld_speedup'])}"
    )
    summary = {
        "n_prompts": int(runs["prompt_id"].nunique()),
        "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "methods": per_method,
        "nll_minus_greedy": vs_greedy,
        "matched_budget": matched,
        "tempo_minus_sampling": vs_sampling,
        "error_correction": correction,
        "trees": trees,
        "coverage": coverage,
        "entropy_minus_beam": entropy,
        "budget_rule_matches_counter": [int(budget_ok.astype(bool).sum()), int(len(budget_ok))],
        "hf": hf,
    }
    atomic_write_json(out / "summary.json", jsonable(summary))
    return "\n".join(lines)


def _pp(s: pd.DataFrame, col: str) -> pd.Series:
    """Per-prompt mean of ``col`` (non-numeric / missing values dropped)."""
    if not len(s):
        return pd.Series(dtype=float)
    vals = pd.to_numeric(s[col].map(_num))
    return vals.groupby(s["prompt_id"]).mean()


def _num(v: Any) -> float:
    """A table cell as a float (None / empty / NaN -> NaN; booleans -> 0/1)."""
    if v is None or (isinstance(v, str) and not v.strip()):
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _entropy_diff(steps: pd.DataFrame, m: str, b: str, cfg: Any) -> dict[str, Any]:
    """Per prompt: mean over the steps both have of TEMPO's minus beam's query entropy."""
    a = steps[steps["method"] == m].set_index(["prompt_id", "step"])["entropy"]
    c = steps[steps["method"] == b].set_index(["prompt_id", "step"])["entropy"]
    both = pd.concat([a.rename("a"), c.rename("b")], axis=1).dropna()
    if not len(both):
        return _est([], cfg)
    per = both.groupby(level=0).mean()
    return _paired(per["a"], per["b"], cfg)


def _hf_checks(runs: pd.DataFrame, cfg: Any) -> dict[str, Any]:
    ids = {m: runs[runs["method"] == m].set_index("prompt_id")["output_ids"] for m in
           ("greedy", "hf_greedy", "pld")}  # fmt: skip
    secs = {m: runs[runs["method"] == m].set_index("prompt_id")["seconds"] for m in ids}
    same = (ids["pld"] == ids["hf_greedy"].reindex(ids["pld"].index)).sum()
    same_g = (ids["hf_greedy"] == ids["greedy"].reindex(ids["hf_greedy"].index)).sum()
    return {
        "pld_equals_hf_greedy": f"{int(same)}/{len(ids['pld'])}",
        "hf_greedy_equals_greedy": f"{int(same_g)}/{len(ids['hf_greedy'])}",
        "pld_speedup": _est(secs["hf_greedy"] / secs["pld"], cfg, null=1.0),
    }
