"""``generate`` on a TransformerBridge (both TransformerLens 3.9 and 4.x).

Oracles, on tiny random Hugging Face models (a Llama, and a Gemma 3 with window 4 on two
of three layers, generating 3-4x past the window):

* every step's distribution equals the one computed from Hugging Face's own logits on the
  sequence as of that step (explicit ``position_ids`` and 4-D masks, ``hf_oracle``);
* the KV-cache trace equals the no-cache trace (the bridge caches keys after
  ``hook_rot_k``, already at their logical positions);
* TEMPO with an unreachable threshold equals greedy decoding by plain HF forwards;
* attention captured during generation equals ``run_with_cache`` on the final state;
* on TransformerLens 3.x, the bridge's trace equals the HookedTransformer's.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tempo_lens import PruningConfig, RelativeRule, TempoConfig, attach, generate
from tempo_lens.backends import HAS_HOOKED_TRANSFORMER
from tempo_lens.hooks.capture import AttentionCapture

from .hf_oracle import (
    bridge_of,
    hf_step_distributions,
    tiny_gemma3_hf,
    tiny_llama_hf,
    tiny_tokenizer,
)
from .test_generation import assert_same_trace

pytestmark = pytest.mark.bridge

PROMPT = [1, 2, 3]
PRUNE = PruningConfig(rule=RelativeRule(ratio=0.9))
TOL_P = 1e-5
"""|Δp| vs HF: the bridge computes with HF's modules; the re-rotation adds float32 rounding."""


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def pair(request, tmp_path_factory):
    tok = tiny_tokenizer(str(tmp_path_factory.mktemp("tok")))
    hf = tiny_llama_hf(seed=1) if request.param == "llama" else tiny_gemma3_hf(seed=2)
    return hf, bridge_of(copy.deepcopy(hf), tok)


def _config(**kw) -> TempoConfig:
    return TempoConfig(**{"selection_threshold": 0.005, "max_parallel": 4, "max_steps": 6, **kw})


@pytest.mark.parametrize("isolate", [True, False])
@pytest.mark.parametrize("readout", ["mixture", "last"])
def test_step_distributions_match_hf(pair, isolate: bool, readout: str) -> None:
    hf, bridge = pair
    trace = generate(bridge, PROMPT, _config(isolate=isolate, readout=readout, max_steps=10))
    assert max(trace.widths()) > 1 and len(trace.tokens) > 3 * 4
    worst = 0.0
    for step, dist in zip(trace.steps, hf_step_distributions(hf, trace), strict=True):
        for c in step.candidates:
            worst = max(worst, abs(c.probability - float(dist[c.token_id])))
    print(f"bridge generate vs HF: max |dp| {worst:.2e}")
    assert worst <= TOL_P


@pytest.mark.parametrize("isolate", [True, False])
@pytest.mark.parametrize("prune", [None, PRUNE])
def test_kv_cache_equals_no_cache(pair, isolate: bool, prune) -> None:
    _, bridge = pair
    cfg = _config(isolate=isolate, prune=prune, max_steps=8)
    a = generate(bridge, PROMPT, cfg)
    b = generate(bridge, PROMPT, cfg, use_kv_cache=False)
    assert max(a.widths()) > 1
    if prune:
        assert a.summary()["pruned"] > 0
    assert_same_trace(a, b, atol=1e-6)


def test_unreachable_threshold_is_hf_greedy(pair) -> None:
    hf, bridge = pair
    trace = generate(bridge, PROMPT, _config(selection_threshold=1.0, max_steps=12))
    ids = list(PROMPT)
    with torch.no_grad():
        for _ in range(12):
            nxt = int(hf(torch.tensor([ids])).logits[0, -1].argmax())
            if nxt == bridge.tokenizer.eos_token_id:
                break
            ids.append(nxt)
    assert trace.clean_ids() == ids[len(PROMPT) :]


@pytest.mark.parametrize("kv", [True, False])
def test_capture_matches_full_forward(pair, kv: bool) -> None:
    _, bridge = pair
    cap = AttentionCapture()
    trace = generate(bridge, PROMPT, _config(isolate=True, use_kv_cache=kv), observers=[cap])
    data = cap.result(trace)
    st = trace.to_state()
    with attach(bridge, st), torch.no_grad():
        _, cache = bridge.run_with_cache(st.tokens_tensor())
    ref = torch.stack(
        [cache[f"blocks.{layer}.attn.hook_pattern"][0] for layer in range(bridge.cfg.n_layers)]
    ).numpy()
    got = data.full_tensor()
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    assert np.array_equal(got == 0, ref == 0)


@pytest.mark.skipif(not HAS_HOOKED_TRANSFORMER, reason="HookedTransformer needs TL 3.x")
@pytest.mark.parametrize("prune", [None, PRUNE])
def test_bridge_trace_equals_hooked_trace(tmp_path, prune) -> None:
    from .hf_oracle import tiny_llama_pair

    hf, hooked = tiny_llama_pair(seed=1)
    bridge = bridge_of(copy.deepcopy(hf), tiny_tokenizer(str(tmp_path)))
    cfg = _config(isolate=True, prune=prune, max_steps=8)
    a, b = generate(hooked, PROMPT, cfg), generate(bridge, PROMPT, cfg)
    assert max(a.widths()) > 1
    if prune:
        assert a.summary()["pruned"] > 0
    assert a.state.to_dict() == b.state.to_dict()  # tokens, positions, pruning: exact
    assert a.stop_reason == b.stop_reason
    for x, y in zip(a.steps, b.steps, strict=True):  # texts differ: no tokenizer on one
        assert [c.token_id for c in x.candidates] == [c.token_id for c in y.candidates]
        px = [c.probability for c in x.candidates] + x.probabilities
        py = [c.probability for c in y.candidates] + y.probabilities
        assert px == pytest.approx(py, abs=1e-5)
        assert [(d.index, d.pruned) for d in x.pruning] == [(d.index, d.pruned) for d in y.pruning]
        assert [d.score for d in x.pruning] == pytest.approx([d.score for d in y.pruning], abs=1e-5)


@pytest.mark.parametrize("kv", [True, False])
def test_batch_rows_equal_single_generations(pair, kv: bool) -> None:
    """Ragged rows (pads between a short prompt and its generated tokens): each row's
    trace equals its own generation (HF must not read the pads' positions as packing)."""
    from tempo_lens import generate_batch

    _, bridge = pair
    prompts = [[1, 2, 3], [5, 6, 7, 8, 9, 10], [4]]
    cfg = _config(use_kv_cache=kv, prune=PRUNE)
    for prompt, trace in zip(prompts, generate_batch(bridge, prompts, cfg), strict=True):
        assert_same_trace(trace, generate(bridge, prompt, cfg), atol=1e-5)
