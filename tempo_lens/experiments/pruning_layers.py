"""RQ 3.1-3.3: which layers' attention should drive retroactive pruning, and how far ahead?

Units: prompt x lookahead x layer group (``all`` and the ``early``/``middle``/``late``
thirds) x pruning mode (``soft``; ``--modes soft,hard`` adds hard pruning, in which the
tokens appended after a pruned one are recomputed without it). Each unit generates with
TEMPO, retroactive pruning over that group's layers and attention capture. Three tables:

* ``runs`` — pruning rates per run (decisions taken, members pruned), widths, clean-text
  NLL under the plain model;
* ``agreement`` — counterfactual decisions: on the trajectory of each ``all`` run, every
  judged set is re-judged with each layer group's attention
  (:func:`tempo_lens.analysis.rejudge`: same queries, same rule, the generation loop's own
  scoring), so groups are compared on identical evidence. Re-judging with ``all`` must
  reproduce the recorded decisions (``reproduced`` in the summary);
* ``survival`` — one row per member of a parallel set: selection probability, rank,
  attention received from later steps, last pruning score, pruned
  (:func:`tempo_lens.analysis.pruning_analysis`).

Example::

    python -m tempo_lens.experiments.pruning_layers --lookaheads 1,2,3 \
        --layer-groups all,early,middle,late --output-dir results/pruning_layers
    python -m tempo_lens.experiments.pruning_layers --tiny --quick --output-dir /tmp/pl
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from tempo_lens.analysis import (
    auc,
    cohens_kappa,
    estimate,
    pruning_analysis,
    rank_correlation,
    received_attention,
    rejudge,
)
from tempo_lens.analysis.quality import clean_text_nll
from tempo_lens.experiments._common import GenerationConfig, fmt, fmt_ci, generate_units
from tempo_lens.hooks.capture import AttentionData
from tempo_lens.io import atomic_write_json, jsonable
from tempo_lens.pruning import LAYER_GROUPS, Aggregation, PruningConfig, parse_rule
from tempo_lens.runner import ExperimentSpec, Unit
from tempo_lens.runner.cli import run_cli
from tempo_lens.trace import Trace


@dataclass(frozen=True, kw_only=True)
class Config(GenerationConfig):
    """Pruning-layer settings (``prune`` is the rule every group applies).

    Attributes:
        prune: Pruning rule applied by every layer group: relative:R | absolute:A.
        layer_groups: Layer groups voting on pruning: all | early | middle | late (all is always run).
        lookaheads: Steps to wait before a set is judged, each >= 1.
        head_agg: Aggregation of attention over (layer, head) pairs: mean | max | sum.
        modes: Pruning modes to run: soft | hard (hard recomputes the tokens appended after
            a pruned token without it; summary: hard - soft per lookahead and group).
    """

    max_steps: int = 12
    prune: str = "relative:0.5"
    layer_groups: tuple[str, ...] = ("all", "early", "middle", "late")
    lookaheads: tuple[int, ...] = (1, 2, 3)
    head_agg: Aggregation = "mean"
    modes: tuple[str, ...] = ("soft",)

    def __post_init__(self) -> None:
        if not self.modes or not set(self.modes) <= {"soft", "hard"}:
            raise ValueError(f"modes must be among soft, hard; got {self.modes}")
        bad = [g for g in self.layer_groups if g not in LAYER_GROUPS]
        if bad or not self.layer_groups:
            raise ValueError(f"layer_groups must be among {LAYER_GROUPS}, got {self.layer_groups}")
        if not self.lookaheads or min(self.lookaheads) < 1:
            raise ValueError(f"lookaheads must be ints >= 1, got {self.lookaheads}")
        super().__post_init__()
        self.pruning(1, "all")  # validates the rule and head_agg

    @property
    def groups(self) -> list[str]:
        """``all`` first, then the other groups once each."""
        return ["all", *[g for g in dict.fromkeys(self.layer_groups) if g != "all"]]

    def pruning(
        self, lookahead: int, layers: str, mode: Literal["soft", "hard"] = "soft"
    ) -> PruningConfig:
        """The pruning settings of one (lookahead, layer group).

        Raises:
            ValueError: ``prune`` is ``none``.
        """
        rule = parse_rule(self.prune)
        if rule is None:
            raise ValueError(f"prune must be relative:R or absolute:A, got {self.prune!r}")
        return PruningConfig(
            rule=rule, lookahead=lookahead, layers=layers, head_agg=self.head_agg, mode=mode
        )


def run_batch(cfg: Config, model: Any, units: list[Unit]) -> list[dict[str, list[dict[str, Any]]]]:
    """Generate the units (batched per condition) with attention capture; measure each.

    ``wall_seconds`` is the batched generation's time divided by its rows.
    """
    t0 = time.perf_counter()
    runs = generate_units(
        model,
        units,
        lambda u: cfg.tempo_config(
            prune=cfg.pruning(u.condition["lookahead"], u.condition["layers"], _mode(u))
        ),
        capture=True,
    )
    seconds = (time.perf_counter() - t0) / len(units)
    return [_measure(cfg, model, u, t, d, seconds) for u, (t, d) in zip(units, runs, strict=True)]


def run_unit(cfg: Config, model: Any, unit: Unit) -> dict[str, list[dict[str, Any]]]:
    """Generate one prompt with one (lookahead, group); the ``all`` group also re-judges."""
    return run_batch(cfg, model, [unit])[0]


def _mode(unit: Unit) -> Literal["soft", "hard"]:
    return "hard" if unit.condition["mode"] == "hard" else "soft"


def _measure(
    cfg: Config, model: Any, unit: Unit, trace: Trace, data: AttentionData, seconds: float
) -> dict[str, list[dict[str, Any]]]:
    la, group, n_layers = unit.condition["lookahead"], unit.condition["layers"], model.cfg.n_layers
    mode = _mode(unit)
    pa, summ = pruning_analysis(trace, received_attention(data)), trace.summary()
    n_par, pruned = len(pa.survival), pa.decisions["pruned"]
    run = {
        "steps": summ["total_steps"],
        "mean_width": summ["average_parallel_width"],
        "parallel_tokens": n_par,
        "n_decisions": pa.n_decisions,
        "n_pruned": int(pruned.sum()),
        "pruning_rate": float(pruned.mean()) if pa.n_decisions else math.nan,
        "pruned_fraction_of_parallel": summ["pruned"] / n_par if n_par else math.nan,
        "clean_nll": clean_text_nll(model, trace).mean_nll,
        "wall_seconds": seconds,
        "clean_text": trace.clean_text(),
        "bracket_text": trace.bracket_text(),
    }
    agreement = pd.DataFrame()
    if group == "all":  # counterfactual: every group re-judges this run's sets
        frames = [
            rejudge(trace, data, cfg.pruning(la, g, mode), n_layers).assign(layers=g)
            for g in cfg.groups
        ]
        agreement = pd.concat(frames).sort_values(["judged_at", "set_step"], kind="stable")
        agreement = agreement.rename(
            columns={"recorded_score": "score_all", "recorded_pruned": "pruned_all"}
        )
    survival = pa.survival.to_dict(orient="records")
    return {"runs": [run], "agreement": agreement.to_dict(orient="records"), "survival": survival}


def summarize(cfg: Config, tables: dict[str, pd.DataFrame], out: Path) -> str:
    """Per (lookahead, group): pruning rate with CI, agreement with ``all``, survival AUCs."""
    runs, ag, sv = (tables.get(k, pd.DataFrame()) for k in ("runs", "agreement", "survival"))
    groups, lines = [], []
    keys = ["lookahead", "layers", "mode"]
    for (la, group, mode), g in runs.groupby(keys, sort=False):
        a, s = (
            t[(t["lookahead"] == la) & (t["layers"] == group) & (t["mode"] == mode)]
            if len(t)
            else t
            for t in (ag, sv)
        )
        rate = estimate(g["pruning_rate"], min_n=cfg.min_prompts, seed=cfg.seed)
        alive = ~s["pruned"].astype(bool) if len(s) else []
        r = {
            "lookahead": int(la),
            "layers": group,
            "mode": mode,
            "n_runs": len(g),
            "n_decisions": int(g["n_decisions"].sum()),
            "rate_mean": rate.mean,
            "rate_ci": [math.nan] * 2 if rate.direction == "insufficient" else list(rate.ci),
            "clean_nll_mean": float(g["clean_nll"].mean()),
            "agreement": float((a["pruned"] == a["pruned_all"]).mean()) if len(a) else math.nan,
            "kappa": cohens_kappa(a["pruned"], a["pruned_all"]) if len(a) else math.nan,
            "score_rho": rank_correlation(a["score"], a["score_all"])[0] if len(a) else math.nan,
            "auc_received": auc(s["received"], alive) if len(s) else math.nan,
            "auc_probability": auc(s["probability"], alive) if len(s) else math.nan,
        }
        groups.append(r)
        lines.append(
            f"lookahead={la} {group:>6} {mode}: pruning rate {fmt(r['rate_mean'])} CI "
            f"{fmt_ci(r['rate_ci'])} (n_decisions={r['n_decisions']}); agreement with all "
            f"{fmt(r['agreement'])} kappa={fmt(r['kappa'])} score rho={fmt(r['score_rho'])}; "
            f"AUC(received->survive)={fmt(r['auc_received'])} "
            f"AUC(prob->survive)={fmt(r['auc_probability'])}"
        )
    al = ag[ag["layers"] == "all"] if len(ag) else ag
    reproduced = bool((al["pruned"] == al["pruned_all"]).all()) if len(al) else None
    hard_vs_soft = _hard_vs_soft(cfg, runs)
    lines += [
        f"hard - soft {k}: {fmt(v['mean'])} CI {fmt_ci(v['ci'])}" for k, v in hard_vs_soft.items()
    ]
    summary = {
        "n_prompts": int(runs["prompt_id"].nunique()),
        "prune": cfg.prune,
        "reproduced": reproduced,
        "groups": groups,
        "hard_vs_soft": hard_vs_soft,
    }
    atomic_write_json(out / "summary.json", jsonable(summary))
    head = f"prompts={summary['n_prompts']} counterfactual 'all' reproduces the run: {reproduced}"
    return "\n".join([head, *lines])


def _hard_vs_soft(cfg: Config, runs: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Paired over prompts: hard - soft of each metric, per (lookahead, layers)."""
    out: dict[str, dict[str, Any]] = {}
    if set(runs["mode"]) != {"soft", "hard"}:
        return out
    wide = runs.pivot_table(
        index=["prompt_id", "lookahead", "layers"], columns="mode", values=list(HARD_VS_SOFT)
    )
    for (la, group), g in wide.groupby(level=["lookahead", "layers"], sort=False):
        for metric in HARD_VS_SOFT:
            d = (g[(metric, "hard")] - g[(metric, "soft")]).dropna().to_numpy(float)
            e = estimate(d, min_n=cfg.min_prompts, seed=cfg.seed)
            out[f"lookahead={la} {group} {metric}"] = {
                "n": e.n,
                "mean": e.mean,
                "ci": list(e.ci),
                "direction": e.direction,
            }
    return out


HARD_VS_SOFT = ("clean_nll", "pruning_rate", "mean_width", "n_pruned")

SPEC = ExperimentSpec(
    name="pruning_layers",
    prompts_resource="suite.csv",  # n >= 48 by default: the packaged suite (issue 22)
    config=Config,
    conditions=lambda cfg: [
        {"lookahead": la, "layers": g, "mode": m}
        for m in dict.fromkeys(cfg.modes)
        for la in sorted(set(cfg.lookaheads))
        for g in cfg.groups
    ],
    run_unit=run_unit,
    run_batch=run_batch,
    batch_size=8,
    summarize=summarize,
    tiny_model={"n_layers": 3},  # three layers: every third is non-empty
    quick={"max_steps": 4, "lookaheads": (1,)},
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run from the command line (:func:`tempo_lens.runner.run_cli`); 0 on success."""
    return run_cli(SPEC, argv)


if __name__ == "__main__":
    raise SystemExit(main())
