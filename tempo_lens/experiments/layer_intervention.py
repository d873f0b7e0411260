"""RQ 1.3: at which layer does the down-weighting of parallel tokens matter? A beta grid.

Per prompt TEMPO generates once (no pruning) and the trace is replayed teacher-forced
(:class:`tempo_lens.analysis.teacher_forced.Replay`). At one layer at a time, beta is added to the
pre-softmax scores of every parallel member as a key
(:func:`tempo_lens.hooks.interventions.attention_bias`; all heads; one batched forward per
layer holds the whole beta grid). Measured against the clean replay: KL of each step's
selection distribution at parallel / non-parallel steps, the change in the width tau would
select, the change in NLL of the clean path, and the change in the late-layer
parallel:non-parallel received-attention ratio.

Summary: per (layer, beta), the mean over prompts with a bootstrap CI; the layer of
largest effect per beta; figure: KL at parallel steps vs layer, one line per beta.

Example::

    python -m tempo_lens.experiments.layer_intervention --tiny --quick --output-dir /tmp/li
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

import tempo_lens as tl
from tempo_lens.analysis import estimate
from tempo_lens.analysis.teacher_forced import Replay
from tempo_lens.display.experiment_figures import layer_curves_figure
from tempo_lens.experiments._common import ReplayConfig, fmt_estimate
from tempo_lens.hooks.interventions import attention_bias
from tempo_lens.io import atomic_write_text
from tempo_lens.runner import ExperimentSpec, Unit, encode
from tempo_lens.runner.cli import run_cli

METRICS = ("kl_parallel", "kl_nonparallel", "dwidth_parallel", "dnll", "dratio_late")


@dataclass(frozen=True, kw_only=True)
class Config(ReplayConfig):
    """Layer-intervention settings (generation settings apply to the replayed trace).

    Attributes:
        betas: Values added to the parallel members' attention scores (finite, non-zero).
    """

    betas: tuple[float, ...] = (-3.0, -1.0, 1.0, 3.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.betas or any(not math.isfinite(b) or b == 0 for b in self.betas):
            raise ValueError(f"betas must be finite and non-zero, got {self.betas}")


def run_unit(cfg: Config, model: Any, unit: Unit) -> dict[str, list[dict[str, Any]]]:
    """Replay one prompt's trace with each (layer, beta) bias on the parallel members."""
    trace = tl.generate(model, encode(model, unit.prompt), cfg.tempo_config(prune=None))
    if not trace.steps:  # end-of-sequence first: nothing generated, nothing to intervene on
        return {"layers": []}
    r = Replay(model, trace)
    keys = [i for i in range(len(r.state)) if r.state.is_parallel(i)]
    if not keys:
        return {"layers": []}
    rows = []
    for layer in range(model.cfg.n_layers):  # the beta grid as rows, from that layer on
        for betas in cfg.row_chunks(cfg.betas):
            hooks = attention_bias(r.state, keys=keys, beta=list(betas), layers=[layer])
            out = r.measure(len(betas), hooks, start_layer=layer)
            for beta, m in zip(betas, out, strict=True):
                rows.append({"layer": layer, "beta": beta, "n_parallel": len(keys), **m})
    return {"layers": rows}


def summarize(cfg: Config, tables: dict[str, pd.DataFrame], out: Path) -> str:
    """Per (layer, beta) estimates over prompts -> ``layer_effects.csv`` and a figure."""
    df = tables.get("layers", pd.DataFrame(columns=["layer", "beta", *METRICS]))
    rows = []
    for (layer, beta), g in df.groupby(["layer", "beta"], sort=True):
        row: dict[str, Any] = {"layer": layer, "beta": beta}
        for m in METRICS:
            e = estimate(g[m].to_numpy(float), min_n=cfg.min_prompts, seed=cfg.seed)
            row |= {m: e.mean, f"{m}_ci_low": e.ci[0], f"{m}_ci_high": e.ci[1], "n_prompts": e.n}
        rows.append(row)
    res = pd.DataFrame(rows)
    atomic_write_text(out / "layer_effects.csv", res.to_csv(index=False))
    if res.empty:
        return "no prompt produced a parallel set: nothing to intervene on"
    plot = res.rename(columns={"kl_parallel_ci_low": "ci_low", "kl_parallel_ci_high": "ci_high"})
    layer_curves_figure(plot, "layer", "kl_parallel", "beta", out / "layer_intervention.png")
    lines = []
    for beta, g in res.groupby("beta"):
        best = g.loc[g["kl_parallel"].idxmax()]
        e = estimate(
            df[(df["beta"] == beta) & (df["layer"] == best["layer"])]["kl_parallel"],
            min_n=cfg.min_prompts,
            seed=cfg.seed,
        )
        lines.append(
            f"beta={beta:+g}: largest KL at parallel steps at layer "
            f"{int(best['layer'])}: {fmt_estimate(e)}"
        )
    return "\n".join(lines)


SPEC = ExperimentSpec(
    name="layer_intervention",
    prompts_resource="suite.csv",  # n >= 48 by default: the packaged suite (issue 22)
    config=Config,
    run_unit=run_unit,
    summarize=summarize,
    quick={"max_steps": 4, "betas": (-2.0, 2.0)},
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run from the command line (:func:`tempo_lens.runner.run_cli`); 0 on success."""
    return run_cli(SPEC, argv)


if __name__ == "__main__":
    raise SystemExit(main())
