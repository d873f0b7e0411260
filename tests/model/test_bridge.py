"""The bridge backend: TEMPO hooks on a TransformerBridge around a Hugging Face model.

Oracle: the same Hugging Face model given explicit ``position_ids`` and 4-D masks
(``hf_oracle``). The bridge computes with Hugging Face's own modules, so agreement is
expected to float32 rounding (tolerance 3e-5, tighter than the HookedTransformer's 1e-4;
RoPE at a physical position followed by the re-rotation is not bit-identical to RoPE at
the logical position). The bridge wraps the HF modules it is given in place, so it gets
a deep copy and the oracle runs the untouched original.
"""

from __future__ import annotations

import copy

import pytest
import torch

from tempo_lens import SequenceState, attach
from tempo_lens.backends import UnsupportedAttentionError
from tempo_lens.hooks import tempo_fwd_hooks

from .hf_oracle import bridge_of, hf_logits, tiny_gemma3_hf, tiny_llama_hf, tiny_tokenizer
from .test_oracle_hf import build

pytestmark = pytest.mark.bridge

TOL = 3e-5


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def pair(request, tmp_path_factory):
    tok = tiny_tokenizer(str(tmp_path_factory.mktemp("tok")))
    hf = tiny_llama_hf(seed=1) if request.param == "llama" else tiny_gemma3_hf(seed=2)
    return hf, bridge_of(copy.deepcopy(hf), tok)


def test_plain_forward_is_hf(pair) -> None:
    hf, bridge = pair
    ids = torch.randint(0, 64, (1, 16))
    with torch.no_grad():
        assert (bridge(ids) - hf(ids).logits).abs().max().item() <= TOL


@pytest.mark.parametrize("scheme", ["shared", "fractional", "distinct"])
@pytest.mark.parametrize("isolate", [True, False])
@pytest.mark.parametrize("prune", [False, True])
def test_bridge_matches_hf(pair, scheme: str, isolate: bool, prune: bool) -> None:
    hf, bridge = pair
    st = build(scheme, isolate, prune)
    with attach(bridge, st), torch.no_grad():
        ours = bridge(st.tokens_tensor())
    assert (ours - hf_logits(hf, st)).abs().max().item() <= TOL


@pytest.mark.parametrize("disabled", ["rotate", "mask"])
def test_bridge_oracle_catches_a_disabled_hook(pair, disabled: str) -> None:
    hf, bridge = pair
    st = build("shared", isolate=True, prune=True)
    with attach(bridge, st, **{disabled: False}), torch.no_grad():
        ours = bridge(st.tokens_tensor())
    assert (ours - hf_logits(hf, st)).abs().max().item() > 1e-2


def test_bridge_window_needs_attach(tmp_path) -> None:
    """Hooks attached by hand leave HF's physical sliding window on: refused."""
    hf = tiny_gemma3_hf(seed=2)
    bridge = bridge_of(hf, tiny_tokenizer(str(tmp_path)))
    st = build("shared", isolate=True, prune=False)
    with pytest.raises(UnsupportedAttentionError, match="logical distance"), torch.no_grad():
        bridge.run_with_hooks(st.tokens_tensor(), fwd_hooks=tempo_fwd_hooks(bridge, st))
    assert hf.config.sliding_window == 4  # restored


def test_bridge_capture_sees_isolation(pair) -> None:
    _, bridge = pair
    st = SequenceState.from_sets([1, 2, 3], [[4, 5], [6]], isolate=True)
    with attach(bridge, st), torch.no_grad():
        _, cache = bridge.run_with_cache(st.tokens_tensor())
    assert cache["blocks.0.attn.hook_pattern"][0, :, 4, 3].abs().max().item() == 0.0
    assert cache["blocks.0.attn.hook_pattern"][0, :, 5, 3].abs().max().item() > 0.0


def test_new_tokens_without_their_cache_are_refused(pair) -> None:
    """Forwarding only the new tokens without the cache that holds the rest (KV-cache
    generation is ``tempo_lens.generate``, tested in test_bridge_generate): the mask hook
    sees fewer keys than the state holds and raises instead of computing."""
    from tempo_lens import StateMismatchError

    _, bridge = pair
    st = SequenceState.from_prompt([1, 2, 3, 4, 5], isolate=True)
    with attach(bridge, st), torch.no_grad():
        bridge(st.tokens_tensor())
        idx = st.append_set([7, 9])
        with pytest.raises(StateMismatchError):
            bridge(st.tokens_tensor()[:, idx[0] :])
