"""RQ 8.3: threshold beam search — TEMPO's sets as beam search's candidate pool.

Pre-registered in ``docs/preregistration.md`` (R8). Per prompt (one unit, no conditions),
each decoder for ``max_steps`` steps (default 16, EOS stops):

* ``greedy`` (:func:`tempo_lens.greedy`);
* ``tempo``: :func:`tempo_lens.generate`, τ = ``selection_threshold`` (0.1), isolated,
  ``mixture`` readout, no pruning; its text is the clean path;
* ``tree_beam``: :func:`tempo_lens.tree_beam_search`, ``k = num_beams`` (4);
* ``threshold_beam`` (the hybrid): the same with ``candidate_threshold`` (τ = 0.1): per
  running beam only the tokens with ``p >= τ`` (at least the top-1) are candidates;
* ``tree_beam_matched``: tree beam search with ``k = matched_beams`` (2), the width whose
  forwarded tokens per step match TEMPO's at τ = 0.1 (issue 25's quality at matched
  compute, added to R8 before the run).

Table ``runs`` (one row per prompt × method): ``method``, ``clean_text`` (the prompt
followed by the generated text, :meth:`~tempo_lens.trace.Trace.clean_text`, as in every
runner table; the judge scores the part after the prompt), ``generated_tokens``, ``tokens_forwarded``
and ``forwards`` as the decoders count them (the prompt's forward included:
:func:`~tempo_lens.analysis.budget.trace_budget` for greedy and TEMPO,
:attr:`~tempo_lens.generation.trees.TreeBeamResult.tokens_forwarded` for the trees),
``forwarded_per_token`` (``tokens_forwarded / generated_tokens``, the compute measure),
``counted_forwards`` / ``counted_tokens`` (a
:class:`~tempo_lens.analysis.budget.ForwardCounter` on the token embedding, a check),
``prompt_tokens``, ``stop_reason``, ``wall_seconds``.

Quality is judged: ``tempo-lens judge --output-dir RUN --table runs.csv --keys method
--judge-model gemma-3-270m`` writes ``RUN/judge.csv`` (``prompt_id, method, judge,
judge_nll, judge_tokens``); ``tempo-lens experiment hybrid --summarize-only --output-dir
RUN`` then applies R8 (3 comparisons, 98.3 % CIs, :func:`~tempo_lens.analysis.estimate`
paired by prompt; quality = judged NLL minus the same prompt's greedy text's):

* ``8.3.quality_vs_beam``: hybrid − beam: CI inside ±0.1 → *matches beam*; else CI below
  0 → *better*, above 0 → *worse*;
* ``8.3.compute_vs_beam``: hybrid / beam forwarded tokens per generated token: CI below 1
  → *cheaper*;
* ``8.3.quality_vs_tempo``: hybrid − TEMPO: CI below 0 → *better than TEMPO*;
* ``8.3.pays_off``: (a) *matches beam* or *better*, and (b) *cheaper*.

Without ``judge.csv`` the summary reports compute only; quality awaits the judge.

Example::

    tempo-lens experiment hybrid --prompts-file tempo_lens/prompts/research_48.csv \
        --output-dir results/hybrid
    tempo-lens experiment hybrid --tiny --quick --output-dir /tmp/hybrid
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

import tempo_lens as tl
from tempo_lens.analysis.budget import ForwardCounter, trace_budget
from tempo_lens.analysis.stats import Estimate, estimate
from tempo_lens.experiments._common import UnprunedConfig, fmt, fmt_estimate
from tempo_lens.io import atomic_write_json, jsonable
from tempo_lens.runner import ExperimentSpec, Unit, encode
from tempo_lens.runner.cli import run_cli
from tempo_lens.schedules import check_threshold
from tempo_lens.trace import Trace

METHODS = ("greedy", "tempo", "tree_beam", "threshold_beam", "tree_beam_matched")
"""The decoders of R8, in row order."""

HYBRID, BEAM, TEMPO, GREEDY = "threshold_beam", "tree_beam", "tempo", "greedy"
MATCHED = "tree_beam_matched"

LEVEL = 1 - 0.05 / 3
"""98.3 %: three comparisons (R8)."""

QUALITY_MARGIN = 0.1
"""nats/token: (a)'s CI inside ±0.1 -> the hybrid *matches beam*."""

JUDGE_FILE = "judge.csv"
"""``tempo-lens judge``'s table in the run directory."""

QUESTIONS = {
    "8.3.quality_vs_beam": "judged NLL (vs greedy), threshold beam − beam search",
    "8.3.compute_vs_beam": "tokens forwarded per generated token, threshold beam / beam search",
    "8.3.quality_vs_tempo": "judged NLL (vs greedy), threshold beam − TEMPO",
    "8.3.pays_off": "the hybrid pays off: (a) matches beam or better, and (b) cheaper",
    "25.quality_matched": "judged NLL (vs greedy), TEMPO − tree beam search at matched width",
    "25.compute_matched": "tokens forwarded per generated token, TEMPO / matched tree beam",
}


@dataclass(frozen=True, kw_only=True)
class Config(UnprunedConfig):
    """R8 settings: TEMPO's (τ = ``selection_threshold``, isolated, no pruning) and the beams'.

    Attributes:
        num_beams: ``k`` of both beam searches (``>= 1``).
        candidate_threshold: τ of the threshold beam search, in ``(0, 1]``.
        matched_beams: ``k`` of the tree beam search at TEMPO's width (``>= 1``).
    """

    num_beams: int = 4
    candidate_threshold: float = 0.1
    matched_beams: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {self.num_beams}")
        if self.matched_beams < 1:
            raise ValueError(f"matched_beams must be >= 1, got {self.matched_beams}")
        check_threshold(self.candidate_threshold, "candidate_threshold")


def _measured(model: Any, fn: Callable[[], Any]) -> tuple[Any, ForwardCounter, float]:
    counter = ForwardCounter(model.embed)
    with counter.counting():
        t0 = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - t0
    return out, counter, seconds


def _row(
    method: str,
    trace: Trace,
    forwards: int,
    tokens: int,
    counter: ForwardCounter,
    seconds: float,
) -> dict[str, Any]:
    n = len(trace.clean_ids())
    return {
        "method": method,
        "clean_text": trace.clean_text(),
        "generated_tokens": n,
        "tokens_forwarded": tokens,
        "forwards": forwards,
        "forwarded_per_token": tokens / n if n else math.nan,
        "counted_forwards": counter.forwards,
        "counted_tokens": counter.tokens,
        "prompt_tokens": trace.prompt_length,
        "stop_reason": trace.stop_reason,
        "wall_seconds": seconds,
    }


def run_unit(cfg: Config, model: Any, unit: Unit) -> dict[str, list[dict[str, Any]]]:
    """One prompt: greedy, TEMPO, tree beam search and threshold beam search."""
    ids = encode(model, unit.prompt)
    n, k = cfg.max_steps, cfg.num_beams
    rows = []
    g, c, s = _measured(model, lambda: tl.greedy(model, ids, max_steps=n))
    b = trace_budget(g)
    rows.append(_row(GREEDY, g, b.forwards, b.tokens_forwarded, c, s))
    t, c, s = _measured(model, lambda: tl.generate(model, ids, cfg.tempo_config(isolate=True)))
    b = trace_budget(t)
    rows.append(_row(TEMPO, t, b.forwards, b.tokens_forwarded, c, s))

    def beams(tau: float | None, width: int) -> Callable[[], tl.TreeBeamResult]:
        return lambda: tl.tree_beam_search(
            model, ids, max_steps=n, num_beams=width, candidate_threshold=tau
        )

    for method, tau, width in (
        (BEAM, None, k),
        (HYBRID, cfg.candidate_threshold, k),
        (MATCHED, None, cfg.matched_beams),
    ):
        r, c, s = _measured(model, beams(tau, width))
        rows.append(_row(method, r.trace, r.n_forwards, r.tokens_forwarded, c, s))
    return {"runs": rows}


def _wide(table: pd.DataFrame, value: str) -> pd.DataFrame:
    """``value`` per prompt (rows) and method (columns)."""
    t = table[["prompt_id", "method", value]].copy()
    t[value] = t[value].astype(float)
    return t.pivot_table(index="prompt_id", columns="method", values=value, aggfunc="first")


def _estimate_row(rid: str, e: Estimate | None, verdict: str) -> dict[str, Any]:
    """``id, question, mean, ci, n, verdict`` (and the other Estimate fields when there is one).

    A row without an estimate (quality awaiting the judge; ``pays_off``, a combination of
    verdicts) has mean and CI NaN and ``n`` 0.
    """
    if e is None:
        stats: dict[str, Any] = {"mean": math.nan, "ci": [math.nan, math.nan], "n": 0}
    else:
        stats = {**asdict(e), "ci": list(e.ci)}
    return {"id": rid, "question": QUESTIONS[rid], **stats, "verdict": verdict}


def quality_verdict(e: Estimate) -> str:
    """(a): CI inside ±0.1 -> matches beam; else below 0 -> better, above 0 -> worse."""
    if e.direction == "insufficient":
        return "insufficient"
    lo, hi = e.ci
    if lo > -QUALITY_MARGIN and hi < QUALITY_MARGIN:
        return "matches beam"
    return e.verdict("worse", "better")


def compute_verdict(e: Estimate) -> str:
    """(b): CI below 1 -> cheaper (above 1: not cheaper)."""
    return e.verdict("not cheaper", "cheaper")


def tempo_verdict(e: Estimate) -> str:
    """(c): CI below 0 -> better than TEMPO (above 0: not better than TEMPO)."""
    return e.verdict("not better than TEMPO", "better than TEMPO")


def pays_off(quality: str | None, compute: str) -> str:
    """The hybrid "pays off" when (a) is *matches beam* or *better* and (b) *cheaper*."""
    if quality is None:
        return "awaits the judge"
    if "insufficient" in (quality, compute):
        return "insufficient"
    good = quality in ("matches beam", "better") and compute == "cheaper"
    return "pays off" if good else "does not pay off"


def verdicts(cfg: Config, runs: pd.DataFrame, judge: pd.DataFrame | None) -> list[dict[str, Any]]:
    """The four R8 rows (``id, question, mean, ci, n, verdict``); quality needs ``judge``."""
    est: dict[str, Any] = {"min_n": cfg.min_prompts, "seed": cfg.seed, "level": LEVEL}
    cost = _wide(runs, "forwarded_per_token")
    ratio = cost[HYBRID] / cost[BEAM] if {HYBRID, BEAM} <= set(cost) else pd.Series(dtype=float)
    e_b = estimate(ratio.to_numpy(float), null=1.0, **est)
    b = compute_verdict(e_b)
    at95 = {**est, "level": 0.95}
    matched = (
        cost[TEMPO] / cost[MATCHED] if {TEMPO, MATCHED} <= set(cost) else pd.Series(dtype=float)
    )
    e_m = estimate(matched.to_numpy(float), null=1.0, **at95)
    compute_matched = _estimate_row("25.compute_matched", e_m, e_m.verdict("more", "less"))
    if judge is None or judge.empty:
        wait = "awaits the judge"
        return [
            _estimate_row("8.3.quality_vs_beam", None, wait),
            _estimate_row("8.3.compute_vs_beam", e_b, b),
            _estimate_row("8.3.quality_vs_tempo", None, wait),
            _estimate_row("8.3.pays_off", None, pays_off(None, b)),
            _estimate_row("25.quality_matched", None, wait),
            compute_matched,
        ]
    nll = _wide(judge, "judge_nll")
    vs_greedy = nll.sub(nll[GREEDY], axis=0)  # quality: judged NLL minus greedy's
    e_a = estimate((vs_greedy[HYBRID] - vs_greedy[BEAM]).to_numpy(float), **est)
    e_c = estimate((vs_greedy[HYBRID] - vs_greedy[TEMPO]).to_numpy(float), **est)
    a = quality_verdict(e_a)
    if MATCHED in vs_greedy:
        e_q = estimate((vs_greedy[TEMPO] - vs_greedy[MATCHED]).to_numpy(float), **at95)
        q = e_q.verdict("TEMPO worse at matched compute", "TEMPO better at matched compute")
    else:
        e_q, q = None, "not run"
    return [
        _estimate_row("8.3.quality_vs_beam", e_a, a),
        _estimate_row("8.3.compute_vs_beam", e_b, b),
        _estimate_row("8.3.quality_vs_tempo", e_c, tempo_verdict(e_c)),
        _estimate_row("8.3.pays_off", None, pays_off(a, b)),
        _estimate_row("25.quality_matched", e_q, q),
        compute_matched,
    ]


def _judge(tables: dict[str, pd.DataFrame], out: Path) -> pd.DataFrame | None:
    """The judge's table: a record's ``judge`` table, or a run's ``OUT/judge.csv``.

    A directory of record (no ``units/``) reads only its hash-checked tables.

    Raises:
        ValueError: the table lacks a column or the greedy rows, or has a (prompt, method)
            twice (named).
    """
    if "judge" in tables:
        judge = tables["judge"]
    elif (out / "units").is_dir() and (out / JUDGE_FILE).is_file():
        judge = pd.read_csv(out / JUDGE_FILE)
    else:
        return None
    missing = [c for c in ("prompt_id", "method", "judge_nll") if c not in judge]
    if missing:
        raise ValueError(f"the judge table has no column {missing[0]!r}")
    if GREEDY not in set(judge["method"]):
        raise ValueError("the judge table has no greedy rows: quality is judged NLL minus greedy's")
    dup = judge.duplicated(["prompt_id", "method"])
    if dup.any():
        r = judge[dup].iloc[0]
        raise ValueError(f"the judge table has ({r['prompt_id']}, {r['method']}) twice")
    return judge


def summarize(cfg: Config, tables: dict[str, pd.DataFrame], out: Path) -> str:
    """The R8 verdicts -> ``summary.json``; the report text (``report.txt``)."""
    runs = tables.get("runs", pd.DataFrame(columns=["prompt_id", "method", "forwarded_per_token"]))
    judge = _judge(tables, out)
    rows = verdicts(cfg, runs, judge)
    means = {
        m: {
            c: float(runs.loc[runs["method"] == m, c].astype(float).mean())
            for c in ("forwarded_per_token", "generated_tokens", "wall_seconds")
            if c in runs
        }
        for m in METHODS
    }
    judged = judge is not None and not judge.empty
    if judged:
        assert judge is not None
        for m, v in judge.groupby("method")["judge_nll"]:
            means.setdefault(str(m), {})["judge_nll"] = float(v.astype(float).mean())
    n_prompts = int(runs["prompt_id"].nunique()) if "prompt_id" in runs else 0
    atomic_write_json(
        out / "summary.json",
        jsonable(
            {
                "n_prompts": n_prompts,
                "judged": judged,
                "level": LEVEL,
                "config": {
                    "max_steps": cfg.max_steps,
                    "num_beams": cfg.num_beams,
                    "candidate_threshold": cfg.candidate_threshold,
                    "tempo": cfg.tempo_config(isolate=True).to_dict(),
                },
                "methods": means,
                "verdicts": rows,
            }
        ),
    )
    lines = [
        f"hybrid (R8, docs/preregistration.md): {n_prompts} prompts; threshold beam search "
        f"k = {cfg.num_beams}, τ = {cfg.candidate_threshold:g}; {cfg.max_steps} steps",
        "",
        "method: tokens forwarded / generated token, generated tokens, seconds"
        + (", judged NLL" if judged else ""),
    ]
    for m, v in means.items():
        cols = ("forwarded_per_token", "generated_tokens", "wall_seconds", "judge_nll")
        lines.append(f"  {m}: " + ", ".join(fmt(v[c]) for c in cols if c in v))
    lines.append("")
    for r in rows:
        if "direction" in r:
            e = Estimate(
                **{k: r[k] for k in Estimate.__dataclass_fields__} | {"ci": tuple(r["ci"])}
            )
            lines.append(
                f"{r['id']}: {r['question']}: {fmt_estimate(e)} at {100 * e.level:.1f}% "
                f"-> {r['verdict']}"
            )
        else:
            lines.append(f"{r['id']}: {r['question']}: {r['verdict']}")
    if not judged:
        lines += [
            "",
            "compute only: quality awaits the judge (tempo-lens judge --output-dir RUN "
            "--table runs.csv --keys method --judge-model gemma-3-270m, then "
            "--summarize-only)",
        ]
    return "\n".join(lines)


SPEC = ExperimentSpec(
    name="hybrid",
    description=(__doc__ or "").splitlines()[0],
    config=Config,
    run_unit=run_unit,
    summarize=summarize,
    prompts_resource="research_48.csv",  # the pre-registered sample (R8)
    quick={"max_steps": 4},
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run from the command line (:func:`tempo_lens.runner.run_cli`); 0 on success."""
    return run_cli(SPEC, argv)


if __name__ == "__main__":
    raise SystemExit(main())
