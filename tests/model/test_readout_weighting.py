"""The ``mixture`` readout is weighted by the selection probabilities (not uniformly).

An independent computation from plain forwards (isolated siblings: each member's next-token
distribution is the plain model's over ``prompt + [member]``) pins the weighting on a case
where the uniform and the probability-weighted mixtures select different sets.
"""

from __future__ import annotations

import pytest
import torch

from tempo_lens import TempoConfig, generate, make_tiny_model
from tempo_lens.selection import mixture_distribution, probabilities, select_from_probs

PROMPT, TAU = [1, 2, 3], 0.1


@pytest.mark.parametrize("use_kv_cache", [True, False])
def test_mixture_readout_weights_members_by_selection_probability(use_kv_cache: bool) -> None:
    model = make_tiny_model()
    cfg = TempoConfig(selection_threshold=TAU, max_steps=2, readout="mixture", isolate=True)
    trace = generate(model, PROMPT, cfg, use_kv_cache=use_kv_cache)
    first = trace.members(0)
    assert len(first) >= 2
    with torch.no_grad():
        rows = torch.stack(
            [probabilities(model(torch.tensor([PROMPT + [m.token_id]]))[0, -1]) for m in first]
        )
    weighted = mixture_distribution(rows, [m.probability for m in first])
    uniform = mixture_distribution(rows, [1.0] * len(first))
    want = select_from_probs(weighted, TAU, max_parallel=cfg.max_parallel)
    other = select_from_probs(uniform, TAU, max_parallel=cfg.max_parallel)
    assert want.token_ids != other.token_ids  # the case separates the two weightings
    assert tuple(m.token_id for m in trace.members(1)) == want.token_ids
    got = [m.probability for m in trace.members(1)]
    assert got == pytest.approx(list(want.probs), abs=1e-6)
