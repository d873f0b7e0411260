"""RQ 3.1-3.3: which layers' attention should drive retroactive pruning, and how far ahead?

For every prompt, lookahead and layer group (``early``/``middle``/``late`` thirds or
``all``) TEMPO generates with :class:`tempo_lens.PruningConfig` (relative rule) while
capturing attention. Three tables:

* ``runs`` — pruning rates per run (decisions taken, members pruned), widths, clean-text
  NLL under the plain model;
* ``agreement`` — counterfactual decisions: on the trajectory of each ``all`` run, every
  judged set is re-scored with each layer group's attention (same queries, same rule, via
  :func:`tempo_lens.pruning.score_members`), so groups are compared on identical evidence
  (separate runs diverge as soon as one decision differs). The ``all`` group re-scored this
  way must reproduce the recorded decisions (``reproduced`` in the summary);
* ``survival`` — survival-analysis inputs, one row per member of a parallel set: selection
  probability, rank, attention received from later steps, last pruning score, pruned
  (from the trace's ``PruneDecision`` records, :func:`tempo_lens.analysis.pruning_analysis`).

Example::

    python experiments/pruning_layers.py --output-dir results/pruning_layers
    python experiments/pruning_layers.py --tiny --selection-threshold 0.05 --output-dir /tmp/pl
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
import torch
from scipy import stats as sps

import tempo_lens as tl
from tempo_lens import experiment_cli
from tempo_lens.analysis import pruning_analysis, received_attention
from tempo_lens.analysis._util import jsonable
from tempo_lens.analysis.quality import clean_text_nll
from tempo_lens.analysis.stats import bootstrap_ci
from tempo_lens.experiment_cli import ExperimentSpec, fmt, fmt_ci
from tempo_lens.io import atomic_write_json, atomic_write_text
from tempo_lens.pruning import LAYER_GROUPS, decide, resolve_layers, score_members

DEFAULT_PROMPTS = (
    "The cat sat on the",
    "Once upon a time, there was a",
    "The capital of France is",
)
TINY_PROMPTS = ("3 14 15 9 26", "5 35 8 9 7 9", "2 7 18 28")
TINY_MODEL: dict[str, Any] = {"n_layers": 3}  # three layers: every third is non-empty


@dataclass(frozen=True, kw_only=True)
class Config:
    """Pruning-layer experiment settings.

    Attributes:
        prompts: Prompts (text; token ids like "3 14 15" for --tiny). Default: a few built-in prompts.
        selection_threshold: tau in (0, 1]: every token with p >= tau joins the set.
        max_steps: Steps per generation (>= 1).
        max_parallel: Cap on members per set (0 = no cap).
        ratio: Relative rule: prune members scoring < ratio x the best sibling, in [0, 1].
        layer_groups: Layer groups voting on pruning: all | early | middle | late (all is always run).
        lookaheads: Steps to wait before a set is judged, each >= 1.
        head_agg: Aggregation of attention over (layer, head) pairs: mean | max | sum.
        min_prompts: Fewest prompts before a CI-based claim is made.
        seed: Bootstrap seed.
        tiny: Use the tiny random test model (3 layers; prompts are token ids).
        model: Offline model name (ignored with --tiny).
        device: Torch device.
    """

    prompts: tuple[str, ...] = ()
    selection_threshold: float = 0.1
    max_steps: int = 12
    max_parallel: int = 8
    ratio: float = 0.5
    layer_groups: tuple[str, ...] = ("all", "early", "middle", "late")
    lookaheads: tuple[int, ...] = (1, 2, 3)
    head_agg: str = "mean"
    min_prompts: int = 3
    seed: int = 0
    tiny: bool = False
    model: str = tl.DEFAULT_MODEL
    device: str = "cpu"

    def __post_init__(self) -> None:
        if any(not p.strip() for p in self.prompts):
            raise ValueError("prompts must not be empty")
        bad = [g for g in self.layer_groups if g not in LAYER_GROUPS]
        if bad or not self.layer_groups:
            raise ValueError(f"layer_groups must be among {LAYER_GROUPS}, got {self.layer_groups}")
        if not self.lookaheads or min(self.lookaheads) < 1:
            raise ValueError(f"lookaheads must be ints >= 1, got {self.lookaheads}")
        if self.min_prompts < 1:
            raise ValueError(f"min_prompts must be >= 1, got {self.min_prompts}")
        if self.max_parallel < 0:
            raise ValueError(f"max_parallel must be >= 0, got {self.max_parallel}")
        self.tempo_config(lookahead=1, layers="all")  # validates tau, steps, ratio, head_agg

    @property
    def groups(self) -> list[str]:
        return ["all", *[g for g in dict.fromkeys(self.layer_groups) if g != "all"]]

    def tempo_config(self, *, lookahead: int, layers: str) -> tl.TempoConfig:
        return tl.TempoConfig(
            selection_threshold=self.selection_threshold,
            max_steps=self.max_steps,
            max_parallel=self.max_parallel or None,
            prune=tl.PruningConfig(
                rule=tl.RelativeRule(ratio=self.ratio),
                lookahead=lookahead,
                layers=layers,
                head_agg=self.head_agg,  # type: ignore[arg-type]
            ),
        )


@dataclass
class Results:
    """``runs``, ``agreement``, ``survival`` tables and the ``summary`` (module docstring)."""

    runs: pd.DataFrame
    agreement: pd.DataFrame
    survival: pd.DataFrame
    summary: dict[str, Any]

    def write(self, out_dir: str | Path) -> list[Path]:
        out = Path(out_dir)
        paths = [out / f"{n}.csv" for n in ("runs", "agreement", "survival")]
        for path, df in zip(paths, (self.runs, self.agreement, self.survival), strict=True):
            atomic_write_text(path, df.to_csv(index=False))
        paths.append(out / "summary.json")
        atomic_write_json(paths[-1], jsonable(self.summary))  # last: marks a complete run
        return paths

    def report(self) -> str:
        s = self.summary
        lines = [
            f"prompts={s['n_prompts']} counterfactual 'all' reproduces the run: {s['reproduced']}"
        ]
        for r in s["groups"]:
            lines.append(
                f"lookahead={r['lookahead']} {r['layers']:>6}: pruning rate {_f(r['rate_mean'])} "
                f"CI {_ci(r['rate_ci'])} (n_decisions={r['n_decisions']}); agreement with all "
                f"{_f(r['agreement'])} kappa={_f(r['kappa'])} score rho={_f(r['score_rho'])}; "
                f"AUC(received->survive)={_f(r['auc_received'])} AUC(prob->survive)={_f(r['auc_probability'])}"
            )
        return "\n".join(lines)


# ---------------------------------------------------------------------- experiment
def _counterfactual(
    trace: tl.Trace, data: tl.AttentionData, cfg: Config, groups: dict[str, list[int]]
) -> list[dict[str, Any]]:
    """Re-score every set judged in ``trace`` with each layer group's captured attention."""
    rows = []
    rule = tl.RelativeRule(ratio=cfg.ratio)
    for rec in trace.steps:
        by_set: dict[int, list[Any]] = {}
        for d in rec.pruning:
            by_set.setdefault(d.set_step, []).append(d)
        for set_step, decisions in by_set.items():
            members = [d.index for d in decisions]
            votes = np.concatenate(
                [data.rows(s)[:, :, :, members] for s in range(set_step + 1, rec.step + 1)], axis=2
            )
            for name, layers in groups.items():
                sub = torch.from_numpy(votes[[data.layers.index(x) for x in layers]])
                scores = score_members(
                    sub, list(range(len(members))), head_agg=cfg.head_agg, query_agg="mean"
                )  # type: ignore[arg-type]
                verdict = decide(scores, rule)
                for d, score, pruned in zip(decisions, scores.tolist(), verdict, strict=True):
                    rows.append(
                        {
                            "judged_at": rec.step,
                            "set_step": set_step,
                            "index": d.index,
                            "layers": name,
                            "score": score,
                            "pruned": bool(pruned),
                            "pruned_all": bool(d.pruned),
                            "score_all": d.score,
                        }
                    )
    return rows


def run(cfg: Config, model: Any = None) -> Results:
    """Generate every (prompt, lookahead, group), tabulate, summarise."""
    model = model if model is not None else experiment_cli.load(SPEC, cfg)
    groups = {g: resolve_layers(g, model.cfg.n_layers) for g in cfg.groups}
    runs, agree, surv = [], [], []
    for p_id, (text, prompt) in enumerate(experiment_cli.resolve_prompts(SPEC, cfg, model)):
        for la in sorted(set(cfg.lookaheads)):
            for group in groups:
                cap = tl.AttentionCapture()
                t0 = time.perf_counter()
                trace = tl.generate(
                    model, prompt, cfg.tempo_config(lookahead=la, layers=group), observers=[cap]
                )
                seconds = time.perf_counter() - t0
                data = cap.result(trace)
                pa = pruning_analysis(trace, received_attention(data))
                keys = {"prompt_id": p_id, "lookahead": la, "layers": group}
                summ = trace.summary()
                n_par = int(len(pa.survival))
                runs.append(
                    {
                        **keys,
                        "prompt": text,
                        "steps": summ["total_steps"],
                        "mean_width": summ["average_parallel_width"],
                        "parallel_tokens": n_par,
                        "n_decisions": pa.n_decisions,
                        "n_pruned": int(pa.decisions["pruned"].sum()) if pa.n_decisions else 0,
                        "pruning_rate": float(pa.decisions["pruned"].mean())
                        if pa.n_decisions
                        else math.nan,
                        "pruned_fraction_of_parallel": summ["pruned"] / n_par
                        if n_par
                        else math.nan,
                        "clean_nll": clean_text_nll(model, trace).mean_nll,
                        "wall_seconds": seconds,
                        "clean_text": trace.clean_text(),
                        "bracket_text": trace.bracket_text(),
                    }
                )
                surv += [{**keys, **r} for r in pa.survival.to_dict(orient="records")]
                if group == "all":
                    agree += [
                        {"prompt_id": p_id, "lookahead": la, **r}
                        for r in _counterfactual(trace, data, cfg, groups)
                    ]
    acols = [
        "prompt_id",
        "lookahead",
        "judged_at",
        "set_step",
        "index",
        "layers",
        "score",
        "pruned",
        "pruned_all",
        "score_all",
    ]
    res = Results(pd.DataFrame(runs), pd.DataFrame(agree, columns=acols), pd.DataFrame(surv), {})
    res.summary = summarise(res, cfg)
    return res


# ---------------------------------------------------------------------- statistics
def _auc(score: pd.Series, positive: pd.Series) -> float:
    """P(score of a positive > score of a negative) (ties 1/2; NaN without both classes)."""
    ok = score.notna()
    pos, neg = score[ok & positive], score[ok & ~positive]
    if not len(pos) or not len(neg):
        return math.nan
    u = sps.mannwhitneyu(pos, neg, alternative="two-sided").statistic
    return float(u / (len(pos) * len(neg)))


def _kappa(a: pd.Series, b: pd.Series) -> float:
    """Cohen's kappa of two boolean verdicts (NaN when chance agreement is 1)."""
    if not len(a):
        return math.nan
    po = float((a == b).mean())
    pa, pb = float(a.mean()), float(b.mean())
    pe = pa * pb + (1 - pa) * (1 - pb)
    return (po - pe) / (1 - pe) if pe < 1 else math.nan


def summarise(res: Results, cfg: Config) -> dict[str, Any]:
    """Per (lookahead, group): pruning rate across prompts with CI, counterfactual agreement
    with ``all``, and how well attention received / selection probability predict survival."""
    out = []
    ag, sv = res.agreement, res.survival
    for (la, group), g in res.runs.groupby(["lookahead", "layers"], sort=False):
        rates = g["pruning_rate"].dropna().to_numpy(float)
        a = ag[(ag["lookahead"] == la) & (ag["layers"] == group)]
        s = sv[(sv["lookahead"] == la) & (sv["layers"] == group)] if len(sv) else sv
        rho = math.nan
        if len(a) >= 3 and a["score"].nunique() > 1 and a["score_all"].nunique() > 1:
            rho = float(sps.spearmanr(a["score"], a["score_all"]).statistic)
        survived = ~s["pruned"].astype(bool) if len(s) else pd.Series(dtype=bool)
        out.append(
            {
                "lookahead": int(la),
                "layers": group,
                "n_runs": int(len(g)),
                "n_decisions": int(g["n_decisions"].sum()),
                "rate_mean": float(rates.mean()) if len(rates) else math.nan,
                "rate_ci": list(bootstrap_ci(rates, seed=cfg.seed))
                if len(rates) >= cfg.min_prompts
                else [math.nan, math.nan],
                "clean_nll_mean": float(g["clean_nll"].mean()),
                "agreement": float((a["pruned"] == a["pruned_all"]).mean()) if len(a) else math.nan,
                "kappa": _kappa(a["pruned"], a["pruned_all"]),
                "score_rho": rho,
                "auc_received": _auc(s["received"], survived) if len(s) else math.nan,
                "auc_probability": _auc(s["probability"], survived) if len(s) else math.nan,
            }
        )
    al = ag[ag["layers"] == "all"]
    return {
        "n_prompts": int(res.runs["prompt_id"].nunique()),
        "ratio": cfg.ratio,
        "reproduced": bool((al["pruned"] == al["pruned_all"]).all()) if len(al) else None,
        "groups": out,
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
