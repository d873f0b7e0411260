"""RQ 5.1 / 5.2: how do the threshold and its schedule trade exploration against quality?

Units: prompt x (greedy baseline + every start threshold ``tau0`` x every schedule kind:
``constant`` keeps tau0; ``linear``, ``exponential``, ``relu``, ``bezier`` go from tau0 to
``final_threshold``, see :class:`tempo_lens.ThresholdSchedule`), optionally with
retroactive pruning. Per run: widths, parallel steps, pruned members, the clean text's NLL
under the plain model (:func:`tempo_lens.analysis.quality.clean_text_nll`), diversity
(:func:`tempo_lens.analysis.quality.trace_diversity`) and wall time (after one warm-up
generation per model). The summary gives per-cell means (``cells.csv``), the trend of
each metric with tau0 for the constant schedule (per-prompt Spearman rho, mean and
bootstrap CI) and each schedule's NLL difference from constant at the same tau0 (paired
over prompts).

Example::

    python -m tempo_lens.experiments.threshold_sweep --output-dir results/threshold_sweep
    python -m tempo_lens.experiments.threshold_sweep --tiny --quick --output-dir /tmp/ts
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

import tempo_lens as tl
from tempo_lens.analysis import estimate, rank_correlation
from tempo_lens.experiments._common import PROMPTS, GenerationConfig, fmt, fmt_ci, run_metrics
from tempo_lens.io import atomic_write_json, atomic_write_text, jsonable
from tempo_lens.runner import ExperimentSpec, Unit, encode
from tempo_lens.runner.cli import run_cli
from tempo_lens.schedules import SCHEDULE_KINDS

TRENDS: tuple[str, ...] = ("mean_width", "parallel_steps", "pruned", "clean_nll")
TRENDS += ("distinct_generated", "wall_seconds")
CELL_METRICS = (*TRENDS[:4], "distinct_2", *TRENDS[4:])  # per-cell means in cells.csv
_WARM: weakref.WeakSet[Any] = weakref.WeakSet()  # models that ran the warm-up generation


@dataclass(frozen=True, kw_only=True)
class Config(GenerationConfig):
    """Threshold sweep settings (``thresholds`` replaces ``selection_threshold``).

    Attributes:
        thresholds: Start thresholds tau0, each in (0, 1].
        schedules: Schedule kinds: constant | linear | exponential | relu | bezier.
        final_threshold: tau at the end of non-constant schedules, in (0, 1].
        relu_activation: relu schedule: progress in [0, 1) where the ramp starts.
        bezier_c1: bezier schedule: first shape control in [0, 1].
        bezier_c2: bezier schedule: second shape control in [0, 1].
        greedy: Also run the greedy baseline (schedule "greedy", threshold empty).
    """

    selection_threshold: float = field(default=0.1, init=False)
    max_steps: int = 12
    prune: str = "relative:0.5"
    thresholds: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3)
    schedules: tuple[str, ...] = SCHEDULE_KINDS
    final_threshold: float = 0.3
    relu_activation: float = 0.5
    bezier_c1: float = 0.0
    bezier_c2: float = 1.0
    greedy: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.thresholds or not self.schedules:
            raise ValueError("thresholds and schedules must not be empty")
        bad = [k for k in self.schedules if k not in SCHEDULE_KINDS]
        if bad:
            raise ValueError(f"unknown schedules {bad}; expected among {SCHEDULE_KINDS}")
        for tau in self.thresholds:
            for kind in self.schedules:
                self.cell_config(tau, kind)  # validates every cell before anything runs

    def cell_config(self, tau0: float, kind: str) -> tl.TempoConfig:
        """The :class:`TempoConfig` of one cell: start threshold ``tau0``, schedule ``kind``."""
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
        return self.tempo_config(selection_threshold=tau0, schedule=schedule)


def conditions(cfg: Config) -> list[dict[str, Any]]:
    """Greedy (if asked), then every threshold (ascending) x schedule."""
    greedy = [{"schedule": "greedy", "threshold": None}] if cfg.greedy else []
    kinds = dict.fromkeys(cfg.schedules)
    return greedy + [
        {"schedule": k, "threshold": t} for t in sorted(set(cfg.thresholds)) for k in kinds
    ]


def run_unit(cfg: Config, model: Any, unit: Unit) -> dict[str, list[dict[str, Any]]]:
    """One generation (greedy or one cell), timed after a per-model warm-up."""
    prompt, kind, tau = (
        encode(model, unit.prompt),
        unit.condition["schedule"],
        unit.condition["threshold"],
    )
    if model not in _WARM:
        tl.generate(model, prompt, cfg.cell_config(cfg.thresholds[0], "constant"), max_steps=1)
        _WARM.add(model)
    t0 = time.perf_counter()
    if kind == "greedy":
        trace = tl.greedy(model, prompt, max_steps=cfg.max_steps)
    else:
        trace = tl.generate(model, prompt, cfg.cell_config(tau, kind))
    seconds = time.perf_counter() - t0
    taus, metrics = [r.threshold for r in trace.steps], run_metrics(model, trace)
    row = {
        "tau_first": taus[0] if taus else math.nan,
        "tau_last": taus[-1] if taus else math.nan,
        **metrics,
        "wall_seconds": seconds,
        "seconds_per_step": seconds / metrics["steps"] if metrics["steps"] else math.nan,
    }
    return {"runs": [row]}


def summarize(cfg: Config, tables: dict[str, pd.DataFrame], out: Path) -> str:
    """``cells.csv`` (means per cell), constant-schedule trends, schedule vs constant NLL."""
    runs = tables["runs"]
    by_cell = runs.groupby(["schedule", "threshold"], dropna=False, sort=False)
    cells = by_cell[list(CELL_METRICS)].mean().reset_index()
    cells["n_prompts"] = by_cell.size().to_numpy()
    atomic_write_text(out / "cells.csv", cells.to_csv(index=False))
    const = runs[runs["schedule"] == "constant"]
    trends, lines = {}, [cells.drop(columns=["n_prompts"]).to_string(index=False, float_format=fmt)]
    for name in TRENDS:
        rhos = [rank_correlation(g["threshold"], g[name])[0] for _, g in const.groupby("prompt_id")]
        e = estimate(rhos, min_n=cfg.min_prompts, seed=cfg.seed)
        verdict = e.verdict(f"{name} increases with tau0", f"{name} decreases with tau0")
        trends[name] = {
            "rho_mean": e.mean,
            "rho_ci": list(e.ci),
            "n_prompts": e.n,
            "verdict": verdict,
        }
        lines.append(
            f"constant schedule, {name} vs tau0: rho={fmt(e.mean)} CI {fmt_ci(e.ci)} -> {verdict}"
        )
    comparisons = []
    base = const.set_index(["prompt_id", "threshold"])["clean_nll"]
    for kind in [k for k in dict.fromkeys(cfg.schedules) if k != "constant" and len(const)]:
        other = runs[runs["schedule"] == kind].set_index(["prompt_id", "threshold"])["clean_nll"]
        for tau in sorted(set(cfg.thresholds)):
            e = estimate(
                (other - base).xs(tau, level="threshold"), min_n=cfg.min_prompts, seed=cfg.seed
            )
            verdict = e.verdict("higher NLL than constant", "lower NLL than constant")
            comparisons.append(
                {
                    "schedule": kind,
                    "threshold": tau,
                    "mean_difference": e.mean,
                    "difference_ci": list(e.ci),
                    "verdict": verdict,
                }
            )
            lines.append(
                f"tau0={tau:g} {kind:>11}: NLL - constant = {fmt(e.mean)} CI {fmt_ci(e.ci)} -> {verdict}"
            )
    greedy = runs[runs["schedule"] == "greedy"]["clean_nll"]
    summary = {
        "n_prompts": int(runs["prompt_id"].nunique()),
        "final_threshold": cfg.final_threshold,
        "prune": cfg.prune,
        "greedy_clean_nll": float(greedy.mean()) if len(greedy) else None,
        "constant_trends": trends,
        "schedule_vs_constant": comparisons,
    }
    atomic_write_json(out / "summary.json", jsonable(summary))
    return "\n".join(lines)


SPEC = ExperimentSpec(
    name="threshold_sweep",
    config=Config,
    conditions=conditions,
    run_unit=run_unit,
    summarize=summarize,
    default_prompts=PROMPTS[:3],
    quick={"max_steps": 4, "thresholds": (0.05, 0.2), "schedules": ("constant", "linear")},
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run from the command line (:func:`tempo_lens.runner.run_cli`); 0 on success."""
    return run_cli(SPEC, argv)


if __name__ == "__main__":
    raise SystemExit(main())
