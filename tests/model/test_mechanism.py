"""Oracles 1, 2, 4, 5 on tiny random models of every rotary flavour, plus TL tooling inside
``attach`` and mismatch detection."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import patching

from tempo_lens import PositionScheme, SequenceState, StateMismatchError, attach
from tempo_lens.backends import make_kv_cache

PROMPT = [3, 14, 15, 9, 26]


def fwd(model, state, **kw):
    with attach(model, state, **kw), torch.no_grad():
        return model(state.tokens_tensor())[0]


def plain(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids]))[0]


def test_noop_single_members_equal_plain_model(tiny_variant) -> None:
    """Oracle 1: one token per step and nothing masked -> bit-identical logits."""
    st = SequenceState.from_sets(PROMPT, [[7], [8], [9]], isolate=True)
    assert torch.equal(fwd(tiny_variant, st), plain(tiny_variant, st.token_ids))


@pytest.mark.parametrize("isolate", [True, False])
def test_sibling_equivalence(tiny_variant, isolate: bool) -> None:
    """Oracle 2: each isolated member's logits equal a plain forward of context + member."""
    st = SequenceState.from_sets(PROMPT, [[7], [10, 11, 12]], isolate=isolate)
    ours = fwd(tiny_variant, st)
    context = PROMPT + [7]
    diffs = []
    for idx, tok in zip(st.set_indices[1], [10, 11, 12], strict=True):
        ref = plain(tiny_variant, context + [tok])[-1]
        diffs.append((ours[idx] - ref).abs().max().item())
    if isolate:
        assert max(diffs) < 5e-5
    else:  # visible siblings see each other: only the first member equals the plain run
        assert diffs[0] < 5e-5 and max(diffs[1:]) > 1e-4


def test_sibling_equivalence_fails_without_position_hook(tiny) -> None:
    st = SequenceState.from_sets(PROMPT, [[10, 11, 12]], isolate=True)
    ours = fwd(tiny, st, rotate=False)
    ref = plain(tiny, PROMPT + [12])[-1]
    assert (ours[st.set_indices[0][2]] - ref).abs().max().item() > 1e-4


@pytest.mark.parametrize("isolate", [True, False])
def test_pruning_equals_deletion(tiny_variant, isolate: bool) -> None:
    """Oracle 4: a token pruned at its own step is exactly as if it had never been there."""
    st = SequenceState.from_sets(PROMPT, [[10, 11]], isolate=isolate)
    st.prune(st.set_indices[0][1], at_step=0)
    st.append_set([20])
    st.append_set([21, 22])
    st.prune(st.set_indices[2][1], at_step=2)
    st.append_set([23])
    ours = fwd(tiny_variant, st)
    keep = [i for i in range(len(st)) if st.pruned_at[i] is None]
    deleted = plain(tiny_variant, [st.token_ids[i] for i in keep])
    assert (ours[keep] - deleted).abs().max().item() < 5e-5
    # ... and the comparison can fail: without the mask hook the pruned token leaks in.
    leaky = fwd(tiny_variant, st, mask=False)
    assert (leaky[keep] - deleted).abs().max().item() > 1e-4


def _incremental(model, sets, *, isolate, scheme, prune_plan):
    st = SequenceState.from_prompt(PROMPT, isolate=isolate, positions=scheme)
    cache = make_kv_cache(model)
    rows = {}
    with attach(model, st), torch.no_grad():
        new = torch.tensor([PROMPT])
        out = model(new, past_kv_cache=cache, attention_mask=torch.ones_like(new))
        rows.update({i: out[0, i] for i in range(len(PROMPT))})
        for step, members in enumerate(sets):
            idx = st.append_set(members)
            new = torch.tensor([members])
            out = model(new, past_kv_cache=cache, attention_mask=torch.ones_like(new))
            rows.update({i: out[0, j] for j, i in enumerate(idx)})
            for target in prune_plan.get(step, []):
                st.prune(target, at_step=step)
    return st, rows


@pytest.mark.parametrize("isolate", [True, False])
@pytest.mark.parametrize("scheme", [PositionScheme(), PositionScheme(member_offset=0.5)])
def test_kv_cache_equals_full_forward(tiny_variant, isolate, scheme) -> None:
    """Oracle 5: incremental KV-cache forwards equal one full forward of the final state."""
    sets = [[10, 11, 12], [13], [14, 15], [16], [17, 18]]
    st, rows = _incremental(
        tiny_variant, sets, isolate=isolate, scheme=scheme, prune_plan={1: [6], 3: [10]}
    )
    assert st.pruned_at[6] == 1 and st.pruned_at[10] == 3
    full = fwd(tiny_variant, st)
    inc = torch.stack([rows[i] for i in range(len(st))])
    assert (full - inc).abs().max().item() < 5e-5


def test_wrong_length_raises(tiny) -> None:
    st = SequenceState.from_sets(PROMPT, [[10, 11]])
    with attach(tiny, st), pytest.raises(StateMismatchError, match="key positions"):
        tiny(torch.tensor([PROMPT]))


def test_stale_cache_after_retroactive_prune_raises(tiny) -> None:
    st = SequenceState.from_prompt(PROMPT)
    cache = make_kv_cache(tiny)
    with attach(tiny, st), torch.no_grad():
        for members in ([10, 11], [12]):
            st.append_set(members)
        ids = torch.tensor([st.token_ids])
        tiny(ids, past_kv_cache=cache, attention_mask=torch.ones_like(ids))
        st.prune(6, at_step=0)  # step-1 token 7 already exists: its cached K/V are stale
        st.append_set([13])
        new = torch.tensor([[13]])
        with pytest.raises(StateMismatchError, match="retroactively"):
            tiny(new, past_kv_cache=cache, attention_mask=torch.ones_like(new))


def test_user_hooks_and_run_with_cache_compose(tiny) -> None:
    """User hooks added inside attach see masked scores; our hooks survive nested contexts."""
    st = SequenceState.from_sets(PROMPT, [[10, 11, 12], [13]], isolate=True)
    seen = {}

    def grab(scores, hook):
        seen[hook.name] = scores.detach().clone()

    with attach(tiny, st), torch.no_grad():
        tiny.run_with_hooks(
            st.tokens_tensor(), fwd_hooks=[("blocks.0.attn.hook_attn_scores", grab)]
        )
        _, cache = tiny.run_with_cache(st.tokens_tensor())  # after run_with_hooks exited
    s = seen["blocks.0.attn.hook_attn_scores"][0]
    a, b = st.set_indices[0][:2]
    assert torch.isinf(s[:, b, a]).all()  # sibling masked
    assert torch.isfinite(s[:, b, 0]).all()
    assert cache["pattern", 1][0, :, b, a].abs().max().item() == 0.0
    assert tiny.hook_dict["blocks.0.attn.hook_attn_scores"].fwd_hooks == []  # detached after


def test_activation_patching_inside_attach(tiny) -> None:
    """transformer_lens.patching runs on the TEMPO sequence and equals manual patching."""
    clean = SequenceState.from_sets(PROMPT, [[10, 11], [12]], isolate=True)
    corrupt_ids = torch.tensor([[3, 14, 40, 9, 26, 10, 11, 12]])
    target = 12

    def metric(logits):
        return logits[0, -1, target]

    with attach(tiny, clean), torch.no_grad():
        _, clean_cache = tiny.run_with_cache(clean.tokens_tensor())
        result = patching.get_act_patch_resid_pre(tiny, corrupt_ids, clean_cache, metric)
        manual = torch.zeros_like(result)
        for layer in range(tiny.cfg.n_layers):
            for pos in range(len(clean)):

                def patch(act, hook, pos=pos, layer=layer):
                    act[:, pos] = clean_cache["resid_pre", layer][:, pos]
                    return act

                out = tiny.run_with_hooks(
                    corrupt_ids, fwd_hooks=[(f"blocks.{layer}.hook_resid_pre", patch)]
                )
                manual[layer, pos] = metric(out)
    assert torch.allclose(result, manual, atol=1e-6)
    assert result.abs().max() > 0


def test_head_ablation_inside_attach(tiny) -> None:
    """Zeroing a head via hook_z equals zeroing its W_O rows, both under the TEMPO hooks."""
    st = SequenceState.from_sets(PROMPT, [[10, 11], [12]], isolate=True)
    layer, head = 1, 2

    def ablate(z, hook):
        z[:, :, head] = 0.0
        return z

    with attach(tiny, st), torch.no_grad():
        base = tiny(st.tokens_tensor())
        via_hook = tiny.run_with_hooks(
            st.tokens_tensor(), fwd_hooks=[(f"blocks.{layer}.attn.hook_z", ablate)]
        )
        w_o = tiny.blocks[layer].attn.W_O
        saved = w_o[head].clone()
        w_o[head] = 0.0
        try:
            via_weights = tiny(st.tokens_tensor())
        finally:
            w_o[head] = saved
    assert torch.allclose(via_hook, via_weights, atol=1e-6)
    assert (via_hook - base).abs().max() > 1e-4


def test_batch_broadcasts_one_state(tiny_variant) -> None:
    """A batch of sequences with the same TEMPO structure (e.g. clean/corrupt) is supported."""
    st = SequenceState.from_sets(PROMPT, [[10, 11, 12], [13]], isolate=True)
    other = list(st.token_ids)
    other[2] = 40
    batch = torch.tensor([st.token_ids, other])
    with attach(tiny_variant, st), torch.no_grad():
        both = tiny_variant(batch)
        one = tiny_variant(batch[1:])
    assert torch.allclose(both[0], fwd(tiny_variant, st), atol=5e-5)
    assert torch.allclose(both[1], one[0], atol=5e-5)
