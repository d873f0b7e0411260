"""A hand-built trace for display tests: ``The cat sat on the[ mat/~ floor~].``"""

from __future__ import annotations

from tempo_lens.trace import Candidate, PruneDecision, StepRecord, TokenRecord, Trace


def hand_trace() -> Trace:
    """Prompt ``The cat sat on the``; step 0 = {" mat" 0.6, " floor" 0.3}; step 1 = {"."}.

    ``" floor"`` (index 6) is pruned at step 1 with score 0.05 against 0.4.
    """
    prompt = ["The", " cat", " sat", " on", " the"]
    tokens = [
        TokenRecord(index=i, token_id=10 + i, text=t, step=-1, rank=0, logical_position=float(i))
        for i, t in enumerate(prompt)
    ]
    tokens += [
        TokenRecord(5, 20, " mat", 0, 0, 5.0, None, 0.6),
        TokenRecord(6, 21, " floor", 0, 1, 5.0, 1, 0.3),
        TokenRecord(7, 22, ".", 1, 0, 6.0, None, 0.9),
    ]
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
        ),
        StepRecord(
            step=1,
            threshold=0.2,
            readout="mixture",
            candidates=[Candidate(22, ".", 0.9, True)],
            indices=[7],
            pruning=decision,
        ),
    ]
    return Trace(
        prompt="The cat sat on the",
        model="hand",
        method="tempo",
        config={},
        tokens=tokens,
        steps=steps,
        prompt_length=5,
        isolate=True,
    )


LABELS = ["The", " cat", " sat", " on", " the", " mat|0", "~ floor~|0", ".|1"]
