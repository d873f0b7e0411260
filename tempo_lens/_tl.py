"""Every use of TransformerLens internals lives here (HookedTransformer backend).

Re-exports :mod:`tempo_lens._tl_build` (weight conversion from Hugging Face, state-dict
loading) and :mod:`tempo_lens._tl_cache` (KV caches and forwards on either backend), so
``from tempo_lens._tl import ...`` reaches all of them; the ``TransformerBridge`` backend
is :mod:`tempo_lens._bridge`.

TransformerLens 4.0 removed ``HookedTransformer``: then :data:`HAS_HOOKED_TRANSFORMER` is
False, :func:`is_hooked` is always False, and ``import tempo_lens`` works with the bridge
backend alone (``load_model`` returns a ``TransformerBridge``). Facts relied on
(each is checked by ``tests/model/test_tl_facts.py`` against the pinned version):

* keys are stored in the KV cache unrotated and re-rotated from position 0 every
  forward, so ``hook_rot_k`` sees the whole key sequence; ``hook_rot_q`` sees only the new
  queries (rotated from the cache offset);
* ``hook_attn_scores`` fires after the causal mask and before the softmax;
* GQA models have ``n_key_value_heads`` heads at ``hook_rot_k``;
* local-attention layers (``attn_type == "local"``) mask keys at *physical* distance
  ``>= cfg.window_size`` before ``hook_attn_scores``, reading ``cfg.window_size`` at
  forward time; each layer's RoPE base is ``attn._rotary_base()`` (Gemma 3: 1e4 local,
  1e6 global).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

try:
    from transformer_lens import HookedTransformer
except ImportError:  # TransformerLens 4.x removed it: the bridge backend only
    HookedTransformer = None  # type: ignore[assignment,misc]

from tempo_lens._tl_build import (
    attach_tokenizer,
    hooked_config,
    hooked_from_hf,
    hooked_from_state_dict,
    hooked_parameters,
    processed_config_dict,
)
from tempo_lens._tl_cache import (
    KVCache,
    forward,
    kv_cache_length,
    kv_cache_nbytes,
    make_kv_cache,
    reorder_kv_cache,
    scratch_kv_cache,
    select_kv_cache,
    truncate_kv_cache,
)

__all__ = [
    "HAS_HOOKED_TRANSFORMER",
    "KVCache",
    "forward",
    "kv_cache_nbytes",
    "scratch_kv_cache",
    "NotRotaryError",
    "TempoModel",
    "add_permanent_hooks",
    "hook_functions",
    "remove_hooks",
    "UnsupportedAttentionError",
    "attention_windows",
    "physical_windows_disabled",
    "attach_tokenizer",
    "check_rotary",
    "hooked_config",
    "hooked_from_hf",
    "hooked_from_state_dict",
    "hook_name",
    "hooked_parameters",
    "is_attention_shaped",
    "is_hooked",
    "kv_cache_length",
    "layer_of",
    "layer_windows",
    "make_kv_cache",
    "processed_config_dict",
    "reorder_kv_cache",
    "rotary_inv_freq",
    "select_kv_cache",
    "truncate_kv_cache",
]


HAS_HOOKED_TRANSFORMER = HookedTransformer is not None
"""Whether the installed TransformerLens has ``HookedTransformer`` (3.x; 4.x removed it)."""

TempoModel: TypeAlias = Any
"""A rotary ``HookedTransformer`` (TransformerLens 3.x) or a ``TransformerBridge`` around
a rotary Hugging Face model (3.9 and 4.x); see :mod:`tempo_lens._bridge`."""


def is_hooked(model: Any) -> bool:
    """Whether ``model`` is a ``HookedTransformer`` (always False on TransformerLens 4.x)."""
    return HookedTransformer is not None and isinstance(model, HookedTransformer)


class NotRotaryError(ValueError):
    """The model does not use rotary position embeddings."""


class UnsupportedAttentionError(ValueError):
    """The model's attention has a variant the TEMPO hooks cannot reproduce exactly."""


def check_rotary(model: TempoModel) -> None:
    """Raise unless ``model`` is a rotary model the TEMPO hooks handle exactly.

    A ``TransformerBridge`` is checked by :func:`tempo_lens._bridge.check_bridge`.

    Raises:
        TypeError: Neither a ``HookedTransformer`` nor a ``TransformerBridge``.
        NotRotaryError: No RoPE, or dynamic-NTK RoPE.
        UnsupportedAttentionError: Non-causal attention, or log-n query scaling (which
            depends on the physical position).
    """
    if not is_hooked(model):
        from tempo_lens._bridge import check_bridge, is_bridge

        if is_bridge(model):
            check_bridge(model)
            return
        raise TypeError(
            "tempo_lens needs a transformer_lens.HookedTransformer or TransformerBridge, got "
            f"{type(model).__name__}"
        )
    cfg = model.cfg
    if cfg.positional_embedding_type != "rotary":
        raise NotRotaryError(
            f"model uses positional_embedding_type={cfg.positional_embedding_type!r}; TEMPO shares "
            "RoPE positions, so tempo_lens supports only rotary models (e.g. Llama, Mistral, "
            "Qwen, Pythia, SmolLM2) — load one of those"
        )
    if getattr(cfg, "use_dynamic_ntk_rope", False):
        raise NotRotaryError(
            "dynamic-NTK RoPE rescales frequencies with sequence length; tempo_lens cannot "
            "re-rotate it exactly — disable use_dynamic_ntk_rope"
        )
    if getattr(cfg, "use_logn_attn", False):
        raise UnsupportedAttentionError(
            "use_logn_attn scales queries by log(physical position); TEMPO positions are "
            "logical, so tempo_lens cannot reproduce it exactly — disable use_logn_attn"
        )
    if cfg.attention_dir != "causal":
        raise UnsupportedAttentionError(
            f"attention_dir={cfg.attention_dir!r}: tempo_lens supports causal decoders only"
        )


# cfg objects whose window_size is overridden by physical_windows_disabled: id -> original.
_WINDOW_OVERRIDES: dict[int, tuple[Any, int]] = {}
_NO_WINDOW = 2**62


def _attn_configs(model: HookedTransformer) -> list[Any]:
    return list({id(b.attn.cfg): b.attn.cfg for b in model.blocks}.values())


def attention_windows(model: HookedTransformer) -> list[int | None]:
    """Sliding-window size of each layer's attention (``None`` for global layers)."""
    out: list[int | None] = []
    for block in model.blocks:
        attn = block.attn
        if getattr(attn, "attn_type", "global") != "local":
            out.append(None)
            continue
        saved = _WINDOW_OVERRIDES.get(id(attn.cfg))
        window = saved[1] if saved is not None else attn.cfg.window_size
        if not isinstance(window, int) or window <= 0:
            raise UnsupportedAttentionError(f"local attention with window_size={window!r}")
        out.append(window)
    return out


@contextmanager
def physical_windows_disabled(model: HookedTransformer) -> Iterator[None]:
    """Within the block, local-attention layers apply a plain causal mask.

    TransformerLens masks local layers by *physical* distance before
    ``hook_attn_scores``; TEMPO's window is by *logical* distance, which keeps a superset
    of those keys, so the mask hook must see them unmasked. ``cfg.window_size`` (read at
    forward time) is set beyond any sequence length and restored on exit; nested blocks
    are fine. Models without local layers are untouched.
    """
    if all(w is None for w in attention_windows(model)):
        yield
        return
    entered = []
    for cfg in _attn_configs(model):
        if id(cfg) not in _WINDOW_OVERRIDES:
            _WINDOW_OVERRIDES[id(cfg)] = (cfg, cfg.window_size)
            cfg.window_size = _NO_WINDOW
            entered.append(cfg)
    try:
        yield
    finally:
        for cfg in entered:
            cfg.window_size = _WINDOW_OVERRIDES.pop(id(cfg))[1]


def layer_windows(model: TempoModel) -> list[int | None]:
    """Each layer's sliding window (``None``: full attention), on either backend."""
    if _is_bridge(model):
        from tempo_lens import _bridge

        return _bridge.attention_windows(model)
    return attention_windows(model)


def _is_bridge(model: Any) -> bool:
    from tempo_lens._bridge import is_bridge

    return is_bridge(model)


def hook_name(layer: int, name: str) -> str:
    """The full name of hook ``name`` of block ``layer``, e.g. ``blocks.3.attn.hook_pattern``.

    Built by TransformerLens' own ``get_act_name``, so its aliases work: ``"pattern"``,
    ``"attn_scores"``, ``"rot_q"``, ``"rot_k"``, ``"q"``, ``"k"``, ``"v"``, ``"z"`` give
    ``blocks.{layer}.attn.hook_*``; ``"resid_pre"``, ``"mlp_out"``, ... give
    ``blocks.{layer}.hook_*``.
    """
    return get_act_name(name, int(layer))


def is_attention_shaped(name: str) -> bool:
    """Whether hook ``name`` is ``[batch, head_index, query_pos, key_pos]`` (pattern, scores)."""
    return name.rsplit(".", 1)[-1] in ("hook_pattern", "hook_attn_scores")


def layer_of(name: str) -> int | None:
    """The block index of a hook name (``"blocks.3.attn.hook_pattern"`` -> 3), else None.

    The inverse of :func:`hook_name` for any hook inside a block; names outside the
    blocks (``hook_embed``, ``ln_final.hook_normalized``) give ``None``.
    """
    parts = name.split(".")
    if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit():
        return int(parts[1])
    return None


def rotary_inv_freq(model: HookedTransformer, layer: int) -> Tensor:
    """Inverse frequencies (radians per position) of one layer's rotary embedding, float64.

    Obtained from TransformerLens' own sin/cos construction at positions 0 and 1 (in
    float64), so every RoPE variant TransformerLens implements (NTK-by-parts, YaRN,
    linear scaling, local/global bases) is respected.

    Returns:
        ``[rotary_dim // 2]`` tensor, one angle per rotated pair.
    """
    attn = model.blocks[layer].attn
    rotary_dim = int(model.cfg.rotary_dim or model.cfg.d_head)
    sin, cos = attn.calculate_sin_cos_rotary(
        rotary_dim, 2, base=attn._rotary_base(), dtype=torch.float64
    )
    angle = torch.atan2(sin[1], cos[1])  # angle at position 1 == inv_freq (all < pi)
    if model.cfg.rotary_adjacent_pairs:
        return angle[0::2].clone()
    return angle[: rotary_dim // 2].clone()


def max_context(model: TempoModel) -> int:
    """The model's maximum context length (``cfg.n_ctx``)."""
    n = int(model.cfg.n_ctx)
    return n if n > 0 else math.inf  # type: ignore[return-value]


# ---------------------------------------------------------------------------- fast path
# Which parameters each TransformerLens 3.x forward re-lays-out on every call, and the
# permutation it applies before handing the result to ``F.linear`` (see tempo_lens.fast).
# Source lines (transformer_lens 3.9):
#   utilities/attention.py simple_attn_linear: rearrange(w, "h m d -> (h d) m")   (0, 2, 1)
#   components/abstract_attention.py forward:   rearrange(W_O, "h d m -> m (h d)") (2, 0, 1)
#   components/mlps/gated_mlp.py forward:        W_gate.T / W_in.T / W_out.T        (1, 0)
#   components/unembed.py forward:               W_U.T                               (1, 0)
_QKV_ORDER = (0, 2, 1)
_O_ORDER = (2, 0, 1)
_T_ORDER = (1, 0)


def fast_layout_targets(
    model: TempoModel,
) -> list[tuple[str, torch.nn.Parameter, tuple[int, ...]]]:
    """``(name, parameter, order)`` for every weight the stock forward copies per call.

    ``order`` is the permutation after which the forward wants a contiguous tensor.
    Configurations in which the forward uses a weight without copying it (split/attn-in
    inputs use an einsum, ``use_attn_result`` a broadcast product, 4-bit weights
    bitsandbytes, ungrouped GQA ``repeat_interleave``) are left out, so the fast path can
    never change their arithmetic.
    """
    if not is_hooked(model):  # a TransformerBridge computes with the HF modules
        return []
    from transformer_lens.components import AbstractAttention, Unembed
    from transformer_lens.components.mlps.gated_mlp import GatedMLP

    cfg = model.cfg
    if getattr(cfg, "load_in_4bit", False):
        return []
    simple_qkv = not (cfg.use_split_qkv_input or cfg.use_attn_in)
    ungrouped = bool(getattr(cfg, "ungroup_grouped_query_attention", False))
    out: list[tuple[str, torch.nn.Parameter, tuple[int, ...]]] = []
    for mod_name, module in model.named_modules():
        own = module._parameters
        wanted: list[tuple[str, tuple[int, ...]]] = []
        if isinstance(module, AbstractAttention):
            if simple_qkv:
                names = (
                    ["W_Q", "W_K", "W_V"] if ungrouped else ["W_Q", "W_K", "W_V", "_W_K", "_W_V"]
                )
                wanted += [(n, _QKV_ORDER) for n in names]
            if not cfg.use_attn_result:
                wanted.append(("W_O", _O_ORDER))
        elif type(module) is GatedMLP:
            wanted += [("W_gate", _T_ORDER), ("W_in", _T_ORDER), ("W_out", _T_ORDER)]
        elif type(module) is Unembed:
            wanted.append(("W_U", _T_ORDER))
        for pname, order in wanted:
            param = own.get(pname)
            if isinstance(param, torch.nn.Parameter) and param.ndim == len(order):
                out.append((f"{mod_name}.{pname}", param, order))
    return out


__all__ += ["fast_layout_targets"]


def model_name(model: TempoModel) -> str:
    """A human-readable name for the model (``cfg.model_name``)."""
    return str(getattr(model.cfg, "model_name", "") or "custom")


# ---------------------------------------------------------------------------- hook handles
def hook_functions(hook_point: Any) -> list[Any]:
    """The user functions of the forward hooks registered on a ``HookPoint`` (in order)."""
    return [getattr(h, "user_hook", None) for h in getattr(hook_point, "fwd_hooks", [])]


def add_permanent_hooks(model: Any, fwd_hooks: list[tuple[str, Any]]) -> list[tuple[Any, Any]]:
    """Register ``fwd_hooks`` as *permanent* TransformerLens hooks.

    ``model`` is a ``HookedTransformer`` or a ``TransformerBridge`` (both have
    ``hook_dict`` of TransformerLens ``HookPoint`` objects).

    ``reset_hooks()`` with its default ``including_permanent=False`` keeps them. Returns
    ``(hook_point, handle)`` pairs for :func:`remove_hooks`.
    """
    added = []
    for name, fn in fwd_hooks:
        hp = model.hook_dict[name]
        hp.add_hook(fn, dir="fwd", is_permanent=True)
        added.append((hp, hp.fwd_hooks[-1]))
    return added


def remove_hooks(added: list[tuple[Any, Any]]) -> int:
    """Remove hooks registered by :func:`add_permanent_hooks`.

    Returns how many were no longer registered (removed by someone else in the meantime).
    """
    missing = 0
    for hp, handle in added:
        if any(h is handle for h in hp.fwd_hooks):
            handle.hook.remove()
            hp.fwd_hooks = [h for h in hp.fwd_hooks if h is not handle]
        else:
            missing += 1
    return missing
