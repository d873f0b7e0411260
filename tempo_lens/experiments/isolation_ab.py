"""RQ 2.1: isolated vs visible siblings — attention, quality and widths, A/B on the same prompts.

For every prompt TEMPO generates twice with identical settings except ``isolate``
(members of a set cannot / can attend to their earlier siblings), capturing attention.
Per run: sibling attention (the share of a member's attention that goes to its earlier
siblings; exactly 0 when isolated), parallel:non-parallel received-attention ratios
(:func:`tempo_lens.analysis.received_attention`), plain-model NLL of the clean text,
widths and diversity. The summary compares the modes pairwise across prompts (mean
difference isolated - visible, bootstrap CI, Wilcoxon signed-rank).

Example::

    python -m tempo_lens.experiments.isolation_ab --output-dir results/isolation_ab
    python -m tempo_lens.experiments.isolation_ab --tiny --quick --output-dir /tmp/iso
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tempo_lens.analysis import estimate, paired_tests, received_attention, sibling_attention
from tempo_lens.experiments._common import (
    PROMPTS,
    GenerationConfig,
    fmt,
    fmt_ci,
    generate_units,
    run_metrics,
)
from tempo_lens.hooks.capture import AttentionData
from tempo_lens.io import atomic_write_json, jsonable
from tempo_lens.runner import ExperimentSpec, Unit
from tempo_lens.runner.cli import run_cli
from tempo_lens.trace import Trace

COMPARED = ("clean_nll", "ratio", "ratio_generated", "set_ratio", "mean_width", "distinct_2")


@dataclass(frozen=True, kw_only=True)
class Config(GenerationConfig):
    """Isolation A/B settings (the generation settings apply to both modes)."""


def sibling_shares(per_head: np.ndarray) -> np.ndarray:
    """``[layer, head, member, member]`` -> ``[layer, member - 1]`` sibling attention.

    The attention member ``a >= 1`` pays to its earlier siblings (summed over them), mean
    over heads.
    """
    m = per_head.mean(axis=1)
    return np.stack([m[:, a, :a].sum(-1) for a in range(1, m.shape[-1])], axis=-1)


def run_batch(cfg: Config, model: Any, units: list[Unit]) -> list[dict[str, list[dict[str, Any]]]]:
    """Generate the units' prompts (batched per mode) with attention capture; measure each."""
    runs = generate_units(
        model,
        units,
        lambda u: cfg.tempo_config(isolate=u.condition["mode"] == "isolated"),
        capture=True,
    )
    return [_measure(model, trace, data) for trace, data in runs]


def run_unit(cfg: Config, model: Any, unit: Unit) -> dict[str, list[dict[str, Any]]]:
    """Generate one prompt in one mode with attention capture; measure."""
    return run_batch(cfg, model, [unit])[0]


def _measure(model: Any, trace: Trace, data: AttentionData) -> dict[str, list[dict[str, Any]]]:
    rec, mats = received_attention(data), sibling_attention(data)
    shares = [sibling_shares(m.per_head) for m in mats]
    off = [m.per_head[..., ~np.eye(len(m.indices), dtype=bool)] for m in mats]
    per_layer = np.concatenate(shares, -1) if shares else np.zeros((len(data.layers), 0))
    run = {
        **run_metrics(model, trace),
        "sibling_attention": float(per_layer.mean()) if per_layer.size else math.nan,
        "max_sibling_attention": max((float(x.max()) for x in off), default=math.nan),
        "ratio": rec.ratio,
        "ratio_generated": rec.ratio_generated,
        "set_ratio": rec.set_ratio,
    }
    layers = [
        {
            "layer": layer,
            "n_members": int(per_layer.shape[-1]),
            "sibling_attention": float(per_layer[i].mean()) if per_layer.size else math.nan,
        }
        for i, layer in enumerate(data.layers)
    ]
    return {"runs": [run], "sibling_layers": layers}


def summarize(cfg: Config, tables: dict[str, pd.DataFrame], out: Path) -> str:
    """Paired isolated-vs-visible comparisons across prompts -> ``summary.json``."""
    runs = tables["runs"]
    iso = runs[runs["mode"] == "isolated"].set_index("prompt_id")
    vis = runs[runs["mode"] == "visible"].set_index("prompt_id")
    comparisons, lines = {}, []
    for name in COMPARED:
        both = iso[name].notna() & vis.reindex(iso.index)[name].notna()
        a = iso.loc[both, name].to_numpy(float)
        b = vis.loc[both[both].index, name].to_numpy(float)
        t = paired_tests(a, b)
        e = estimate(a - b, min_n=cfg.min_prompts, seed=cfg.seed)
        verdict = e.verdict("isolated higher", "isolated lower")
        if e.direction in ("above", "below") and not t.wilcoxon_p < 0.05:
            verdict = "no significant difference"
        comparisons[name] = {
            "n": e.n,
            "isolated_mean": float(np.mean(a)) if len(a) else math.nan,
            "visible_mean": float(np.mean(b)) if len(b) else math.nan,
            "mean_difference": e.mean,
            "difference_ci": list(e.ci),
            "wilcoxon_p": t.wilcoxon_p,
            "t_p": t.t_p,
            "cohens_dz": t.cohens_dz,
            "verdict": verdict,
        }
        lines.append(
            f"{name:>16}: isolated - visible {fmt(e.mean)} CI {fmt_ci(e.ci)} "
            f"Wilcoxon p={fmt(t.wilcoxon_p)} -> {verdict}"
        )
    iso_max = iso["max_sibling_attention"].max()
    vsib = estimate(vis["sibling_attention"].to_numpy(float), seed=cfg.seed)
    same = (iso["clean_ids"] == vis.reindex(iso.index)["clean_ids"]).sum()
    summary = {
        "n_prompts": int(len(iso)),
        "config": cfg.tempo_config().to_dict(),
        "isolated_max_sibling_attention": iso_max,
        "isolation_consistent": None if pd.isna(iso_max) else bool(iso_max == 0.0),
        "visible_sibling_attention": {"mean": vsib.mean, "ci": list(vsib.ci), "n": vsib.n},
        "identical_clean_text": int(same),
        "comparisons": comparisons,
    }
    atomic_write_json(out / "summary.json", jsonable(summary))
    head = (
        f"prompts={len(iso)} isolation exact (max sibling attention isolated = "
        f"{fmt(iso_max)}): {summary['isolation_consistent']}; visible sibling attention "
        f"{fmt(vsib.mean)} CI {fmt_ci(vsib.ci)}; identical clean text {same}/{len(iso)}"
    )
    return "\n".join([head, *lines])


SPEC = ExperimentSpec(
    name="isolation_ab",
    config=Config,
    conditions=lambda cfg: [{"mode": "isolated"}, {"mode": "visible"}],
    run_unit=run_unit,
    run_batch=run_batch,
    batch_size=8,
    summarize=summarize,
    default_prompts=PROMPTS,
    quick={"max_steps": 4},
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run from the command line (:func:`tempo_lens.runner.run_cli`); 0 on success."""
    return run_cli(SPEC, argv)


if __name__ == "__main__":
    raise SystemExit(main())
