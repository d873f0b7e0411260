"""The bridge backend on the real offline models: ``load_model(name, backend="bridge")``
(a TransformerBridge around the cached Hugging Face copy) under TEMPO hooks, against an
independent Hugging Face copy given explicit positions and 4-D masks (per layer type
for Gemma 3)."""

from __future__ import annotations

import pytest
import torch

from tempo_lens import PositionScheme, SequenceState, attach, load_model

from ..model.hf_oracle import hf_logits

pytestmark = pytest.mark.slow

TOL = 5e-5
"""Measured up to 3.1e-5 (SmolLM2, logits ~35: a few float32 ulps), from re-rotating
HF's physical RoPE instead of rotating to the logical position directly."""
CASES = {
    "SmolLM2-135M-Instruct": (
        "The cat sat on the",
        [[" mat", " floor", " bed"], ["."], [" It", " The"]],
    ),
    "gemma-3-270m": (
        "The capital of France is",
        [[" Paris", " the", " a"], [","], [" and", " which"]],
    ),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, hf_default, gemma_hf):
    name = request.param
    hf = hf_default if name.startswith("SmolLM2") else gemma_hf
    return name, load_model(name, backend="bridge"), hf


def _state(bridge, name: str, isolate: bool, offset: float) -> SequenceState:
    prompt, sets = CASES[name]
    ids = bridge.to_tokens(prompt)[0].tolist()
    st = SequenceState.from_prompt(
        ids, isolate=isolate, positions=PositionScheme(member_offset=offset)
    )
    for step, words in enumerate(sets):
        st.append_set([bridge.to_single_token(w) for w in words])
        if step == 1:
            st.prune(st.set_indices[0][2], at_step=1)
    return st


def test_plain_forward(case) -> None:
    name, bridge, hf = case
    ids = bridge.to_tokens(CASES[name][0])
    with torch.no_grad():
        diff = (bridge(ids) - hf(ids).logits).abs().max().item()
    print(f"{name} bridge vs HF, plain: {diff:.2e}")
    assert diff <= TOL


@pytest.mark.parametrize(("isolate", "offset"), [(True, 0.0), (False, 0.37)])
def test_tempo_matches_hf(case, isolate: bool, offset: float) -> None:
    name, bridge, hf = case
    st = _state(bridge, name, isolate, offset)
    with attach(bridge, st), torch.no_grad():
        ours = bridge(st.tokens_tensor())
    diff = (ours - hf_logits(hf, st)).abs().max().item()
    print(f"{name} bridge TEMPO (isolate={isolate}, offset={offset}) vs HF: {diff:.2e}")
    assert diff <= TOL
    with attach(bridge, st, rotate=False), torch.no_grad():
        assert (bridge(st.tokens_tensor()) - hf_logits(hf, st)).abs().max().item() > 1e-2
