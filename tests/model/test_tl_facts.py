"""The TransformerLens facts the design relies on, checked against the pinned version."""

from __future__ import annotations

import torch

from tempo_lens import make_tiny_model
from tempo_lens.backends import kv_cache_length, make_kv_cache, truncate_kv_cache
from tempo_lens.backends.hooked import rotary_inv_freq


def test_rot_k_sees_all_keys_rot_q_only_new_and_cache_is_unrotated() -> None:
    model = make_tiny_model(n_key_value_heads=2)
    shapes: dict[str, tuple[int, ...]] = {}

    def grab(x, hook):
        shapes[hook.name.split(".")[-1]] = tuple(x.shape)

    cache = make_kv_cache(model)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        model(ids, past_kv_cache=cache, attention_mask=torch.ones_like(ids))
        new = torch.tensor([[6, 7]])
        model.run_with_hooks(
            new,
            past_kv_cache=cache,
            attention_mask=torch.ones_like(new),
            fwd_hooks=[
                ("blocks.0.attn.hook_rot_q", grab),
                ("blocks.0.attn.hook_rot_k", grab),
                ("blocks.0.attn.hook_attn_scores", grab),
            ],
        )
    assert shapes["hook_rot_q"] == (1, 2, 4, 16)  # only the new queries
    assert shapes["hook_rot_k"] == (1, 7, 2, 16)  # every key, GQA key heads
    assert shapes["hook_attn_scores"] == (1, 4, 2, 7)
    # The cache holds keys before rotation: position 2's cached key equals hook_k, not hook_rot_k.
    _, act = model.run_with_cache(torch.tensor([[1, 2, 3]]))
    cached = cache.entries[0].past_keys[0, 2]
    assert torch.allclose(cached, act["blocks.0.attn.hook_k"][0, 2], atol=1e-6)
    assert not torch.allclose(cached, act["blocks.0.attn.hook_rot_k"][0, 2], atol=1e-3)
    assert kv_cache_length(cache) == 7
    truncate_kv_cache(cache, 5)
    assert kv_cache_length(cache) == 5


def test_attn_scores_hook_fires_after_causal_mask() -> None:
    model = make_tiny_model()
    _, act = model.run_with_cache(torch.tensor([[1, 2, 3, 4]]))
    scores = act["blocks.0.attn.hook_attn_scores"][0]
    upper = torch.triu(torch.ones(4, 4, dtype=torch.bool), diagonal=1)
    assert torch.isinf(scores[:, upper]).all() and torch.isfinite(scores[:, ~upper]).all()


def test_inv_freq_matches_tl_tables() -> None:
    for adjacent in (False, True):
        model = make_tiny_model(rotary_dim=8, rotary_adjacent_pairs=adjacent)
        inv = rotary_inv_freq(model, 0)
        expected = 1.0 / (10000 ** (torch.arange(0, 8, 2, dtype=torch.float64) / 8))
        assert torch.allclose(inv, expected, rtol=1e-12)


def test_hook_names_are_built_and_parsed_in_one_place(tiny) -> None:
    from tempo_lens.backends import hook_name, layer_of

    for layer in range(tiny.cfg.n_layers):
        for short in ("pattern", "attn_scores", "rot_q", "rot_k", "z", "resid_pre"):
            name = hook_name(layer, short)
            assert name in tiny.hook_dict and layer_of(name) == layer
    assert hook_name(1, "pattern") == "blocks.1.attn.hook_pattern"
    assert layer_of("hook_embed") is None and layer_of("ln_final.hook_normalized") is None
