"""Batched generation on the real default model: each row equals ``generate`` alone."""

from __future__ import annotations

import pytest
import torch

from tempo_lens import PruningConfig, RelativeRule, TempoConfig, generate, generate_batch
from tests.model.test_batch import compare

PROMPTS = ["The cat sat on the", "Once upon a time, in a small village,", "In 1969, the first"]


def test_batch_rows_equal_single_on_default_model(default_model) -> None:
    cfg = TempoConfig(
        selection_threshold=0.1, max_steps=8, prune=PruningConfig(rule=RelativeRule(ratio=0.5))
    )
    batch = generate_batch(default_model, PROMPTS, cfg)
    worst = 0.0
    for prompt, row in zip(PROMPTS, batch, strict=True):
        worst = max(worst, compare(row, generate(default_model, prompt, cfg)))
    assert max(max(t.widths()) for t in batch) > 1
    print(f"\nmax |p_batch - p_single| on the default model: {worst:.2e}")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_batch_rows_equal_single_on_cuda() -> None:
    from tempo_lens import load_model

    cuda = load_model(device="cuda")
    cfg = TempoConfig(selection_threshold=0.1, max_steps=6)
    for prompt, row in zip(PROMPTS, generate_batch(cuda, PROMPTS, cfg), strict=True):
        compare(row, generate(cuda, prompt, cfg))
