"""Token trees on a TransformerBridge (TransformerLens 3.9 and 4.x): the tree state against
Hugging Face with the 4-D ancestor mask and depth positions, tree beam search against
Hugging Face ``generate(num_beams=k)``, tree speculative decoding against greedy decoding.
Tiny random Llama and Gemma 3 (window 4 on two of three layers: the logical window applies to
tree tokens too)."""

from __future__ import annotations

import copy

import pytest
import torch

import tempo_lens as tl
from tempo_lens import attach

from .hf_oracle import bridge_of, hf_logits, tiny_gemma3_hf, tiny_llama_hf, tiny_tokenizer
from .test_trees import TREES

pytestmark = pytest.mark.bridge

TOL = 3e-5  # as test_bridge: HF's own modules, float32 rounding of the re-rotation
PROMPTS = ([3, 14, 15, 9], [5, 35, 8, 5, 35])


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def pair(request, tmp_path_factory):
    tok = tiny_tokenizer(str(tmp_path_factory.mktemp("tok")))
    hf = tiny_llama_hf(seed=1) if request.param == "llama" else tiny_gemma3_hf(seed=2)
    return hf, bridge_of(copy.deepcopy(hf), tok)


@pytest.mark.parametrize("tree", sorted(TREES))
def test_bridge_tree_matches_hf(pair, tree: str) -> None:
    hf, bridge = pair
    st = TREES[tree]()
    with attach(bridge, st), torch.no_grad():
        ours = bridge(st.tokens_tensor())
    delta = (ours - hf_logits(hf, st)).abs().max().item()
    assert delta <= TOL, delta


def test_bridge_oracle_catches_a_wrong_tree_mask(pair) -> None:
    hf, bridge = pair
    st = TREES["beam_like"]()
    flat = tl.SequenceState.from_dict({**st.to_dict(), "parents": None})
    flat.set_logical_positions(st.logical)
    with attach(bridge, flat), torch.no_grad():
        ours = bridge(flat.tokens_tensor())
    assert (ours - hf_logits(hf, st)).abs().max().item() > 1e-2


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("eos", [True, False])
def test_bridge_tree_beam_equals_hf_generate(pair, k: int, eos: bool) -> None:
    hf, bridge = pair
    eos_id = bridge.tokenizer.eos_token_id
    for prompt in PROMPTS:
        x = torch.tensor([prompt])
        with torch.no_grad():
            out = hf.generate(
                x, attention_mask=torch.ones_like(x), max_new_tokens=12, do_sample=False,
                num_beams=k, eos_token_id=eos_id if eos else None, pad_token_id=0,
            )  # fmt: skip
        want = out[0, len(prompt) :].tolist()
        res = tl.tree_beam_search(bridge, prompt, max_steps=12, num_beams=k, stop_at_eos=eos)
        assert res.token_ids + ([eos_id] if res.stop_reason == "eos" else []) == want


def test_bridge_tree_speculative_equals_greedy(pair) -> None:
    _, bridge = pair
    for prompt in PROMPTS:
        want = tl.greedy(bridge, prompt, max_steps=16, stop_at_eos=False).clean_ids()
        res = tl.tree_speculative(bridge, prompt, max_steps=16, stop_at_eos=False)
        assert res.token_ids == want

        oracle = chain_drafter(want, len(prompt))
        fast = tl.tree_speculative(bridge, prompt, max_steps=16, stop_at_eos=False, draft=oracle)
        assert fast.token_ids == want and fast.accepted_per_forward > 3


def chain_drafter(truth: list[int], n_prompt: int):
    """Drafts the true greedy continuation after the root as one chain."""

    def draft(context: list[int], depth: int) -> tuple[list[int], list[int]]:
        right = truth[len(context) - n_prompt :][:depth]
        return right, list(range(len(right)))

    return draft
