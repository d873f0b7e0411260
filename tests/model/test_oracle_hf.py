"""Oracle 3: a Hugging Face Llama with explicit position_ids and a 4-D mask agrees with the
hooked HookedTransformer built from the same weights (tiny random weights, no downloads)."""

from __future__ import annotations

import pytest
import torch

from tempo_lens import PositionScheme, SequenceState, attach

from .hf_oracle import hf_logits, tiny_llama_pair

SCHEMES = {
    "shared": PositionScheme(),
    "fractional": PositionScheme(member_offset=0.37),
    "distinct": PositionScheme(kind="distinct"),
}
PROMPT = [1, 2, 3, 4, 5]
SETS = [[7, 9, 11], [6], [12, 13], [14], [20, 21, 22, 23]]


def build(scheme: str, isolate: bool, prune: bool) -> SequenceState:
    st = SequenceState.from_prompt(PROMPT, isolate=isolate, positions=SCHEMES[scheme])
    for step, members in enumerate(SETS):
        idx = st.append_set(members)
        if prune and step == 2:
            st.prune(st.set_indices[0][1], at_step=2)  # pruned two steps after it entered
            st.prune(idx[1], at_step=2)  # pruned at its own step
    return st


@pytest.fixture(scope="module")
def pair():
    return tiny_llama_pair(seed=1)


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
@pytest.mark.parametrize("isolate", [True, False])
@pytest.mark.parametrize("prune", [False, True])
def test_hooked_matches_hf(pair, scheme: str, isolate: bool, prune: bool) -> None:
    hf, model = pair
    st = build(scheme, isolate, prune)
    with attach(model, st), torch.no_grad():
        ours = model(st.tokens_tensor())
    ref = hf_logits(hf, st)
    assert (ours - ref).abs().max().item() <= 1e-4


@pytest.mark.parametrize("disabled", ["rotate", "mask"])
def test_oracle_catches_a_disabled_hook(pair, disabled: str) -> None:
    """The oracle comparison can fail: with either hook off, logits differ grossly."""
    hf, model = pair
    st = build("shared", isolate=True, prune=True)
    with attach(model, st, **{disabled: False}), torch.no_grad():
        ours = model(st.tokens_tensor())
    assert (ours - hf_logits(hf, st)).abs().max().item() > 1e-2


def test_hf_needs_the_explicit_positions(pair) -> None:
    """Sanity of the oracle itself: HF with default positions disagrees on a TEMPO sequence."""
    hf, model = pair
    st = build("shared", isolate=False, prune=False)
    with attach(model, st), torch.no_grad():
        ours = model(st.tokens_tensor())
    with torch.no_grad():
        plain = hf(input_ids=st.tokens_tensor()).logits
    assert (ours - plain).abs().max().item() > 1e-2
