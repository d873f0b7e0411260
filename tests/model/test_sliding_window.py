"""Sliding-window (local) attention under TEMPO: the window is by *logical* distance.

Oracles: a plain forward over ``context + member`` (sibling equivalence), and a Hugging
Face Gemma 3 given explicit ``position_ids`` and one 4-D mask per layer type, the
sliding one encoding ``logical[q] - logical[k] < window`` (written out in
``hf_oracle.reference_mask``). Sequences are 3-4x longer than the window.
"""

from __future__ import annotations

import pytest
import torch

from tempo_lens import (
    PruningConfig,
    RelativeRule,
    SequenceState,
    TempoConfig,
    attach,
    generate,
    greedy,
    make_tiny_model,
)
from tempo_lens.backends import UnsupportedAttentionError
from tempo_lens.backends.hooked import attention_windows
from tempo_lens.hooks import tempo_fwd_hooks

from .hf_oracle import hf_logits, reference_mask, tiny_gemma3_pair
from .test_generation import assert_same_trace
from .test_oracle_hf import build

PROMPT = [1, 2, 3, 4, 5, 6]
PRUNE = PruningConfig(rule=RelativeRule(ratio=0.9))
MEMBERS = [7, 8, 9, 10]


@pytest.fixture(scope="module")
def local_model():
    return make_tiny_model(window_size=4, init_scale=0.5)


@pytest.fixture(scope="module")
def gemma():
    return tiny_gemma3_pair(seed=2, window=4)


def test_issue_case_equals_plain_forward(local_model) -> None:
    """Issue 15: window 4, 6-token prompt + one isolated set of 4 — each member's logits
    equal a plain forward over prompt + that member (was 2.4 to 13 off)."""
    st = SequenceState.from_sets(PROMPT, [MEMBERS], isolate=True)
    with attach(local_model, st), torch.no_grad():
        ours = local_model(st.tokens_tensor())[0]
    for k, t in enumerate(MEMBERS):
        with torch.no_grad():
            ref = local_model(torch.tensor([PROMPT + [t]]))[0, -1]
        assert (ours[len(PROMPT) + k] - ref).abs().max().item() <= 1e-4


def test_hooks_without_attach_are_refused(local_model) -> None:
    """Hooks attached by hand leave the backend's physical window on: refused, not wrong."""
    st = SequenceState.from_sets(PROMPT, [MEMBERS], isolate=True)
    with pytest.raises(UnsupportedAttentionError, match="logical distance"), torch.no_grad():
        local_model.run_with_hooks(st.tokens_tensor(), fwd_hooks=tempo_fwd_hooks(local_model, st))
    assert attention_windows(local_model) == [4, 4]  # restored after every block
    with attach(local_model, st):
        assert attention_windows(local_model) == [4, 4]
        assert local_model.cfg.window_size != 4  # the physical mask is off inside


def test_plain_sequence_unchanged(local_model) -> None:
    """On a sequence with one token per step the logical window is the physical one."""
    ids = list(range(1, 15))
    st = SequenceState.from_prompt(ids)
    with torch.no_grad():
        plain = local_model(torch.tensor([ids]))
        with attach(local_model, st):
            ours = local_model(st.tokens_tensor())
    assert torch.equal(plain, ours)


def test_gemma3_tiny_matches_hf_plain(gemma) -> None:
    hf, model = gemma
    assert attention_windows(model) == [4, 4, None]
    ids = torch.randint(0, 64, (1, 17))
    with torch.no_grad():
        assert (model(ids) - hf(ids).logits).abs().max().item() <= 1e-4


@pytest.mark.parametrize("scheme", ["shared", "fractional", "distinct"])
@pytest.mark.parametrize("isolate", [True, False])
@pytest.mark.parametrize("prune", [False, True])
def test_gemma3_tiny_matches_hf(gemma, scheme: str, isolate: bool, prune: bool) -> None:
    """Per-layer RoPE bases, q/k-norm, GQA and the logical window against HF (16 tokens,
    window 4)."""
    hf, model = gemma
    st = build(scheme, isolate, prune)
    assert len(st) >= 4 * 4
    with attach(model, st), torch.no_grad():
        ours = model(st.tokens_tensor())
    assert (ours - hf_logits(hf, st)).abs().max().item() <= 1e-4


def test_window_choice_matters_on_this_sequence(gemma) -> None:
    """The test sequence separates logical from physical windows: HF with the window on
    physical indices disagrees with the hooked model."""
    hf, model = gemma
    st = build("shared", isolate=True, prune=False)
    logical = reference_mask(st, window=4)
    n = len(st)
    physical = reference_mask(st) & (torch.arange(n)[None, :] > torch.arange(n)[:, None] - 4)
    assert bool((logical & ~physical).any())
    with attach(model, st), torch.no_grad():
        ours = model(st.tokens_tensor())
    mask = torch.zeros(n, n).masked_fill(~physical, float("-inf"))[None, None]
    full = torch.zeros(n, n).masked_fill(~reference_mask(st), float("-inf"))[None, None]
    positions = torch.tensor([[float(p) for p in st.logical]])
    with torch.no_grad():
        phys = hf(
            input_ids=st.tokens_tensor(),
            attention_mask={"full_attention": full, "sliding_attention": mask},
            position_ids=positions,
        ).logits
    assert (ours - phys).abs().max().item() > 1e-2


@pytest.mark.parametrize("isolate", [True, False])
@pytest.mark.parametrize("prune", [None, PRUNE])
def test_gemma3_tiny_cache_and_greedy(gemma, isolate: bool, prune) -> None:
    """Oracles 5 and 6 on a windowed model, generating well past the window."""
    _, model = gemma
    cfg = TempoConfig(selection_threshold=0.005, max_steps=10, isolate=isolate, prune=prune)
    a = generate(model, [1, 2, 3], cfg)
    b = generate(model, [1, 2, 3], cfg, use_kv_cache=False)
    assert max(a.widths()) > 1 and len(a.tokens) > 3 * 4
    if prune:
        assert a.summary()["pruned"] > 0
    assert_same_trace(a, b)
    tempo = generate(model, [1, 2, 3], TempoConfig(selection_threshold=1.0, max_steps=10))
    assert tempo.clean_ids() == greedy(model, [1, 2, 3], max_steps=10).clean_ids()


@pytest.mark.parametrize(
    ("change", "match"),
    [({"use_logn_attn": True}, "use_logn_attn"), ({"attention_dir": "bidirectional"}, "causal")],
)
def test_unreproducible_attention_is_refused(local_model, change: dict, match: str) -> None:
    """Variants the hooks cannot reproduce exactly raise one clear error up front."""
    st = SequenceState.from_sets(PROMPT, [MEMBERS], isolate=True)
    old = {k: getattr(local_model.cfg, k) for k in change}
    try:
        for k, v in change.items():
            setattr(local_model.cfg, k, v)
        with pytest.raises(UnsupportedAttentionError, match=match), attach(local_model, st):
            pass
    finally:
        for k, v in old.items():
            setattr(local_model.cfg, k, v)
