"""Token trees on the real default model (SmolLM2-135M): the tree state against Hugging
Face with the 4-D ancestor mask and depth positions (HookedTransformer and bridge), tree
beam search against Hugging Face ``generate(num_beams=4)``, and tree speculative decoding
against greedy decoding (token for token), with its accepted tokens per forward."""

from __future__ import annotations

import time

import pytest
import torch

import tempo_lens as tl
from tempo_lens import SequenceState, attach, load_model
from tempo_lens.backends import HAS_HOOKED_TRANSFORMER
from tests.model.hf_oracle import hf_logits

pytestmark = pytest.mark.slow

PROMPTS = ("The capital of France is", "Once upon a time, there was a")
SPEC_PROMPTS = (
    "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n\ndef mul(a, b):",
    "The cat sat on the mat. The dog sat on the log. The bird sat on the",
    "Once upon a time, there was a",
)


def _tree(model) -> SequenceState:
    """A beam-like tree and a draft tree with a pruned branch under 'The cat sat on the'."""
    tok = model.to_single_token
    st = SequenceState(model.to_tokens("The cat sat on the")[0].tolist())
    last = len(st) - 1
    a = st.append_set([tok(" mat"), tok(" floor"), tok(" bed")], parents=[last] * 3)
    b = st.append_set([tok("."), tok(","), tok(" and")], parents=[a[0], a[0], a[2]])
    f = len(st)
    words = [" It", " The", " was", " dog", " cat"]
    st.append_set([tok(w) for w in words], parents=[b[0], b[0], f, f + 1, b[2]])
    st.prune(f + 3, at_step=2)
    return st


@pytest.fixture(scope="module")
def bridge_default():
    pytest.importorskip("transformer_lens.model_bridge")
    return load_model(backend="bridge")


HOOKED = pytest.mark.skipif(not HAS_HOOKED_TRANSFORMER, reason="HookedTransformer needs TL 3.x")


@pytest.mark.parametrize(
    "backend",
    [pytest.param("hooked", marks=HOOKED), pytest.param("bridge", marks=pytest.mark.bridge)],
)
def test_default_tree_matches_hf_oracle(request, hf_default, backend) -> None:
    model = request.getfixturevalue("default_model" if backend == "hooked" else "bridge_default")
    st = _tree(model)
    with attach(model, st), torch.no_grad():
        ours = model(st.tokens_tensor())
    diff = (ours - hf_logits(hf_default, st)).abs().max().item()
    print(f"{backend}: tree max |Δlogit| = {diff:.2e}")
    assert diff <= (1e-4 if backend == "hooked" else 5e-5)


@pytest.mark.bridge
def test_default_bridge_tree_decoders(bridge_default, hf_default) -> None:
    """On the bridge: tree beam search equals HF generate(num_beams=4), tree speculative
    decoding equals greedy."""
    prompt = PROMPTS[0]
    ids = bridge_default.to_tokens(prompt)
    eos = bridge_default.tokenizer.eos_token_id
    with torch.no_grad():
        out = hf_default.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
            num_beams=4, eos_token_id=eos, pad_token_id=eos,
        )  # fmt: skip
    res = tl.tree_beam_search(bridge_default, prompt, max_steps=8, num_beams=4)
    assert (
        res.token_ids + ([eos] if res.stop_reason == "eos" else [])
        == out[0, ids.shape[1] :].tolist()
    )
    want = tl.greedy(bridge_default, SPEC_PROMPTS[1], max_steps=20).clean_ids()
    spec = tl.tree_speculative(bridge_default, SPEC_PROMPTS[1], max_steps=20)
    assert spec.token_ids == want and spec.accepted_per_forward > 1


@HOOKED
@pytest.mark.parametrize("prompt", PROMPTS)
def test_default_tree_beam_equals_hf_generate(default_model, hf_default, prompt) -> None:
    ids = default_model.to_tokens(prompt)
    eos = default_model.tokenizer.eos_token_id
    with torch.no_grad():
        out = hf_default.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
            num_beams=4, eos_token_id=eos, pad_token_id=eos,
        )  # fmt: skip
    res = tl.tree_beam_search(default_model, prompt, max_steps=10, num_beams=4)
    assert (
        res.token_ids + ([eos] if res.stop_reason == "eos" else [])
        == out[0, ids.shape[1] :].tolist()
    )


@HOOKED
@pytest.mark.parametrize("prompt", SPEC_PROMPTS)
def test_default_tree_speculative_equals_greedy(default_model, prompt) -> None:
    t0 = time.perf_counter()
    want = tl.greedy(default_model, prompt, max_steps=40).clean_ids()
    t1 = time.perf_counter()
    res = tl.tree_speculative(default_model, prompt, max_steps=40)
    t2 = time.perf_counter()
    print(
        f"{prompt[:30]!r}: {len(want)} tokens, {res.accepted_per_forward:.2f} accepted per "
        f"forward, {res.forwards_per_token:.2f} forwards per token, greedy {t1 - t0:.2f} s, "
        f"tree {t2 - t1:.2f} s"
    )
    assert res.token_ids == want
