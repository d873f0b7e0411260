"""The independent-implementation oracle on the real default model (≤ 1e-4)."""

from __future__ import annotations

import pytest
import torch

from tempo_lens import PositionScheme, SequenceState, attach
from tests.model.hf_oracle import hf_logits

SCHEMES = {
    "shared": PositionScheme(),
    "fractional": PositionScheme(member_offset=0.01),
    "distinct": PositionScheme(kind="distinct"),
}


def _state(model, scheme: str, isolate: bool, prune: bool) -> SequenceState:
    tok = model.to_single_token
    prompt = model.to_tokens("The cat sat on the")[0].tolist()
    sets = [
        [tok(" mat"), tok(" floor"), tok(" bed")],
        [tok(".")],
        [tok(" It"), tok(" The"), tok(" She")],
        [tok(" was")],
        [tok(" happy"), tok(" very")],
    ]
    st = SequenceState.from_prompt(prompt, isolate=isolate, positions=SCHEMES[scheme])
    for step, members in enumerate(sets):
        idx = st.append_set(members)
        if prune and step == 1:
            st.prune(st.set_indices[0][2], at_step=1)  # " bed" pruned one step later
        if prune and step == 2:
            st.prune(idx[1], at_step=2)  # " The" pruned at its own step
    return st


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
@pytest.mark.parametrize("isolate", [True, False])
@pytest.mark.parametrize("prune", [False, True])
def test_default_model_matches_hf_oracle(default_model, hf_default, scheme, isolate, prune):
    st = _state(default_model, scheme, isolate, prune)
    with attach(default_model, st), torch.no_grad():
        ours = default_model(st.tokens_tensor())
    diff = (ours - hf_logits(hf_default, st)).abs().max().item()
    print(f"{scheme} isolate={isolate} prune={prune}: max |Δlogit| = {diff:.2e}")
    assert diff <= 1e-4


@pytest.mark.parametrize("disabled", ["rotate", "mask"])
def test_default_oracle_fails_with_a_hook_disabled(default_model, hf_default, disabled):
    st = _state(default_model, "shared", True, True)
    with attach(default_model, st, **{disabled: False}), torch.no_grad():
        ours = default_model(st.tokens_tensor())
    assert (ours - hf_logits(hf_default, st)).abs().max().item() > 1e-2


@pytest.mark.parametrize("isolate", [True, False])
def test_default_model_hard_prune_equals_physical_removal(default_model, hf_default, isolate):
    """Hard pruning (issue 13 part 6) on the real model: " bed" hard-pruned at step 2, so
    the tokens appended after it are recomputed without it; Hugging Face on the sequence
    with " bed" deleted (every other token at its logical position) agrees."""
    from tests.model.hf_oracle import hf_logits_removed

    st = _state(default_model, "shared", isolate, prune=False)
    gone = st.set_indices[0][2]
    st.prune(gone, at_step=2, hard=True)
    with attach(default_model, st), torch.no_grad():
        ours = default_model(st.tokens_tensor())
    ref, keep = hf_logits_removed(hf_default, st, [gone])
    diff = (ours[:, keep] - ref).abs().max().item()
    print(f"hard prune isolate={isolate}: max |Δlogit| vs removal = {diff:.2e}")
    assert diff <= 1e-4
    soft = _state(default_model, "shared", isolate, prune=False)
    soft.prune(gone, at_step=2)
    with attach(default_model, soft), torch.no_grad():
        soft_logits = default_model(soft.tokens_tensor())
    assert (soft_logits[:, keep] - ref).abs().max().item() > 1e-3  # soft is not removal
