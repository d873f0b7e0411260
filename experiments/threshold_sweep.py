"""RQ 5.1 / 5.2: how do the threshold and its schedule trade exploration against quality?

A grid of generations: every start threshold ``tau0`` in ``thresholds`` x every schedule
kind (``constant``: tau0 throughout; ``linear``, ``exponential``, ``relu``, ``bezier``:
from tau0 to ``final_threshold``; see :class:`tempo_lens.ThresholdSchedule`), on each
prompt, optionally with retroactive pruning, plus a greedy baseline. Per run: widths,
parallel steps, pruned members, the clean text's NLL under the plain model
(:func:`tempo_lens.analysis.quality.clean_text_nll`), diversity
(:func:`tempo_lens.analysis.quality.trace_diversity`) and wall time (after one warm-up
generation). The summary gives per-cell means, the trend of each metric with tau0 for the
constant schedule (per-prompt Spearman rho, mean and bootstrap CI) and each schedule's NLL
difference from constant at the same tau0 (paired over prompts).

Example::

    python experiments/threshold_sweep.py --output-dir results/threshold_sweep
    python experiments/threshold_sweep.py --tiny --thresholds 0.05,0.1 --output-dir /tmp/ts
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

import tempo_lens as tl
from tempo_lens import experiment_cli
from tempo_lens.analysis._util import jsonable
from tempo_lens.analysis.quality import clean_text_nll, trace_diversity
from tempo_lens.analysis.stats import bootstrap_ci, repetition_score
from tempo_lens.experiment_cli import ExperimentSpec, fmt, fmt_ci
from tempo_lens.io import atomic_write_json, atomic_write_text
from tempo_lens.pruning import parse_rule
from tempo_lens.schedules import SCHEDULE_KINDS

DEFAULT_PROMPTS = (
    "The cat sat on the",
    "Once upon a time, there was a",
    "The capital of France is",
)
TINY_PROMPTS = ("3 14 15 9 26", "5 35 8 9 7 9", "2 7 18 28")
TINY_MODEL: dict[str, Any] = {}  # make_tiny_model() keywords for --tiny
TRENDS = (
    "mean_width",
    "parallel_steps",
    "pruned",
    "clean_nll",
    "distinct_generated",
    "wall_seconds",
)


@dataclass(frozen=True, kw_only=True)
class Config:
    """Threshold sweep settings.

    Attributes:
        prompts: Prompts (text; token ids like "3 14 15" for --tiny). Default: a few built-in prompts.
        thresholds: Start thresholds tau0, each in (0, 1].
        schedules: Schedule kinds: constant | linear | exponential | relu | bezier.
        final_threshold: tau at the end of non-constant schedules, in (0, 1].
        relu_activation: relu schedule: progress in [0, 1) where the ramp starts.
        bezier_c1: bezier schedule: first shape control in [0, 1].
        bezier_c2: bezier schedule: second shape control in [0, 1].
        max_steps: Steps per generation (>= 1).
        max_parallel: Cap on members per set (0 = no cap).
        prune: Retroactive pruning: none | relative:R | absolute:A.
        greedy: Also run the greedy baseline (schedule "greedy", threshold empty).
        min_prompts: Fewest prompts before a trend or difference is claimed.
        seed: Bootstrap seed.
        tiny: Use the tiny random test model (prompts are token ids).
        model: Offline model name (ignored with --tiny).
        device: Torch device.
    """

    prompts: tuple[str, ...] = ()
    thresholds: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3)
    schedules: tuple[str, ...] = SCHEDULE_KINDS
    final_threshold: float = 0.3
    relu_activation: float = 0.5
    bezier_c1: float = 0.0
    bezier_c2: float = 1.0
    max_steps: int = 12
    max_parallel: int = 8
    prune: str = "relative:0.5"
    greedy: bool = True
    min_prompts: int = 3
    seed: int = 0
    tiny: bool = False
    model: str = tl.DEFAULT_MODEL
    device: str = "cpu"

    def __post_init__(self) -> None:
        if any(not p.strip() for p in self.prompts):
            raise ValueError("prompts must not be empty")
        if not self.thresholds or not self.schedules:
            raise ValueError("thresholds and schedules must not be empty")
        bad = [k for k in self.schedules if k not in SCHEDULE_KINDS]
        if bad:
            raise ValueError(f"unknown schedules {bad}; expected among {SCHEDULE_KINDS}")
        if self.min_prompts < 1:
            raise ValueError(f"min_prompts must be >= 1, got {self.min_prompts}")
        if self.max_parallel < 0:
            raise ValueError(f"max_parallel must be >= 0, got {self.max_parallel}")
        for tau in self.thresholds:
            for kind in self.schedules:
                self.tempo_config(tau, kind)  # validates every cell before anything runs

    def tempo_config(self, tau0: float, kind: str) -> tl.TempoConfig:
        schedule = None
        if kind != "constant":
            schedule = tl.ThresholdSchedule(
                kind=kind,  # type: ignore[arg-type]
                tau0=tau0,
                tau_final=self.final_threshold,
                activation=self.relu_activation,
                c1=self.bezier_c1,
                c2=self.bezier_c2,
            )
        return tl.TempoConfig(
            selection_threshold=tau0,
            max_steps=self.max_steps,
            max_parallel=self.max_parallel or None,
            schedule=schedule,
            prune=_prune_config(self.prune),
        )


def _prune_config(spec: str) -> tl.PruningConfig | None:
    """``none`` | ``relative:R`` | ``absolute:A`` (the ``tempo-lens --prune`` syntax)."""
    rule = parse_rule(spec)
    return None if rule is None else tl.PruningConfig(rule=rule)


@dataclass
class Results:
    """``runs``: one row per (prompt, schedule, threshold); ``cells``: means per (schedule,
    threshold); ``summary``: trends and schedule comparisons."""

    runs: pd.DataFrame
    cells: pd.DataFrame
    summary: dict[str, Any]

    def write(self, out_dir: str | Path) -> list[Path]:
        out = Path(out_dir)
        paths = [out / "runs.csv", out / "cells.csv", out / "summary.json"]
        atomic_write_text(paths[0], self.runs.to_csv(index=False))
        atomic_write_text(paths[1], self.cells.to_csv(index=False))
        atomic_write_json(paths[2], jsonable(self.summary))  # last: marks a complete run
        return paths

    def report(self) -> str:
        s = self.summary
        lines = [
            self.cells.drop(columns=["n_prompts"]).to_string(
                index=False, float_format=lambda x: f"{x:.3g}"
            )
        ]
        for name, t in s["constant_trends"].items():
            lines.append(
                f"constant schedule, {name} vs tau0: rho={_f(t['rho_mean'])} CI {_ci(t['rho_ci'])} -> {t['verdict']}"
            )
        for c in s["schedule_vs_constant"]:
            lines.append(
                f"tau0={c['threshold']:g} {c['schedule']:>11}: NLL - constant = {_f(c['mean_difference'])} "
                f"CI {_ci(c['difference_ci'])} -> {c['verdict']}"
            )
        return "\n".join(lines)


# ---------------------------------------------------------------------- experiment
def _row(model: Any, trace: tl.Trace, seconds: float) -> dict[str, Any]:
    summ, q, div = trace.summary(), clean_text_nll(model, trace), trace_diversity(trace)
    thresholds = [r.threshold for r in trace.steps]
    return {
        "tau_first": thresholds[0] if thresholds else math.nan,
        "tau_last": thresholds[-1] if thresholds else math.nan,
        "steps": summ["total_steps"],
        "parallel_steps": summ["parallel_steps"],
        "mean_width": summ["average_parallel_width"],
        "max_width": summ["max_parallel_width"],
        "pruned": summ["pruned"],
        "clean_nll": q.mean_nll,
        "clean_perplexity": q.perplexity,
        **div,
        "repetition": repetition_score(trace.clean_ids()),
        "wall_seconds": seconds,
        "seconds_per_step": seconds / summ["total_steps"] if summ["total_steps"] else math.nan,
        "stop_reason": trace.stop_reason,
        "clean_text": trace.clean_text(),
        "bracket_text": trace.bracket_text(),
    }


def run(cfg: Config, model: Any = None) -> Results:
    """Generate every cell of the grid on every prompt, tabulate, summarise."""
    model = model if model is not None else experiment_cli.load(SPEC, cfg)
    prompts = experiment_cli.resolve_prompts(SPEC, cfg, model)
    tl.generate(model, prompts[0][1], cfg.tempo_config(cfg.thresholds[0], "constant"), max_steps=1)
    rows = []
    for p_id, (text, prompt) in enumerate(prompts):
        if cfg.greedy:
            t0 = time.perf_counter()
            trace = tl.greedy(model, prompt, max_steps=cfg.max_steps)
            seconds = time.perf_counter() - t0
            rows.append(
                {
                    "prompt_id": p_id,
                    "prompt": text,
                    "schedule": "greedy",
                    "threshold": math.nan,
                    **_row(model, trace, seconds),
                }
            )
        for tau in sorted(set(cfg.thresholds)):
            for kind in dict.fromkeys(cfg.schedules):
                t0 = time.perf_counter()
                trace = tl.generate(model, prompt, cfg.tempo_config(tau, kind))
                seconds = time.perf_counter() - t0
                rows.append(
                    {
                        "prompt_id": p_id,
                        "prompt": text,
                        "schedule": kind,
                        "threshold": tau,
                        **_row(model, trace, seconds),
                    }
                )
    runs = pd.DataFrame(rows)
    metrics = [
        "mean_width",
        "parallel_steps",
        "pruned",
        "clean_nll",
        "distinct_2",
        "distinct_generated",
        "wall_seconds",
    ]
    cells = (
        runs.groupby(["schedule", "threshold"], dropna=False, sort=False)[metrics]
        .mean()
        .reset_index()
    )
    cells["n_prompts"] = (
        runs.groupby(["schedule", "threshold"], dropna=False, sort=False).size().to_numpy()
    )
    return Results(runs, cells, summarise(runs, cfg))


# ---------------------------------------------------------------------- statistics
def _estimate(values: Sequence[float], cfg: Config) -> tuple[float, list[float], str]:
    """Mean, bootstrap CI, and the sign of the mean if the CI excludes 0."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    mean = float(x.mean()) if len(x) else math.nan
    ci = list(bootstrap_ci(x, seed=cfg.seed))
    if len(x) < cfg.min_prompts:
        return mean, ci, f"insufficient data ({len(x)} < {cfg.min_prompts} prompts)"
    if ci[0] > 0:
        return mean, ci, "positive"
    if ci[1] < 0:
        return mean, ci, "negative"
    return mean, ci, "no clear difference (CI includes 0)"


def summarise(runs: pd.DataFrame, cfg: Config) -> dict[str, Any]:
    const = runs[runs["schedule"] == "constant"]
    trends = {}
    for name in TRENDS:
        rhos = []
        for _, g in const.groupby("prompt_id"):
            if g["threshold"].nunique() > 1 and g[name].nunique() > 1:
                rhos.append(float(sps.spearmanr(g["threshold"], g[name]).statistic))
        mean, ci, sign = _estimate(rhos, cfg)
        verdict = {
            "positive": f"{name} increases with tau0",
            "negative": f"{name} decreases with tau0",
        }.get(sign, sign)
        trends[name] = {"rho_mean": mean, "rho_ci": ci, "n_prompts": len(rhos), "verdict": verdict}
    comparisons = []
    base = const.set_index(["prompt_id", "threshold"])["clean_nll"]
    for kind in [k for k in dict.fromkeys(cfg.schedules) if k != "constant"]:
        other = runs[runs["schedule"] == kind].set_index(["prompt_id", "threshold"])["clean_nll"]
        for tau in sorted(set(cfg.thresholds)):
            if "constant" not in cfg.schedules:
                break
            d = (other - base).xs(tau, level="threshold").dropna()
            mean, ci, sign = _estimate(d.tolist(), cfg)
            verdict = {
                "positive": "higher NLL than constant",
                "negative": "lower NLL than constant",
            }.get(sign, sign)
            comparisons.append(
                {
                    "schedule": kind,
                    "threshold": tau,
                    "mean_difference": mean,
                    "difference_ci": ci,
                    "verdict": verdict,
                }
            )
    greedy = runs[runs["schedule"] == "greedy"]["clean_nll"]
    return {
        "n_prompts": int(runs["prompt_id"].nunique()),
        "final_threshold": cfg.final_threshold,
        "prune": cfg.prune,
        "greedy_clean_nll": float(greedy.mean()) if len(greedy) else None,
        "constant_trends": trends,
        "schedule_vs_constant": comparisons,
    }


SPEC = ExperimentSpec(
    config=Config,
    prog=Path(__file__).name,
    description=(__doc__ or "").splitlines()[0],
    default_prompts=DEFAULT_PROMPTS,
    tiny_prompts=TINY_PROMPTS,
    tiny_model=TINY_MODEL,
)
_f, _ci = fmt, fmt_ci


def main(argv: Sequence[str] | None = None) -> int:
    """Run from the command line; 0 on success, 2 (one line on stderr) on bad values."""
    return experiment_cli.script_main(SPEC, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
