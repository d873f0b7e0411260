"""The bridge backend on the real offline models: ``load_model(name, backend="bridge")``
(a TransformerBridge around the cached Hugging Face copy) under TEMPO hooks, against an
independent Hugging Face copy given explicit positions and 4-D masks (per layer type
for Gemma 3)."""

from __future__ import annotations

import pytest
import torch

from tempo_lens import PositionScheme, SequenceState, TempoConfig, attach, generate, load_model
from tempo_lens.backends import HAS_HOOKED_TRANSFORMER
from tempo_lens.models.gguf_files import locate_gguf

from ..model.hf_oracle import hf_logits, hf_step_distributions
from ..model.test_generation import assert_same_trace

pytestmark = [pytest.mark.slow, pytest.mark.bridge]

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
def case(request):
    name = request.param
    try:
        locate_gguf(name)
    except FileNotFoundError as exc:  # e.g. the TransformerLens 4.x CI tier: SmolLM2 only
        pytest.skip(f"{name} weights not installed: {exc}")
    hf = request.getfixturevalue("hf_default" if name.startswith("SmolLM2") else "gemma_hf")
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


GEN = TempoConfig(selection_threshold=0.1, max_steps=8)


def _max_dp(a, b) -> float:
    """Largest |Δp| over the recorded candidates of two traces with the same tokens."""
    assert a.state.token_ids == b.state.token_ids
    return max(
        abs(c.probability - d.probability)
        for x, y in zip(a.steps, b.steps, strict=True)
        for c, d in zip(x.candidates, y.candidates, strict=True)
    )


def test_generate_matches_hf_with_and_without_cache(case) -> None:
    name, bridge, hf = case
    trace = generate(bridge, CASES[name][0], GEN)
    assert max(trace.widths()) > 1
    worst = max(
        abs(c.probability - float(dist[c.token_id]))
        for step, dist in zip(trace.steps, hf_step_distributions(hf, trace), strict=True)
        for c in step.candidates
    )
    print(f"{name} bridge generate vs HF: max |dp| {worst:.2e}")
    assert worst <= 1e-4
    assert_same_trace(trace, generate(bridge, CASES[name][0], GEN, use_kv_cache=False), 1e-5)


@pytest.mark.skipif(not HAS_HOOKED_TRANSFORMER, reason="HookedTransformer needs TL 3.x")
def test_bridge_generate_equals_hooked(default_model) -> None:
    prompt = CASES["SmolLM2-135M-Instruct"][0]
    a = generate(default_model, prompt, GEN)
    b = generate(load_model(backend="bridge"), prompt, GEN)
    print(f"SmolLM2 bridge vs HookedTransformer generate: max |dp| {_max_dp(a, b):.2e}")
    assert _max_dp(a, b) <= 1e-4
