"""Greedy and beam search on the default model equal Hugging Face generate on its weights."""

from __future__ import annotations

import pytest
import torch

import tempo_lens as tl

pytestmark = pytest.mark.slow

PROMPTS = ("The capital of France is", "Once upon a time, there was a")


@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_baselines_equal_hf_generate_default(default_model, hf_default, prompt, k) -> None:
    ids = default_model.to_tokens(prompt)
    eos = default_model.tokenizer.eos_token_id
    with torch.no_grad():
        out = hf_default.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
            num_beams=k, eos_token_id=eos, pad_token_id=eos,
        )  # fmt: skip
    want = out[0, ids.shape[1] :].tolist()
    if k == 1:
        trace = tl.greedy(default_model, prompt, max_steps=10)
    else:
        trace = tl.beam_search(default_model, prompt, max_steps=10, num_beams=k)
    got = trace.clean_ids() + ([eos] if trace.stop_reason == "eos" else [])
    assert got == want
