"""RQ 8.2: partial isolation — siblings isolated at early, middle, late or all layers only.

For every prompt TEMPO generates once per layer set, with ``isolate=True`` and
``isolate_layers`` restricted to that set (``none``: siblings visible at every layer — the
visible mode; ``all``: the isolated mode; ``early``/``middle``/``late``: the thirds of the
layers, ``n // 3`` and ``2n // 3`` the cuts). Attention is captured on every layer and head.
Per run: what :mod:`~tempo_lens.experiments.isolation_ab` measures (plain-model NLL of the
clean text, widths, diversity, sibling attention, parallel:non-parallel received-attention
ratios), with the sibling attention split into isolated and non-isolated layers (exactly 0
at the isolated ones: the mechanism check). The summary compares every set with ``all``
pairwise across prompts (mean difference set − all, bootstrap CI, Wilcoxon signed-rank).

Example::

    python -m tempo_lens.experiments.partial_isolation --output-dir results/partial_isolation
    python -m tempo_lens.experiments.partial_isolation --tiny --quick --output-dir /tmp/pi
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import tempo_lens as tl
from tempo_lens.analysis import estimate, paired_tests, received_attention, sibling_attention
from tempo_lens.experiments._common import PROMPTS, GenerationConfig, fmt, fmt_ci, run_metrics
from tempo_lens.experiments.isolation_ab import COMPARED, sibling_shares
from tempo_lens.io import atomic_write_json, jsonable
from tempo_lens.runner import ExperimentSpec, Unit, encode
from tempo_lens.runner.cli import run_cli

LAYER_SETS = ("none", "early", "middle", "late", "all")


@dataclass(frozen=True, kw_only=True)
class Config(GenerationConfig):
    """Partial-isolation settings (the generation settings apply to every layer set)."""


def layer_set(name: str, n_layers: int) -> tuple[int, ...]:
    """The layers of a named set: ``none``, ``all``, or a third (may be empty if n < 3)."""
    a, b = n_layers // 3, 2 * n_layers // 3
    bounds = {"none": (0, 0), "early": (0, a), "middle": (a, b), "late": (b, n_layers)}
    return tuple(range(*bounds.get(name, (0, n_layers))))


def _span(layers: str) -> str:
    """``"3,4,5"`` -> ``"3-5"`` (a set is a contiguous range); ``""`` stays ``""``."""
    parts = [p for p in layers.split(",") if p and p != "nan"]
    return f"{parts[0]}-{parts[-1]}" if len(parts) > 1 else "".join(parts)


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else math.nan


def run_unit(cfg: Config, model: Any, unit: Unit) -> dict[str, list[dict[str, Any]]]:
    """Generate one prompt with one layer set isolated, capturing attention; measure."""
    layers = layer_set(unit.condition["layers"], model.cfg.n_layers)
    cap = tl.AttentionCapture()
    tempo = cfg.tempo_config(isolate=True, isolate_layers=layers)
    trace = tl.generate(model, encode(model, unit.prompt), tempo, observers=[cap])
    data = cap.result(trace)
    rec, mats = received_attention(data), sibling_attention(data)
    shares = [sibling_shares(m.per_head) for m in mats]
    per_layer = np.concatenate(shares, -1) if shares else np.zeros((len(data.layers), 0))
    iso = np.array([layer in layers for layer in data.layers], dtype=bool)
    pairs = [m.per_head[..., ~np.eye(len(m.indices), dtype=bool)] for m in mats]
    run = {
        "isolated_layers": ",".join(map(str, layers)),
        "n_isolated": len(layers),
        **run_metrics(model, trace),
        "sibling_attention": _mean(per_layer),
        "sibling_attention_isolated": _mean(per_layer[iso]),
        "sibling_attention_visible": _mean(per_layer[~iso]),
        "max_sibling_attention_isolated": max(
            (float(p[iso].max()) for p in pairs if iso.any()), default=math.nan
        ),
        "ratio": rec.ratio,
        "ratio_generated": rec.ratio_generated,
        "set_ratio": rec.set_ratio,
    }
    rows = [
        {
            "layer": layer,
            "isolated": bool(iso[i]),
            "n_members": int(per_layer.shape[-1]),
            "sibling_attention": _mean(per_layer[i]),
        }
        for i, layer in enumerate(data.layers)
    ]
    return {"runs": [run], "sibling_layers": rows}


def summarize(cfg: Config, tables: dict[str, pd.DataFrame], out: Path) -> str:
    """Each layer set vs ``all`` (isolated), paired across prompts -> ``summary.json``."""
    runs = tables["runs"]
    ref = runs[runs["layers"] == "all"].set_index("prompt_id")
    leak = runs["max_sibling_attention_isolated"].max()
    sets, lines = {}, []
    for name in [s for s in LAYER_SETS if s in set(runs["layers"])]:
        cur = runs[runs["layers"] == name].set_index("prompt_id")
        common = cur.index.intersection(ref.index)
        row: dict[str, Any] = {
            "n": int(len(cur)),
            "isolated_layers": cur["isolated_layers"].iloc[0],
        }
        for col in (*COMPARED, "sibling_attention"):
            row[f"{col}_mean"] = float(cur[col].mean())
        cells = []
        for col in COMPARED if name != "all" else ():
            ok = cur.loc[common, col].notna() & ref.loc[common, col].notna()
            a, b = (
                cur.loc[common, col][ok].to_numpy(float),
                ref.loc[common, col][ok].to_numpy(float),
            )
            e, t = estimate(a - b, min_n=cfg.min_prompts, seed=cfg.seed), paired_tests(a, b)
            row[f"{col}_vs_all"] = {
                "mean_difference": e.mean,
                "ci": list(e.ci),
                "wilcoxon_p": t.wilcoxon_p,
                "verdict": e.verdict("higher than all", "lower than all"),
            }
            cells.append(f"{col} {fmt(e.mean)} {fmt_ci(e.ci)}")
        sets[name] = row
        span = _span(str(row["isolated_layers"]))
        lines.append(f"{name:>6} [{span}]: " + ("; ".join(cells) or "reference"))
    summary = {
        "n_prompts": int(runs["prompt_id"].nunique()),
        "config": cfg.tempo_config().to_dict(),
        "max_sibling_attention_isolated_layers": leak,
        "isolation_consistent": None if pd.isna(leak) else bool(leak == 0.0),
        "layer_sets": sets,
    }
    atomic_write_json(out / "summary.json", jsonable(summary))
    head = (
        f"prompts={summary['n_prompts']}; sibling attention at isolated layers "
        f"(max) = {fmt(leak)}: exact {summary['isolation_consistent']}; set - all:"
    )
    return "\n".join([head, *lines])


SPEC = ExperimentSpec(
    name="partial_isolation",
    prompts_resource="suite.csv",  # n >= 48 by default: the packaged suite (issue 22)
    description=(__doc__ or "").splitlines()[0],
    config=Config,
    conditions=lambda cfg: [{"layers": name} for name in LAYER_SETS],
    run_unit=run_unit,
    summarize=summarize,
    default_prompts=PROMPTS,
    quick={"max_steps": 4},
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run from the command line (:func:`tempo_lens.runner.run_cli`); 0 on success."""
    return run_cli(SPEC, argv)


if __name__ == "__main__":
    raise SystemExit(main())
