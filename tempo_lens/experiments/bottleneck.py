"""RQ 10.3: information bottlenecks — do a set's members converge or diverge with depth?

Pre-registered in ``docs/preregistration.md#r6`` (R6). Per prompt TEMPO generates once
(default: tau 0.1, isolated, mixture readout, 16 steps, at most 8 members, no pruning) and
one teacher-forced forward over the trace with the TEMPO hooks attached caches every
layer's ``resid_post`` (:func:`tempo_lens.analysis.bottleneck.set_bottleneck`). For every
multi-member set and layer: **distinguishability** (mean pairwise cosine distance of the
members' ``resid_post`` minus the sequence mean at that layer) and **logit-lens agreement**
(fraction of member pairs whose top-1 token under the final norm + unembedding at that
layer coincide). A set **merges** at the first layer from which the agreement stays 1
through the last layer.

Tables: ``sets_layers`` (prompt x set x layer) and ``per_prompt``: Spearman rho of layer
vs the set-mean distinguishability curve (:func:`tempo_lens.analysis.rank_correlation`),
the fraction of sets merged, the mean merge layer / n_layers over merged sets, n_sets.

Rule (R6): the per-prompt rho averaged over prompts with a seeded bootstrap-t 95% CI
(:func:`tempo_lens.analysis.estimate`): CI below 0 -> members *converge* with depth (a
bottleneck narrows them); above -> *diverge*; else inconclusive (fewer than
``--min-prompts`` prompts: insufficient). Merge fraction and depth: means with CIs,
descriptive. Prompts without a multi-member set give no value and are counted out.

Example::

    python -m tempo_lens.experiments.bottleneck --tiny --quick --output-dir /tmp/r6
    tempo-lens experiment bottleneck --prompts-file tempo_lens/prompts/research_48.csv \
        --output-dir results/bottleneck
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import tempo_lens as tl
from tempo_lens.analysis import estimate, rank_correlation
from tempo_lens.analysis.bottleneck import set_bottleneck
from tempo_lens.backends import backend_of
from tempo_lens.display.experiment_figures import layer_bands_figure
from tempo_lens.experiments._common import UnprunedConfig, fmt_estimate
from tempo_lens.io import atomic_write_json, atomic_write_text
from tempo_lens.runner import ExperimentSpec, Unit, encode
from tempo_lens.runner.cli import run_cli

MEASURES = ("distinguishability", "agreement")
PER_PROMPT = [
    "n_layers",
    "n_sets",
    "steps",
    "rho",
    "rho_p",
    "rho_all",
    "merged_fraction",
    "merge_depth",
    "final_mismatches",
    "stop_reason",
    "bracket_text",
]


@dataclass(frozen=True, kw_only=True)
class Config(UnprunedConfig):
    """Bottleneck settings: the generation settings of the analysed trace.

    ``prune`` must stay ``none`` (:class:`~tempo_lens.experiments._common.UnprunedConfig`):
    the teacher-forced forward reproduces an unpruned generation only.
    """


def check_model(cfg: Config, model: Any) -> None:
    """Refuse a model whose backend cannot apply the logit lens (before anything runs).

    Raises:
        ValueError: the backend has no final norm to apply (its message names it).
    """
    del cfg
    d_model = int(model.cfg.d_model)
    param = next(model.parameters())
    with torch.no_grad():
        backend_of(model).logit_lens(
            torch.zeros(1, d_model, dtype=param.dtype, device=param.device)
        )


def run_unit(cfg: Config, model: Any, unit: Unit) -> dict[str, list[dict[str, Any]]]:
    """One prompt: generate, one cached forward, per-set-and-layer rows and a prompt row."""
    trace = tl.generate(model, encode(model, unit.prompt), cfg.tempo_config(prune=None))
    b = set_bottleneck(model, trace)
    n_l = b.n_layers
    rho = rho_p = rho_all = depth = frac = math.nan
    if len(b.members):
        curve = b.distinguishability.mean(0)  # layer: mean over the prompt's sets
        rho, rho_p = rank_correlation(np.arange(n_l), curve)
        rho_all = rank_correlation(np.arange(n_l), b.distinguishability_all.mean(0))[0]
        frac = float(b.sets["merged"].mean())
        merged = b.sets["merge_layer"].dropna().to_numpy(float)
        depth = float(np.mean(merged / n_l)) if len(merged) else math.nan
    prompt_row = {
        "n_layers": n_l,
        "n_sets": len(b.members),
        "steps": len(trace.steps),
        "rho": rho,
        "rho_p": rho_p,
        "rho_all": rho_all,
        "merged_fraction": frac,
        "merge_depth": depth,
        "final_mismatches": int(b.sets["final_mismatches"].sum()) if len(b.sets) else 0,
        "stop_reason": trace.stop_reason,
        "bracket_text": trace.bracket_text(),
    }
    return {
        "sets_layers": b.sets_layers.to_dict("records"),
        "per_prompt": [prompt_row],
    }


def _layer_curves(cfg: Config, sl: pd.DataFrame) -> pd.DataFrame:
    """Per measure and layer: mean over prompts (each prompt: mean over its sets), CI."""
    rows = []
    if not len(sl):
        return pd.DataFrame(columns=["measure", "layer", "mean", "ci_low", "ci_high", "n_prompts"])
    per_prompt = sl.groupby(["prompt_id", "layer"], sort=True)[list(MEASURES)].mean()
    for m in MEASURES:
        for la, g in per_prompt[m].groupby(level="layer", sort=True):
            e = estimate(g.to_numpy(float), min_n=cfg.min_prompts, seed=cfg.seed)
            rows.append(
                {
                    "measure": m,
                    "layer": int(la),
                    "mean": e.mean,
                    "ci_low": e.ci[0],
                    "ci_high": e.ci[1],
                    "n_prompts": e.n,
                }
            )
    return pd.DataFrame(rows)


def summarize(cfg: Config, tables: dict[str, pd.DataFrame], out: Path) -> str:
    """The R6 rule -> ``summary.json``, ``layers_summary.csv``, ``bottleneck.png``, report."""
    pp = tables.get("per_prompt", pd.DataFrame(columns=["prompt_id", *PER_PROMPT]))
    sl = tables.get("sets_layers", pd.DataFrame(columns=["prompt_id", "step", "layer", *MEASURES]))
    est = {
        k: estimate(pp[k].to_numpy(float), min_n=cfg.min_prompts, seed=cfg.seed)
        for k in ("rho", "rho_all", "merged_fraction", "merge_depth")
        if k in pp
    }
    verdict = est["rho"].verdict("diverge", "converge")
    curves = _layer_curves(cfg, sl)
    atomic_write_text(out / "layers_summary.csv", curves.to_csv(index=False))
    if len(curves):
        layer_bands_figure(curves, out / "bottleneck.png")
    n_prompts = len(pp)
    with_sets = int((pp["n_sets"].to_numpy(float) > 0).sum()) if n_prompts else 0
    mismatches = int(pp["final_mismatches"].sum()) if n_prompts else 0
    summary = {
        "rule": "docs/preregistration.md#r6",
        "n_prompts": n_prompts,
        "n_prompts_with_sets": with_sets,
        "n_sets": int(pp["n_sets"].sum()) if n_prompts else 0,
        "rho": asdict(est["rho"]),
        "verdict": verdict,
        "rho_all": asdict(est["rho_all"]) if "rho_all" in est else None,
        "merged_fraction": asdict(est["merged_fraction"]),
        "merge_depth": asdict(est["merge_depth"]),
        "final_layer_lens_mismatches": mismatches,
    }
    atomic_write_json(out / "summary.json", summary)
    lines = [
        f"prompts: {n_prompts}, with a multi-member set: {with_sets}, sets: {summary['n_sets']}",
        f"rho(layer, set-mean distinguishability): {fmt_estimate(est['rho'])}",
        f"members with depth (R6): {verdict}",
        "rho with every position in the centring mean (the first registered version): "
        + (fmt_estimate(est["rho_all"]) if "rho_all" in est else "not recorded"),
        f"fraction of sets merged by the last layer: {fmt_estimate(est['merged_fraction'])}"
        " (descriptive)",
        f"merge layer / n_layers of merged sets: {fmt_estimate(est['merge_depth'])} (descriptive)",
    ]
    if mismatches:
        lines.append(
            f"WARNING: {mismatches} members' last-layer logit lens differs from the logits"
        )
    return "\n".join(lines)


SPEC = ExperimentSpec(
    name="bottleneck",
    config=Config,
    run_unit=run_unit,
    summarize=summarize,
    tiny_model={"n_layers": 4},  # rho over layers needs at least three
    quick={"max_steps": 6},
    check_model=check_model,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run from the command line (:func:`tempo_lens.runner.run_cli`); 0 on success."""
    return run_cli(SPEC, argv)


if __name__ == "__main__":
    raise SystemExit(main())
