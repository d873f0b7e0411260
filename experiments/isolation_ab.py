"""RQ 2.1: isolated vs visible siblings — attention, quality and widths, A/B on the same prompts.

For every prompt TEMPO generates twice with identical settings except ``isolate`` (members
of a set cannot / can attend to their earlier siblings), capturing attention
(:class:`tempo_lens.AttentionCapture`). Per run: sibling attention (the share of a member's
attention that goes to its earlier siblings; exactly 0 when isolated), the
parallel:non-parallel received-attention ratios (:func:`tempo_lens.analysis.received_attention`),
the plain-model NLL of the clean text (:func:`tempo_lens.analysis.quality.clean_text_nll`),
widths and diversity. The summary compares the modes pairwise across prompts (mean
difference isolated - visible, bootstrap CI, Wilcoxon signed-rank).

Example::

    python experiments/isolation_ab.py --output-dir results/isolation_ab
    python experiments/isolation_ab.py --tiny --selection-threshold 0.05 --output-dir /tmp/iso
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

import tempo_lens as tl
from tempo_lens import experiment_cli
from tempo_lens.analysis import received_attention, sibling_attention
from tempo_lens.analysis._util import jsonable
from tempo_lens.analysis.quality import clean_text_nll, trace_diversity
from tempo_lens.analysis.stats import bootstrap_ci, paired_tests
from tempo_lens.config import READOUTS
from tempo_lens.experiment_cli import ExperimentSpec, fmt, fmt_ci
from tempo_lens.io import atomic_write_json, atomic_write_text
from tempo_lens.pruning import parse_rule

DEFAULT_PROMPTS = (
    "The cat sat on the",
    "Once upon a time, there was a",
    "The capital of France is",
    "To make a cup of tea, first",
    "The best way to learn a language is",
    "In the morning, the old man",
)
TINY_PROMPTS = ("3 14 15 9 26", "5 35 8 9 7 9", "2 7 18 28")
TINY_MODEL: dict[str, Any] = {}  # make_tiny_model() keywords for --tiny
COMPARED = ("clean_nll", "ratio", "ratio_generated", "set_ratio", "mean_width", "distinct_2")


@dataclass(frozen=True, kw_only=True)
class Config:
    """Isolation A/B settings.

    Attributes:
        prompts: Prompts (text; token ids like "3 14 15" for --tiny). Default: a few built-in prompts.
        selection_threshold: tau in (0, 1]: every token with p >= tau joins the set.
        max_steps: Steps per generation (>= 1).
        max_parallel: Cap on members per set (0 = no cap).
        readout: Next-step distribution after a set: last | top | mixture.
        prune: Retroactive pruning in both modes: none | relative:R | absolute:A.
        min_prompts: Fewest prompts before a difference is claimed.
        seed: Bootstrap seed.
        tiny: Use the tiny random test model (prompts are token ids).
        model: Offline model name (ignored with --tiny).
        device: Torch device.
    """

    prompts: tuple[str, ...] = ()
    selection_threshold: float = 0.1
    max_steps: int = 16
    max_parallel: int = 8
    readout: str = "mixture"
    prune: str = "none"
    min_prompts: int = 3
    seed: int = 0
    tiny: bool = False
    model: str = tl.DEFAULT_MODEL
    device: str = "cpu"

    def __post_init__(self) -> None:
        if any(not p.strip() for p in self.prompts):
            raise ValueError("prompts must not be empty")
        if self.min_prompts < 1:
            raise ValueError(f"min_prompts must be >= 1, got {self.min_prompts}")
        self.tempo_config(isolate=True)  # validates tau, steps, readout, prune

    def tempo_config(self, *, isolate: bool) -> tl.TempoConfig:
        if self.max_parallel < 0:
            raise ValueError(f"max_parallel must be >= 0, got {self.max_parallel}")
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {', '.join(READOUTS)}, got {self.readout!r}")
        return tl.TempoConfig(
            selection_threshold=self.selection_threshold,
            max_steps=self.max_steps,
            max_parallel=self.max_parallel or None,
            readout=self.readout,  # type: ignore[arg-type]
            isolate=isolate,
            prune=_prune_config(self.prune),
        )


def _prune_config(spec: str) -> tl.PruningConfig | None:
    """``none`` | ``relative:R`` | ``absolute:A`` (the ``tempo-lens --prune`` syntax)."""
    rule = parse_rule(spec)
    return None if rule is None else tl.PruningConfig(rule=rule)


@dataclass
class Results:
    """``runs``: one row per (prompt, mode); ``layers``: visible-mode sibling attention per
    layer; ``summary``: paired comparisons."""

    runs: pd.DataFrame
    layers: pd.DataFrame
    summary: dict[str, Any]

    def write(self, out_dir: str | Path) -> list[Path]:
        out = Path(out_dir)
        paths = [out / "runs.csv", out / "sibling_layers.csv", out / "summary.json"]
        atomic_write_text(paths[0], self.runs.to_csv(index=False))
        atomic_write_text(paths[1], self.layers.to_csv(index=False))
        atomic_write_json(paths[2], jsonable(self.summary))  # last: marks a complete run
        return paths

    def report(self) -> str:
        s = self.summary
        lines = [
            f"prompts={s['n_prompts']} isolation exact (max sibling attention isolated = "
            f"{_f(s['isolated_max_sibling_attention'])}): {s['isolation_consistent']}",
            f"visible sibling attention {_f(s['visible_sibling_attention']['mean'])} "
            f"CI {_ci(s['visible_sibling_attention']['ci'])}; identical clean text in "
            f"{s['identical_clean_text']}/{s['n_prompts']} prompts",
        ]
        for name, c in s["comparisons"].items():
            lines.append(
                f"{name:>16}: isolated {_f(c['isolated_mean'])} vs visible {_f(c['visible_mean'])}"
                f", diff {_f(c['mean_difference'])} CI {_ci(c['difference_ci'])} "
                f"Wilcoxon p={_f(c['wilcoxon_p'])} -> {c['verdict']}"
            )
        return "\n".join(lines)


# ---------------------------------------------------------------------- experiment
def _sibling_shares(per_head: np.ndarray) -> np.ndarray:
    """``[layer, head, member, member]`` -> ``[layer, member-1]``: attention member a (>= 1)
    pays to its earlier siblings, summed over them, mean over heads."""
    m = per_head.mean(axis=1)
    return np.stack([m[:, a, :a].sum(-1) for a in range(1, m.shape[-1])], axis=-1)


def run(cfg: Config, model: Any = None) -> Results:
    """Generate both modes per prompt, measure, compare (see the module docstring)."""
    model = model if model is not None else experiment_cli.load(SPEC, cfg)
    rows, layer_rows = [], []
    for p_id, (text, prompt) in enumerate(experiment_cli.resolve_prompts(SPEC, cfg, model)):
        clean: dict[str, list[int]] = {}
        for mode in ("isolated", "visible"):
            cap = tl.AttentionCapture()
            t0 = time.perf_counter()
            trace = tl.generate(
                model, prompt, cfg.tempo_config(isolate=mode == "isolated"), observers=[cap]
            )
            seconds = time.perf_counter() - t0
            data = cap.result(trace)
            rec = received_attention(data)
            mats = sibling_attention(data)
            shares = [_sibling_shares(m.per_head) for m in mats]
            off_diag = [m.per_head[..., ~np.eye(len(m.indices), dtype=bool)] for m in mats]
            per_layer = (
                np.concatenate(shares, axis=-1) if shares else np.zeros((len(data.layers), 0))
            )
            summ, q, div = trace.summary(), clean_text_nll(model, trace), trace_diversity(trace)
            clean[mode] = trace.clean_ids()
            rows.append(
                {
                    "prompt_id": p_id,
                    "prompt": text,
                    "mode": mode,
                    "steps": summ["total_steps"],
                    "parallel_steps": summ["parallel_steps"],
                    "mean_width": summ["average_parallel_width"],
                    "max_width": summ["max_parallel_width"],
                    "pruned": summ["pruned"],
                    "sibling_attention": float(per_layer.mean()) if per_layer.size else math.nan,
                    "max_sibling_attention": max(
                        (float(x.max()) for x in off_diag), default=math.nan
                    ),
                    "ratio": rec.ratio,
                    "ratio_generated": rec.ratio_generated,
                    "set_ratio": rec.set_ratio,
                    "clean_nll": q.mean_nll,
                    "clean_perplexity": q.perplexity,
                    **{k: div[k] for k in ("distinct_1", "distinct_2", "distinct_generated")},
                    "wall_seconds": seconds,
                    "stop_reason": trace.stop_reason,
                    "clean_text": trace.clean_text(),
                    "bracket_text": trace.bracket_text(),
                }
            )
            for li, layer in enumerate(data.layers):
                layer_rows.append(
                    {
                        "prompt_id": p_id,
                        "mode": mode,
                        "layer": layer,
                        "sibling_attention": float(per_layer[li].mean())
                        if per_layer.size
                        else math.nan,
                        "n_members": int(per_layer.shape[-1]),
                    }
                )
        same = [a == b for a, b in zip(clean["isolated"], clean["visible"], strict=False)]
        first = (
            same.index(False)
            if False in same
            else (None if len(clean["isolated"]) == len(clean["visible"]) else len(same))
        )
        for r in rows[-2:]:
            r["first_clean_divergence"] = first
    runs = pd.DataFrame(rows)
    return Results(runs, pd.DataFrame(layer_rows), summarise(runs, cfg))


# ---------------------------------------------------------------------- statistics
def summarise(runs: pd.DataFrame, cfg: Config) -> dict[str, Any]:
    """Paired isolated-vs-visible comparisons across prompts (verdicts from the numbers)."""
    iso = runs[runs["mode"] == "isolated"].set_index("prompt_id")
    vis = runs[runs["mode"] == "visible"].set_index("prompt_id")
    comparisons = {}
    for name in COMPARED:
        ok = iso[name].notna() & vis[name].notna()
        a, b = iso.loc[ok, name].to_numpy(float), vis.loc[ok, name].to_numpy(float)
        tests = paired_tests(a, b)
        lo, hi = bootstrap_ci(a - b, seed=cfg.seed)
        if len(a) < cfg.min_prompts:
            verdict = f"insufficient data ({len(a)} < {cfg.min_prompts} prompts)"
        elif lo > 0 and tests.wilcoxon_p < 0.05:
            verdict = "isolated higher"
        elif hi < 0 and tests.wilcoxon_p < 0.05:
            verdict = "isolated lower"
        else:
            verdict = "no significant difference"
        comparisons[name] = {
            "n": len(a),
            "isolated_mean": float(a.mean()) if len(a) else math.nan,
            "visible_mean": float(b.mean()) if len(b) else math.nan,
            "mean_difference": tests.mean_difference,
            "difference_ci": [lo, hi],
            "wilcoxon_p": tests.wilcoxon_p,
            "t_p": tests.t_p,
            "cohens_dz": tests.cohens_dz,
            "verdict": verdict,
        }
    vsib = vis["sibling_attention"].dropna().to_numpy(float)
    iso_max = (
        float(iso["max_sibling_attention"].max())
        if iso["max_sibling_attention"].notna().any()
        else math.nan
    )
    return {
        "n_prompts": int(len(iso)),
        "config": cfg.tempo_config(isolate=True).to_dict(),
        "isolated_max_sibling_attention": iso_max,
        "isolation_consistent": None if math.isnan(iso_max) else iso_max == 0.0,
        "visible_sibling_attention": {
            "mean": float(vsib.mean()) if len(vsib) else math.nan,
            "ci": list(bootstrap_ci(vsib, seed=cfg.seed)),
            "n": int(len(vsib)),
        },
        "identical_clean_text": int((iso["first_clean_divergence"].isna()).sum()),
        "comparisons": comparisons,
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
