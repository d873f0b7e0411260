"""RQ 6.1: which heads matter for parallel processing? Every (layer, head) ablated.

Per prompt TEMPO generates once (no pruning, so the trace replays exactly); the trace is
then **teacher-forced** as a fixed :class:`~tempo_lens.SequenceState` and every head is
ablated in turn — zero or mean ablation of ``hook_z`` (mean over the prompt's own
non-parallel positions) — with the heads of one layer ablated in one batched forward that starts at that layer
from the clean residual stream (:func:`tempo_lens.hooks.interventions.head_ablation_hooks`). Measured per head, separately at
parallel steps (the selected set had > 1 member) and non-parallel steps:

* ``kl_*``: KL(clean || ablated) of the distribution each step was selected from
  (:func:`tempo_lens.hooks.interventions.step_distributions`), nats;
* ``dwidth_*``: change in the width that tau would select from that distribution;
* ``dnll``: change in the NLL of each step's top member (the clean path), nats;
* ``dratio_late``: change in the parallel:non-parallel received-attention ratio over the
  last third of the layers (per-token mean attention from later queries).

Summary: per head, the paired difference ``kl_parallel - kl_nonparallel`` over prompts
(bootstrap CI, Wilcoxon, Benjamini–Hochberg over heads); a head is "critical for parallel
processing" when the BH-adjusted p < 0.05 and the CI lies above 0. Heatmaps (layer x head).

Example::

    python -m tempo_lens.experiments.head_ablation --tiny --quick --output-dir /tmp/ha
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import false_discovery_control

import tempo_lens as tl
from tempo_lens.analysis import estimate, paired_tests
from tempo_lens.analysis.teacher_forced import Replay
from tempo_lens.backends import hook_name
from tempo_lens.display.experiment_figures import layer_head_heatmaps_figure
from tempo_lens.experiments._common import ReplayConfig, fmt_estimate
from tempo_lens.hooks.interventions import head_ablation_hooks
from tempo_lens.io import atomic_write_text
from tempo_lens.runner import ExperimentSpec, Unit, encode
from tempo_lens.runner.cli import run_cli


@dataclass(frozen=True, kw_only=True)
class Config(ReplayConfig):
    """Head-ablation settings (generation settings apply to the replayed trace).

    Attributes:
        modes: Ablations: zero and/or mean (of hook_z).
    """

    modes: tuple[str, ...] = ("zero", "mean")

    def __post_init__(self) -> None:
        super().__post_init__()
        bad = [m for m in self.modes if m not in ("zero", "mean")]
        if bad or not self.modes:
            raise ValueError(f"modes must be zero and/or mean, got {self.modes}")


def run_unit(cfg: Config, model: Any, unit: Unit) -> dict[str, list[dict[str, Any]]]:
    """Replay one prompt's trace with every head ablated (``unit.condition['ablation']``)."""
    trace = tl.generate(model, encode(model, unit.prompt), cfg.tempo_config(prune=None))
    if not trace.steps:  # end-of-sequence first: nothing generated, nothing to ablate
        return {"heads": []}
    r = Replay(model, trace)
    z_names = [hook_name(layer, "z") for layer in range(model.cfg.n_layers)]
    mean = None
    if unit.condition["ablation"] == "mean":
        _, cache = r.run_with_cache(names_filter=lambda n: n in z_names)
        nonpar = [i for i in range(len(r.state)) if not r.state.is_parallel(i)]
        mean = torch.stack([cache[n][0, nonpar].mean(0) for n in z_names])  # layer head d_head
    rows = []
    for la in range(model.cfg.n_layers):  # one forward per layer (max_rows heads), from it on
        for chunk in cfg.row_chunks([(la, h) for h in range(model.cfg.n_heads)]):
            out = r.measure(len(chunk), head_ablation_hooks(chunk, mean=mean), start_layer=la)
            rows += [{"layer": la, "head": h, **m} for (la, h), m in zip(chunk, out, strict=True)]
    return {"heads": rows}


def summarize(cfg: Config, tables: dict[str, pd.DataFrame], out: Path) -> str:
    """Per-head estimates over prompts -> ``critical_heads.csv``, heatmaps, report."""
    df = tables["heads"]
    rows = []
    for (abl, la, h), g in df.groupby(["ablation", "layer", "head"], sort=True):
        g = g.dropna(subset=["kl_parallel", "kl_nonparallel"])
        a, b = g["kl_parallel"].to_numpy(float), g["kl_nonparallel"].to_numpy(float)
        e = estimate(a - b, min_n=cfg.min_prompts, seed=cfg.seed)
        rows.append(
            {
                "ablation": abl,
                "layer": la,
                "head": h,
                "n_prompts": e.n,
                "kl_parallel": float(np.mean(a)) if len(a) else np.nan,
                "kl_nonparallel": float(np.mean(b)) if len(b) else np.nan,
                "kl_difference": e.mean,
                "ci_low": e.ci[0],
                "ci_high": e.ci[1],
                "direction": e.direction,  # "insufficient" below --min-prompts
                "wilcoxon_p": paired_tests(a, b).wilcoxon_p,
                "dwidth_parallel": g["dwidth_parallel"].mean(),
                "dnll": g["dnll"].mean(),
                "dratio_late": g["dratio_late"].mean(),
            }
        )
    res = pd.DataFrame(rows)
    p = res["wilcoxon_p"].to_numpy(float)
    res["p_bh"] = np.nan
    for abl in res["ablation"].unique():
        sel = (res["ablation"] == abl).to_numpy() & np.isfinite(p)
        if sel.any():
            res.loc[sel, "p_bh"] = false_discovery_control(p[sel])
    res["critical"] = (res["p_bh"] < 0.05) & (res["direction"] == "above")
    atomic_write_text(out / "critical_heads.csv", res.to_csv(index=False))
    if not np.isfinite(df["kl_parallel"].to_numpy(float)).any():
        return "no prompt produced a parallel set: nothing to compare at parallel steps"
    layer_head_heatmaps_figure(res, ["kl_parallel", "kl_difference"], out / "head_ablation.png")
    lines = []
    for abl, g in res.groupby("ablation"):
        crit = g[g["critical"]].sort_values("kl_difference", ascending=False)
        top = g.sort_values("kl_parallel", ascending=False).head(3)
        lines.append(
            f"{abl}: {len(crit)} critical heads of {len(g)}"
            + ("; " if len(crit) else "")
            + ", ".join(
                f"L{r.layer}H{r.head} dKL {r.kl_difference:.3g} [{r.ci_low:.3g}, {r.ci_high:.3g}]"
                for r in crit.head(5).itertuples()
            )
        )
        lines.append(
            f"{abl}: largest KL at parallel steps: "
            + ", ".join(f"L{r.layer}H{r.head} {r.kl_parallel:.3g}" for r in top.itertuples())
        )
    all_diff = estimate(res["kl_difference"].to_numpy(float), seed=cfg.seed)
    lines.append(f"mean over heads of kl_parallel - kl_nonparallel: {fmt_estimate(all_diff)}")
    return "\n".join(lines)


SPEC = ExperimentSpec(
    name="head_ablation",
    prompts_resource="suite.csv",  # n >= 48 by default: the packaged suite (issue 22)
    config=Config,
    run_unit=run_unit,
    summarize=summarize,
    conditions=lambda cfg: [{"ablation": m} for m in cfg.modes],
    quick={"max_steps": 4},
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run from the command line (:func:`tempo_lens.runner.run_cli`); 0 on success."""
    return run_cli(SPEC, argv)


if __name__ == "__main__":
    raise SystemExit(main())
