"""Retroactive pruning of one sequence: the recorder and the judgement, composed once.

A :class:`Pruner` owns the :class:`~tempo_lens.hooks.recorder.AttentionRecorder` that keeps
the attention rows of each step's new queries, and, ``lookahead`` steps after a parallel
set was appended, judges its surviving members with :func:`judge_members` and prunes the
weak ones in the sequence state. :func:`judge_members` is the one composition of
:func:`tempo_lens.pruning.gather_votes` (the queries of steps ``set_step + 1 ..
judged_at`` against the members) and :func:`tempo_lens.pruning.judge` (layer/head
aggregation and the rule); :func:`tempo_lens.analysis.steps.rejudge` calls it on captured
attention, which is how re-judging with the generation's own config reproduces the
recorded decisions.

The walk of a :class:`~tempo_lens.pruning.PruningConfig`: ``TempoConfig.prune`` ->
``Pruner(config.prune)`` (``layers`` choose what the recorder keeps) -> ``Pruner.step``
-> :func:`judge_members` (``layer_agg``/``head_agg``/``rule``) -> ``SequenceState.prune``
(``mode``: soft or hard) -> :class:`~tempo_lens.trace.PruneDecision` (``rule.describe()``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tempo_lens.hooks.recorder import AttentionRecorder
from tempo_lens.pruning import PruningConfig, gather_votes, judge
from tempo_lens.state import SequenceState
from tempo_lens.trace import PruneDecision

__all__ = ["Pruner", "judge_members"]


def judge_members(
    rows: Callable[[int], Any],
    set_step: int,
    judged_at: int,
    members: Sequence[int],
    prune: PruningConfig,
) -> tuple[list[float], list[bool]]:
    """Scores and verdicts of a set's ``members`` from the queries that came after it.

    Args:
        rows: ``rows(step)`` -> that step's recorded attention rows (tensor or array),
            ``[layer, head_index, query, key]`` over the layers ``prune`` scores.
        set_step: The step that appended the set.
        judged_at: The step after whose forward the set is judged (inclusive: its queries
            vote).
        members: Physical indices of the members judged.
        prune: Aggregations and rule.

    Returns:
        ``(scores, pruned)``, one entry per member, in the given order.
    """
    votes = gather_votes(rows, range(set_step + 1, judged_at + 1), list(members))
    scores, verdict = judge(votes, prune)
    return [float(s) for s in scores], [bool(v) for v in verdict]


class Pruner:
    """Retroactive pruning of one TEMPO sequence during generation.

    Args:
        config: The pruning settings (``TempoConfig.prune``).

    Attributes:
        recorder: The attention recorder (a step observer of the generation; the batched
            forward re-records it after a hard prune's rebuild).
    """

    def __init__(self, config: PruningConfig) -> None:
        self.config = config
        self.recorder = AttentionRecorder(layers=config.layers, include_prompt=False)

    def step(
        self, state: SequenceState, step: int, text: Callable[[int], str]
    ) -> list[PruneDecision]:
        """Judge the set appended ``lookahead`` steps before ``step``; prune its weak members.

        Members are pruned in ``state`` (``hard`` mode hides them from every query).
        Returns one decision per judged member (none if fewer than two survive).
        """
        cfg = self.config
        target = step - cfg.lookahead
        self.recorder.forget_before(target + 1)
        if target < 0:
            return []
        members = [i for i in state.set_indices[target] if state.pruned_at[i] is None]
        if len(members) < 2:
            return []
        scores, verdict = judge_members(self.recorder.rows.__getitem__, target, step, members, cfg)
        best = max(scores)
        out = []
        for i, score, pruned in zip(members, scores, verdict, strict=True):
            if pruned:
                state.prune(i, at_step=step, hard=cfg.mode == "hard")
            out.append(
                PruneDecision(
                    index=i,
                    token_id=state.token_ids[i],
                    text=text(state.token_ids[i]),
                    set_step=target,
                    score=score,
                    best_score=float(best),
                    pruned=pruned,
                    rule=cfg.describe(),
                )
            )
        return out

    def observers(self) -> list[Any]:
        """The step observers generation attaches for this pruner (its recorder)."""
        return [self.recorder]
