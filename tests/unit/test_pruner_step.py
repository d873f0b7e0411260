"""``Pruner.step`` on hand-made attention rows: the decisions and the prunes, by hand.

The batched-generation tests compare a batch with single generations, which share the
pruner, so a wrong decision record or a dropped ``hard`` flag passes them; these check
the values themselves (docs/mutation.md, batching run).
"""

from __future__ import annotations

import pytest
import torch

from tempo_lens import PruningConfig, RelativeRule, SequenceState
from tempo_lens.generation.pruner import Pruner
from tempo_lens.trace import PruneDecision


def state_and_rows(attention: list[float]) -> tuple[SequenceState, torch.Tensor]:
    """Prompt [1, 2] (0, 1), set 0 = [5, 6] (2, 3), set 1 = [7] (4); step 1's query row."""
    st = SequenceState.from_sets([1, 2], [[5, 6], [7]])
    return st, torch.tensor(attention, dtype=torch.float32).reshape(1, 1, 1, 5)


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_two_member_set_is_judged_and_recorded(mode) -> None:
    config = PruningConfig(rule=RelativeRule(ratio=0.5), layers=[0], mode=mode)
    pruner = Pruner(config)
    # the votes come from the configured layers only; the prompt's rows never vote, so
    # the (prompt x prompt per layer and head) rows are not kept
    assert list(pruner.recorder.layer_spec) == [0] and pruner.recorder.include_prompt is False
    st, row = state_and_rows([0.1, 0.1, 0.6, 0.1, 0.1])  # members 2: 0.6, 3: 0.1 < 0.5*0.6
    pruner.recorder.rows[1] = row
    decisions = pruner.step(st, 1, text=lambda t: f"<{t}>")
    rule = "relative(r=0.5), lookahead=1, layers=0, heads=mean, queries=mean"
    rule += ", hard" if mode == "hard" else ""
    assert all(isinstance(d, PruneDecision) for d in decisions)
    got = [(d.index, d.token_id, d.text, d.set_step, d.pruned, d.rule) for d in decisions]
    assert got == [(2, 5, "<5>", 0, False, rule), (3, 6, "<6>", 0, True, rule)]
    assert [d.score for d in decisions] == pytest.approx([0.6, 0.1])
    assert [d.best_score for d in decisions] == pytest.approx([0.6, 0.6])
    assert st.pruned_at == [None, None, None, 1, None]
    assert st.hard_pruned == ({3} if mode == "hard" else set())
    # soft at step 1: query 4 (step 1) still sees 3 and nothing is stale; hard: hidden
    # from every other query, and the cache is stale from index 4 on
    assert st.visibility([4]).tolist() == [[True, True, True, mode == "soft", True]]
    assert st.stale_from == (4 if mode == "hard" else None)


def test_a_set_with_one_survivor_is_not_judged() -> None:
    pruner = Pruner(PruningConfig(rule=RelativeRule(ratio=0.5), layers=[0]))
    st, row = state_and_rows([0.1, 0.1, 0.6, 0.1, 0.1])
    st.prune(3, at_step=0)
    pruner.recorder.rows[1] = row
    assert pruner.step(st, 1, text=str) == []
