"""A hand-built trace for display tests: ``The cat sat on the[ mat/~ floor~].``"""

from __future__ import annotations

from tempo_lens.state import SequenceState
from tempo_lens.trace import Candidate, PruneDecision, StepRecord, Trace


def hand_trace() -> Trace:
    """Prompt ``The cat sat on the``; step 0 = {" mat" 0.6, " floor" 0.3}; step 1 = {"."}.

    ``" floor"`` (index 6) is pruned at step 1 with score 0.05 against 0.4.
    """
    state = SequenceState.from_sets([10, 11, 12, 13, 14], [[20, 21], [22]])
    state.prune(6, at_step=1)
    decision = [
        PruneDecision(5, 20, " mat", 0, 0.4, 0.4, False, "relative(0.5)"),
        PruneDecision(6, 21, " floor", 0, 0.05, 0.4, True, "relative(0.5)"),
    ]
    steps = [
        StepRecord(
            step=0,
            threshold=0.2,
            readout="mixture",
            candidates=[
                Candidate(20, " mat", 0.6, True),
                Candidate(21, " floor", 0.3, True),
            ],
            indices=[5, 6],
            probabilities=[0.6, 0.3],
        ),
        StepRecord(
            step=1,
            threshold=0.2,
            readout="mixture",
            candidates=[Candidate(22, ".", 0.9, True)],
            indices=[7],
            pruning=decision,
            probabilities=[0.9],
        ),
    ]
    return Trace(
        prompt="The cat sat on the",
        model="hand",
        method="tempo",
        config={},
        state=state,
        texts=["The", " cat", " sat", " on", " the", " mat", " floor", "."],
        steps=steps,
    )


LABELS = ["The", " cat", " sat", " on", " the", " mat|0", "~ floor~|0", ".|1"]
