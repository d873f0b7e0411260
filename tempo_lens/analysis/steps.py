"""Step-level analyses of a trace: parallel width, the run summary, retroactive pruning.

* :func:`parallel_widths` — one row per step: threshold, candidates, members appended,
  members later pruned.
* :func:`run_summary` — the counts a reader wants first (``total_steps``,
  ``parallel_steps``, ``max_parallel_width``, ``average_parallel_width``, pruned counts),
  extending :meth:`Trace.summary`.
* :func:`pruning_analysis` — every pruning decision generation made, with its score
  (``PruneDecision``), pruning rates per judging step, which tokens were pruned, and the
  survival-analysis table (attention received vs pruned), when attention was captured.
* :func:`poorest_step` / :func:`step_alternatives` — the least confident step (lowest
  probability of its top candidate) and every candidate of a step with its fate (appended,
  capped, pruned, on the clean path), for debugging one generation;
* :func:`rejudge` — counterfactual pruning on the same trajectory: every set the trace
  judged, re-judged under another :class:`~tempo_lens.PruningConfig` (other layers,
  aggregation or rule) from the captured attention, through the generation loop's own
  :func:`~tempo_lens.generation.pruner.judge_members`, the composition generation uses.

Examples:
    >>> pa = pruning_analysis(trace, received=received_attention(data))  # doctest: +SKIP
    >>> pa.rates                                                        # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from tempo_lens.analysis.received import ReceivedAttention
from tempo_lens.generation.pruner import judge_members
from tempo_lens.io import jsonable
from tempo_lens.pruning import PruningConfig
from tempo_lens.trace import Trace

if TYPE_CHECKING:
    from tempo_lens.hooks.capture import AttentionData

__all__ = [
    "PruningAnalysis",
    "parallel_widths",
    "poorest_step",
    "pruning_analysis",
    "rejudge",
    "run_summary",
    "step_alternatives",
]


def parallel_widths(trace: Trace) -> pd.DataFrame:
    """Rows ``step, threshold, n_candidates, width, fell_back, capped, pruned_later``."""
    recs = []
    for rec in trace.steps:
        recs.append(
            {
                "step": rec.step,
                "threshold": rec.threshold,
                "n_candidates": len(rec.candidates),
                "width": len(rec.indices),
                "fell_back": rec.fell_back,
                "capped": rec.capped,
                "pruned_later": sum(trace.token(i).pruned_at_step is not None for i in rec.indices),
            }
        )
    cols = ["step", "threshold", "n_candidates", "width", "fell_back", "capped", "pruned_later"]
    return pd.DataFrame(recs, columns=cols)


def poorest_step(trace: Trace, *, min_candidates: int = 1) -> int:
    """The step whose top candidate had the lowest probability (ties: the earliest).

    The probability is the recorded selection probability of the step's most probable
    candidate, i.e. the max of the distribution the set was selected from.

    Args:
        trace: A TEMPO trace.
        min_candidates: Only steps with at least this many candidates count (2: steps
            that had alternatives).

    Raises:
        ValueError: no step has ``min_candidates`` candidates.
    """
    top = {
        s: max(c.probability for c in rec.candidates)
        for s, rec in enumerate(trace.steps)
        if len(rec.candidates) >= min_candidates
    }
    if not top:
        raise ValueError(f"no step of the trace has {min_candidates} or more candidates")
    return min(top, key=lambda s: (top[s], s))


def step_alternatives(trace: Trace, step: int) -> pd.DataFrame:
    """Every candidate of ``step`` (``p >= tau``, or the top-1 fallback) and its fate.

    Returns:
        Rows ``rank, token_id, text, probability, appended, index, pruned_at_step,
        clean`` in candidate order (``index`` = physical index of an appended member,
        else -1; ``clean`` = the member is the clean path's token of that step).

    Raises:
        ValueError: ``step`` outside the trace.
    """
    if not 0 <= step < len(trace.steps):
        raise ValueError(f"step {step} outside the trace's {len(trace.steps)} steps")
    rec = trace.steps[step]
    by_id = {trace.state.token_ids[i]: i for i in rec.indices}
    clean = trace.clean_indices()[step]
    rows = []
    for r, c in enumerate(rec.candidates):
        i = by_id.get(c.token_id, -1) if c.appended else -1
        rows.append(
            {
                "rank": r,
                "token_id": c.token_id,
                "text": c.text,
                "probability": c.probability,
                "appended": c.appended,
                "index": i,
                "pruned_at_step": trace.state.pruned_at[i] if i >= 0 else None,
                "clean": i == clean,
            }
        )
    out = pd.DataFrame(rows, columns=ALTERNATIVE_COLUMNS)
    out["pruned_at_step"] = out["pruned_at_step"].astype("Int64")
    return out


ALTERNATIVE_COLUMNS = [
    "rank",
    "token_id",
    "text",
    "probability",
    "appended",
    "index",
    "pruned_at_step",
    "clean",
]


def run_summary(trace: Trace) -> dict[str, Any]:
    """:meth:`Trace.summary` plus parallel-token and pruning counts."""
    out = dict(trace.summary())
    gen = [t for t in trace.tokens if t.step >= 0]
    widths = trace.widths()
    par = [t for t in gen if widths[t.step] > 1]
    decisions = [d for rec in trace.steps for d in rec.pruning]
    out.update(
        {
            "prompt_tokens": trace.prompt_length,
            "generated_tokens": len(gen),
            "parallel_tokens": len(par),
            "pruned_parallel_tokens": sum(t.pruned_at_step is not None for t in par),
            "pruning_decisions": len(decisions),
            "pruning_rate": (sum(d.pruned for d in decisions) / len(decisions))
            if decisions
            else None,
            "isolate": trace.isolate,
            "clean_text": trace.clean_text(),
            "bracket_text": trace.bracket_text(),
        }
    )
    return out


@dataclass
class PruningAnalysis:
    """Pruning decisions and their context.

    Attributes:
        decisions: Every decision: ``judged_at, set_step, index, text, score, best_score,
            relative_score (score / best_score), pruned, rule``.
        rates: Per judging step: ``judged_at, n_judged, n_pruned, rate``.
        pruned: The pruned tokens: ``index, text, step, rank, pruned_at_step, probability``.
        survival: One row per member of a parallel set: ``index, text, set_step, rank,
            set_size, probability, received, n_receivers, score, pruned`` (``received`` from
            :func:`received_attention` when given, else NaN; ``score`` = the last pruning
            score it got, NaN if never judged).
    """

    decisions: pd.DataFrame
    rates: pd.DataFrame
    pruned: pd.DataFrame
    survival: pd.DataFrame

    @property
    def n_decisions(self) -> int:
        """Number of pruning decisions."""
        return len(self.decisions)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the result."""
        return jsonable(self)


def pruning_analysis(trace: Trace, received: ReceivedAttention | None = None) -> PruningAnalysis:
    """Collect the pruning decisions recorded in ``trace`` (see :class:`PruningAnalysis`)."""
    recs: list[dict[str, Any]] = []
    for rec in trace.steps:
        for d in rec.pruning:
            recs.append(
                {
                    "judged_at": rec.step,
                    "set_step": d.set_step,
                    "index": d.index,
                    "text": d.text,
                    "score": d.score,
                    "best_score": d.best_score,
                    "relative_score": d.score / d.best_score if d.best_score else float("nan"),
                    "pruned": d.pruned,
                    "rule": d.rule,
                }
            )
    dcols = [
        "judged_at",
        "set_step",
        "index",
        "text",
        "score",
        "best_score",
        "relative_score",
        "pruned",
        "rule",
    ]
    decisions = pd.DataFrame(recs, columns=dcols)
    if len(decisions):
        g = decisions.groupby("judged_at")["pruned"]
        rates = pd.DataFrame({"n_judged": g.size(), "n_pruned": g.sum().astype(int)}).reset_index()
        rates["rate"] = rates["n_pruned"] / rates["n_judged"]
    else:
        rates = pd.DataFrame(columns=["judged_at", "n_judged", "n_pruned", "rate"])
    pcols = ["index", "text", "step", "rank", "pruned_at_step", "probability"]
    pruned = pd.DataFrame(
        [{c: getattr(t, c) for c in pcols} for t in trace.tokens if t.pruned_at_step is not None],
        columns=pcols,
    )
    last_score = {int(r["index"]): float(r["score"]) for r in recs}
    widths = trace.widths()
    tok = received.tokens.set_index("index") if received is not None else None
    surv = []
    for t in trace.tokens:
        if t.step < 0 or widths[t.step] < 2:
            continue
        surv.append(
            {
                "index": t.index,
                "text": t.text,
                "set_step": t.step,
                "rank": t.rank,
                "set_size": widths[t.step],
                "probability": t.probability,
                "received": float(tok.at[t.index, "received"]) if tok is not None else float("nan"),
                "n_receivers": int(tok.at[t.index, "n_receivers"]) if tok is not None else 0,
                "score": last_score.get(t.index, float("nan")),
                "pruned": t.pruned_at_step is not None,
            }
        )
    scols = [
        "index",
        "text",
        "set_step",
        "rank",
        "set_size",
        "probability",
        "received",
        "n_receivers",
        "score",
        "pruned",
    ]
    return PruningAnalysis(decisions, rates, pruned, pd.DataFrame(surv, columns=scols))


REJUDGE_COLUMNS = [
    "judged_at",
    "set_step",
    "index",
    "score",
    "pruned",
    "recorded_score",
    "recorded_pruned",
]


def rejudge(trace: Trace, data: AttentionData, prune: PruningConfig, n_layers: int) -> pd.DataFrame:
    """Re-judge every set ``trace`` judged, under ``prune``, from the captured attention.

    The same members and voting queries as the recorded decision (its set's members, the
    queries of steps ``set_step + 1 .. judged_at``), scored over ``prune``'s layers with its
    aggregations and rule. Re-judging with the generation's own pruning config reproduces
    the recorded decisions.

    Args:
        trace: A generation with retroactive pruning.
        data: Its captured attention (every layer of ``prune`` captured).
        prune: The counterfactual pruning settings (``lookahead`` is ignored: the recorded
            judging step is kept).
        n_layers: Layers of the model (resolves ``"early"`` etc.).

    Returns:
        One row per judged member: ``judged_at, set_step, index, score, pruned,
        recorded_score, recorded_pruned``.

    Raises:
        ValueError: a layer of ``prune`` was not captured.
    """
    layers = prune.layers_for(n_layers)
    missing = [x for x in layers if x not in data.layers]
    if missing:
        raise ValueError(f"layers {missing} were not captured (captured: {data.layers})")
    pick = [data.layers.index(x) for x in layers]
    rows = []
    for rec in trace.steps:
        by_set: dict[int, list[Any]] = {}
        for d in rec.pruning:
            by_set.setdefault(d.set_step, []).append(d)
        for set_step, decisions in by_set.items():
            scores, verdict = judge_members(
                lambda s: data.rows(s)[pick],
                set_step,
                rec.step,
                [d.index for d in decisions],
                prune,
            )
            rows += [
                {
                    "judged_at": rec.step,
                    "set_step": set_step,
                    "index": d.index,
                    "score": score,
                    "pruned": pruned,
                    "recorded_score": d.score,
                    "recorded_pruned": d.pruned,
                }
                for d, score, pruned in zip(decisions, scores, verdict, strict=True)
            ]
    return pd.DataFrame(rows, columns=REJUDGE_COLUMNS)
