"""Statistics over a directory of attention-analysis runs (``tempo-lens stats``).

Input: a directory containing analysis runs (any depth), each a ``summary.json`` written by
:func:`tempo_lens.analysis.run.analyze_prompt`. Per run (one prompt) the unit of analysis
is the pair ``(parallel mean, non-parallel mean)`` of per-token received attention (see
:mod:`tempo_lens.analysis.received`), and their ratio. Degenerate (repetitive) runs are
flagged by :func:`~tempo_lens.analysis.stats.repetition_score`; estimates, paired tests
and effect sizes come from :mod:`tempo_lens.analysis.stats`. The verdict claims a
direction only if the Wilcoxon p-value is below ``alpha`` *and* the bootstrap CI of the
ratio excludes 1; fewer than ``min_samples`` usable runs gives "insufficient data".
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tempo_lens.analysis.stats import PairedTests, bootstrap_ci, paired_tests, repetition_score
from tempo_lens.io import jsonable

__all__ = ["REFERENCES", "StatsReport", "analyze_runs", "load_runs"]

REFERENCES = ("all", "generated")


def load_runs(data_dir: str | os.PathLike[str]) -> list[tuple[Path, dict[str, Any]]]:
    """Every ``summary.json`` under ``data_dir`` (sorted by path)."""
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"data directory not found: {root}")
    out = []
    for p in sorted(root.rglob("summary.json")):
        d = json.loads(p.read_text(encoding="utf-8"))
        if isinstance(d, dict) and "received" in d:
            out.append((p.parent, d))
    return out


@dataclass
class StatsReport:
    """The statistics of a directory of runs. ``verdict`` is computed, never assumed."""

    per_run: pd.DataFrame
    reference: str
    n_runs: int
    n_used: int
    n_degenerate: int
    n_missing: int
    ratio_mean: float
    ratio_ci: tuple[float, float]
    set_ratio_mean: float
    set_ratio_ci: tuple[float, float]
    parallel_mean: float
    non_parallel_mean: float
    tests: PairedTests
    sufficient: bool
    verdict: str
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the report."""
        return jsonable(self)


def analyze_runs(
    data_dir: str | os.PathLike[str],
    *,
    reference: str = "all",
    min_samples: int = 5,
    alpha: float = 0.05,
    n_boot: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
    exclude_degenerate: bool = True,
    repetition_n: int = 3,
    repetition_threshold: float = 0.5,
) -> StatsReport:
    """Per-prompt ratios, bootstrap CIs, paired tests, effect sizes and a verdict.

    Args:
        data_dir: Directory searched recursively for ``summary.json``.
        reference: Non-parallel group: ``"all"`` (prompt + generated singletons) or
            ``"generated"`` (generated singletons only).
        min_samples: Fewest usable runs for which a verdict is drawn.
        alpha: Significance level of the Wilcoxon test.
        n_boot: Bootstrap resamples.
        level: Confidence level of the bootstrap intervals.
        seed: Bootstrap seed.
        exclude_degenerate: Leave out runs flagged as repetition loops.
        repetition_n: N-gram size of the repetition filter.
        repetition_threshold: Repetition score above which a run is flagged.
    """
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
    if min_samples < 2:
        raise ValueError(f"min_samples must be >= 2, got {min_samples}")
    runs = load_runs(data_dir)
    key_non = "non_parallel_mean" if reference == "all" else "non_parallel_generated_mean"
    key_ratio = "ratio" if reference == "all" else "ratio_generated"
    recs = []
    for path, d in runs:
        r = d["received"]
        summ = d.get("summary", {})
        clean = d.get("clean_ids") or str(summ.get("clean_text", "")).split()
        rep = repetition_score(list(clean), repetition_n)
        vals = [r.get("parallel_mean"), r.get(key_non), r.get(key_ratio)]
        missing = any(v is None or not math.isfinite(v) for v in vals)
        degenerate = rep > repetition_threshold
        recs.append(
            {
                "run": str(path),
                "prompt": d.get("prompt"),
                "parallel": r.get("parallel_mean"),
                "non_parallel": r.get(key_non),
                "ratio": r.get(key_ratio),
                "set_ratio": r.get("set_ratio"),
                "n_parallel_tokens": r.get("n_parallel"),
                "repetition": rep,
                "degenerate": degenerate,
                "missing": missing,
                "used": not missing and not (degenerate and exclude_degenerate),
            }
        )
    cols = [
        "run",
        "prompt",
        "parallel",
        "non_parallel",
        "ratio",
        "set_ratio",
        "n_parallel_tokens",
        "repetition",
        "degenerate",
        "missing",
        "used",
    ]
    df = pd.DataFrame(recs, columns=cols)
    used = df[df["used"]] if len(df) else df
    par = used["parallel"].to_numpy(dtype=np.float64)
    non = used["non_parallel"].to_numpy(dtype=np.float64)
    ratio = used["ratio"].to_numpy(dtype=np.float64)
    set_ratio = used["set_ratio"].to_numpy(dtype=np.float64)
    set_ratio = set_ratio[np.isfinite(set_ratio)]
    boot: dict[str, Any] = {"n_boot": n_boot, "level": level, "seed": seed}
    tests = paired_tests(par, non)
    n = len(used)
    sufficient = n >= min_samples
    ratio_mean = float(np.mean(ratio)) if n else float("nan")
    ci = bootstrap_ci(ratio, **boot)
    verdict = _verdict(n, min_samples, ratio_mean, ci, tests, alpha, level, reference)
    return StatsReport(
        per_run=df,
        reference=reference,
        n_runs=len(df),
        n_used=n,
        n_degenerate=int(df["degenerate"].sum()) if len(df) else 0,
        n_missing=int(df["missing"].sum()) if len(df) else 0,
        ratio_mean=ratio_mean,
        ratio_ci=ci,
        set_ratio_mean=float(np.mean(set_ratio)) if len(set_ratio) else float("nan"),
        set_ratio_ci=bootstrap_ci(set_ratio, **boot),
        parallel_mean=float(np.mean(par)) if n else float("nan"),
        non_parallel_mean=float(np.mean(non)) if n else float("nan"),
        tests=tests,
        sufficient=sufficient,
        verdict=verdict,
        settings={
            "min_samples": min_samples,
            "alpha": alpha,
            "exclude_degenerate": exclude_degenerate,
            "repetition_n": repetition_n,
            "repetition_threshold": repetition_threshold,
            **boot,
        },
    )


def _verdict(
    n: int,
    min_samples: int,
    ratio: float,
    ci: tuple[float, float],
    t: PairedTests,
    alpha: float,
    level: float,
    reference: str,
) -> str:
    if n < min_samples:
        return f"insufficient data: {n} usable run(s), at least {min_samples} needed; no claim made"
    desc = (
        f"mean ratio {ratio:.3f} ({level:.0%} CI {ci[0]:.3f}-{ci[1]:.3f}), "
        f"Wilcoxon p={t.wilcoxon_p:.3g}, d_z={t.cohens_dz:.2f}, n={n}, reference={reference}"
    )
    significant = math.isfinite(t.wilcoxon_p) and t.wilcoxon_p < alpha
    if significant and ci[1] < 1:
        return f"parallel tokens receive LESS attention than non-parallel tokens: {desc}"
    if significant and ci[0] > 1:
        return f"parallel tokens receive MORE attention than non-parallel tokens: {desc}"
    return f"no significant difference at alpha={alpha}: {desc}"
