"""The fast path on the real default model (SmolLM2-135M): bit-identical logits, with and
without the KV cache and inside ``attach``, and back to stock when switched off."""

from __future__ import annotations

import pytest
import torch

from tempo_lens import SequenceState, attach, load_model
from tempo_lens.backends import make_kv_cache
from tempo_lens.backends.fast import disable_fast_path, fast_path_status, fast_weights

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model():
    return load_model()


def _decode(model, ids: list[int], set_members: list[int]) -> torch.Tensor:
    """Prefill ``ids`` with TEMPO hooks attached, then one parallel set through the cache."""
    state = SequenceState(ids, isolate=True)
    cache = make_kv_cache(model)
    with attach(model, state), torch.no_grad():
        head = state.tokens_tensor()
        first = model(head, past_kv_cache=cache, attention_mask=torch.ones_like(head))
        state.append_set(set_members)
        new = state.tokens_tensor()[:, len(ids) :]
        out = model(new, past_kv_cache=cache, attention_mask=torch.ones_like(new))
    return torch.cat([first, out], dim=1)


def test_default_model_fast_path_is_bit_identical(model) -> None:
    ids = model.to_tokens("The quick brown fox jumps over the lazy", prepend_bos=False)[0].tolist()
    members = model.to_tokens(" dog cat fox", prepend_bos=False)[0].tolist()
    with torch.no_grad():
        stock_full = model(torch.tensor([ids]))
    stock_cached = _decode(model, ids, members)
    with fast_weights(model):
        assert fast_path_status(model).enabled
        assert len(fast_path_status(model).fast) == 7 * model.cfg.n_layers + 1
        with torch.no_grad():
            fast_full = model(torch.tensor([ids]))
        fast_cached = _decode(model, ids, members)
    assert torch.equal(stock_full, fast_full)
    assert torch.equal(stock_cached, fast_cached)
    assert all(p.is_contiguous() for p in model.parameters())
    assert not disable_fast_path(model).fast
