"""The fast path (:mod:`tempo_lens.backends.fast`) is bit-identical to the stock forward, keeps every
hook value, follows every kind of weight edit, and switches off cleanly."""

from __future__ import annotations

import copy

import pytest
import torch
from transformer_lens import HookedTransformer

from tempo_lens import SequenceState, attach, make_tiny_model
from tempo_lens.backends import fast_layout_targets, make_kv_cache
from tempo_lens.backends.fast import (
    disable_fast_path,
    enable_fast_path,
    fast_path_status,
    fast_weights,
)

TOKENS = torch.tensor([[3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 3]])


def logits(model: HookedTransformer, tokens: torch.Tensor = TOKENS) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens)


def cached_decode(model: HookedTransformer, tokens: torch.Tensor = TOKENS, n_new: int = 3):
    """Prefill all but ``n_new`` tokens, then feed them one by one through the KV cache."""
    cache = make_kv_cache(model)
    prefix, rest = tokens[:, :-n_new], tokens[:, -n_new:]
    outs = []
    with torch.no_grad():
        outs.append(model(prefix, past_kv_cache=cache, attention_mask=torch.ones_like(prefix)))
        for i in range(n_new):
            new = rest[:, i : i + 1]
            outs.append(model(new, past_kv_cache=cache, attention_mask=torch.ones_like(new)))
    return torch.cat(outs, dim=1)


def assert_stock_layout(model: HookedTransformer) -> None:
    assert all(p.is_contiguous() for p in model.parameters())


# ---------------------------------------------------------------------------- exactness
def test_targets_cover_every_copied_weight(tiny_variant) -> None:
    """Q, K, V, O per layer, three gated-MLP matrices per layer, and W_U."""
    names = [n for n, _, _ in fast_layout_targets(tiny_variant)]
    assert len(names) == 7 * tiny_variant.cfg.n_layers + 1
    status = enable_fast_path(tiny_variant)
    assert status.enabled and set(status.fast) == set(names)
    assert not any(p.is_contiguous() for _, p, _ in fast_layout_targets(tiny_variant))


def test_logits_identical_without_cache(tiny_variant) -> None:
    stock = logits(tiny_variant)
    with fast_weights(tiny_variant):
        fast = logits(tiny_variant)
    assert torch.equal(stock, fast)


def test_logits_identical_with_kv_cache(tiny_variant) -> None:
    stock = cached_decode(tiny_variant)
    with fast_weights(tiny_variant):
        fast = cached_decode(tiny_variant)
    assert torch.equal(stock, fast)


def test_every_hook_value_identical(tiny_variant) -> None:
    with torch.no_grad():
        _, stock = tiny_variant.run_with_cache(TOKENS)
        with fast_weights(tiny_variant):
            _, fast = tiny_variant.run_with_cache(TOKENS)
    fired = set(fast.keys())
    assert set(stock.keys()) == fired
    for must in ("attn.hook_q", "attn.hook_rot_q", "attn.hook_rot_k", "attn.hook_attn_scores"):
        assert f"blocks.1.{must}" in fired, must
    assert {"blocks.1.attn.hook_z", "blocks.1.hook_mlp_out", "unembed.hook_out"} <= fired
    for name in stock:
        assert torch.equal(stock[name], fast[name]), name


def test_inside_attach_with_kv_cache(tiny_variant) -> None:
    """TEMPO decode (a parallel set through the KV cache) with hooks capturing patterns."""

    def run() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        st = SequenceState.from_sets([3, 14, 15, 9, 26], [[7]], isolate=True)
        cache = make_kv_cache(tiny_variant)
        seen: dict[str, torch.Tensor] = {}

        def grab(x, hook):
            seen[hook.name] = x.clone()

        with attach(tiny_variant, st), torch.no_grad():
            head = st.tokens_tensor()
            tiny_variant(head, past_kv_cache=cache, attention_mask=torch.ones_like(head))
            st.append_set([10, 11, 12])
            new = st.tokens_tensor()[:, 6:]
            with tiny_variant.hooks(fwd_hooks=[(lambda n: n.endswith("hook_pattern"), grab)]):
                out = tiny_variant(new, past_kv_cache=cache, attention_mask=torch.ones_like(new))
        return out, seen

    stock, stock_seen = run()
    with fast_weights(tiny_variant):
        fast, fast_seen = run()
    assert torch.equal(stock, fast)
    assert stock_seen.keys() == fast_seen.keys() and len(stock_seen) == tiny_variant.cfg.n_layers
    for name in stock_seen:
        assert torch.equal(stock_seen[name], fast_seen[name]), name


def test_generate_identical_trace() -> None:
    from tempo_lens.generation import generate

    model = make_tiny_model(n_key_value_heads=2)
    kw = dict(max_steps=6, selection_threshold=0.05, stop_at_eos=False)
    stock = generate(model, [3, 14, 15], fast_weights=False, **kw)
    enable_fast_path(model)
    fast = generate(model, [3, 14, 15], fast_weights=True, **kw)
    assert [t.token_id for t in stock.tokens] == [t.token_id for t in fast.tokens]
    assert [t.probability for t in stock.tokens] == [t.probability for t in fast.tokens]


@pytest.mark.parametrize("setting", ["use_attn_result", "use_split_qkv_input"])
def test_configs_that_use_weights_uncopied_are_left_alone(setting: str) -> None:
    model = make_tiny_model(n_key_value_heads=2)
    getattr(model, f"set_{setting}")(True)
    names = [n for n, _, _ in fast_layout_targets(model)]
    if setting == "use_attn_result":
        assert not any(n.endswith("W_O") for n in names)
    else:
        assert not any(n.endswith(("W_Q", "W_K", "W_V")) for n in names)
    with torch.no_grad():
        stock, stock_cache = model.run_with_cache(TOKENS)
        with fast_weights(model):
            fast, fast_cache = model.run_with_cache(TOKENS)
    assert torch.equal(stock, fast)
    for name in stock_cache:
        assert torch.equal(stock_cache[name], fast_cache[name]), name


# ---------------------------------------------------------------------------- edits
def _edit_every_target(model: HookedTransformer, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p, _ in fast_layout_targets(model):
            p.add_(0.1 * torch.randn(p.shape, generator=gen))


def test_in_place_edits_are_seen(tiny_variant) -> None:
    reference = copy.deepcopy(tiny_variant)
    held = [p for _, p, _ in fast_layout_targets(tiny_variant)]  # references taken before
    enable_fast_path(tiny_variant)
    before = logits(tiny_variant)
    _edit_every_target(tiny_variant, seed=1)
    _edit_every_target(reference, seed=1)
    after = logits(tiny_variant)
    assert not torch.equal(before, after)
    assert torch.equal(after, logits(reference))
    assert torch.equal(cached_decode(tiny_variant), cached_decode(reference))
    # An edit through a reference taken before enabling reaches the forward too.
    with torch.no_grad():
        held[0].mul_(3.0)
        next(p for _, p, _ in fast_layout_targets(reference)).mul_(3.0)
    assert torch.equal(logits(tiny_variant), logits(reference))


def test_head_ablation_by_weight_edit(tiny_variant) -> None:
    enable_fast_path(tiny_variant)
    before = logits(tiny_variant)
    with torch.no_grad():
        tiny_variant.blocks[1].attn.W_O[2] = 0.0  # ablate head 2 of layer 1
    after = logits(tiny_variant)
    disable_fast_path(tiny_variant)
    assert not torch.equal(before, after)
    assert torch.equal(after, logits(tiny_variant))


def test_load_state_dict_is_seen(tiny_variant) -> None:
    other = copy.deepcopy(tiny_variant)
    _edit_every_target(other, seed=2)
    enable_fast_path(tiny_variant)
    before = logits(tiny_variant)
    tiny_variant.load_state_dict(other.state_dict())
    assert not torch.equal(before, logits(tiny_variant))
    assert fast_path_status(tiny_variant).enabled  # copy_ keeps the layout
    assert torch.equal(logits(tiny_variant), logits(other))
    assert torch.equal(cached_decode(tiny_variant), cached_decode(other))


def test_assigned_parameters_fall_back_to_stock_layout(tiny_variant) -> None:
    enable_fast_path(tiny_variant)
    other = make_tiny_model(**_cfg_kwargs(tiny_variant), seed=5)
    tiny_variant.load_state_dict(other.state_dict(), assign=True)
    status = fast_path_status(tiny_variant)
    assert not status.enabled and status.stock
    assert torch.equal(logits(tiny_variant), logits(other))
    assert enable_fast_path(tiny_variant).enabled
    assert torch.equal(logits(tiny_variant), logits(other))


def test_fine_tuning_step_identical(tiny_variant) -> None:
    """An optimiser built before enabling updates the live weights; grads are identical."""
    reference = copy.deepcopy(tiny_variant)

    def step(model: HookedTransformer, opt: torch.optim.Optimizer) -> list[torch.Tensor]:
        opt.zero_grad()
        model(TOKENS, return_type="loss").backward()
        opt.step()
        return [p.grad.clone() for p in model.parameters()]

    opt = torch.optim.SGD(tiny_variant.parameters(), lr=0.5)
    enable_fast_path(tiny_variant)
    grads = step(tiny_variant, opt)
    ref_grads = step(reference, torch.optim.SGD(reference.parameters(), lr=0.5))
    for g, r in zip(grads, ref_grads, strict=True):
        assert torch.equal(g, r)
    assert torch.equal(logits(tiny_variant), logits(reference))
    assert fast_path_status(tiny_variant).enabled


# ---------------------------------------------------------------------------- switching
def test_switching_off_restores_stock(tiny_variant) -> None:
    params = list(tiny_variant.parameters())
    strides = [p.stride() for p in params]
    stock = cached_decode(tiny_variant)
    enable_fast_path(tiny_variant)
    assert enable_fast_path(tiny_variant).enabled  # idempotent
    status = disable_fast_path(tiny_variant)
    assert not status.fast and status.stock
    assert_stock_layout(tiny_variant)
    assert [p.stride() for p in tiny_variant.parameters()] == strides
    assert all(a is b for a, b in zip(params, tiny_variant.parameters(), strict=True))
    assert torch.equal(cached_decode(tiny_variant), stock)


def test_context_manager_restores_only_what_it_changed(tiny_variant) -> None:
    with fast_weights(tiny_variant):
        assert fast_path_status(tiny_variant).enabled
    assert_stock_layout(tiny_variant)
    enable_fast_path(tiny_variant)
    with fast_weights(tiny_variant):
        pass
    assert fast_path_status(tiny_variant).enabled  # was on before: left on
    with pytest.raises(RuntimeError), fast_weights(make_tiny_model()) as m:
        raise RuntimeError
    assert_stock_layout(m)


def test_gqa_weight_properties_unchanged() -> None:
    model = make_tiny_model(n_key_value_heads=2)
    w_k, w_v, qk = model.W_K.clone(), model.W_V.clone(), model.blocks[0].attn.QK.AB.clone()
    with fast_weights(model):
        assert torch.equal(model.W_K, w_k) and torch.equal(model.W_V, w_v)
        assert torch.equal(model.blocks[0].attn.QK.AB, qk)


def _cfg_kwargs(model: HookedTransformer) -> dict:
    cfg = model.cfg
    return dict(
        n_key_value_heads=cfg.n_key_value_heads,
        rotary_dim=cfg.rotary_dim,
        rotary_adjacent_pairs=cfg.rotary_adjacent_pairs,
    )


def test_layout_survives_dtype_and_device_moves() -> None:
    model = make_tiny_model(n_key_value_heads=2)
    enable_fast_path(model)
    model.to(torch.float64)
    model.to("cpu")
    assert fast_path_status(model).enabled
    fast = logits(model)
    disable_fast_path(model)
    assert torch.equal(fast, logits(model))
