"""The ``HookedTransformer`` backend (TransformerLens 3.x): every use of its internals.

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

:class:`HookedBackend` is this module's :class:`~tempo_lens.backends.base.Backend`; the
KV cache is TransformerLens' ``TransformerLensKeyValueCache`` (:data:`CACHE_OPS`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import Tensor
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

try:
    from transformer_lens import HookedTransformer
except ImportError:  # TransformerLens 4.x removed it: the bridge backend only
    HookedTransformer = None  # type: ignore[assignment,misc]

from tempo_lens.backends.base import (
    BackendBase,
    KVCache,
    NotRotaryError,
    TempoModel,
    UnsupportedAttentionError,
)

__all__ = [
    "CACHE_OPS",
    "HAS_HOOKED_TRANSFORMER",
    "HookedBackend",
    "attention_windows",
    "check_hooked",
    "fast_layout_targets",
    "is_hooked",
    "physical_windows_disabled",
    "rotary_inv_freq",
]


HAS_HOOKED_TRANSFORMER = HookedTransformer is not None
"""Whether the installed TransformerLens has ``HookedTransformer`` (3.x; 4.x removed it)."""


def is_hooked(model: Any) -> bool:
    """Whether ``model`` is a ``HookedTransformer`` (always False on TransformerLens 4.x)."""
    return HookedTransformer is not None and isinstance(model, HookedTransformer)


def check_hooked(model: TempoModel) -> None:
    """Raise unless the ``HookedTransformer`` ``model`` is one the TEMPO hooks handle exactly.

    Raises:
        NotRotaryError: No RoPE, or dynamic-NTK RoPE.
        UnsupportedAttentionError: Non-causal attention, or log-n query scaling (which
            depends on the physical position).
    """
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


def _attn_configs(model: TempoModel) -> list[Any]:
    return list({id(b.attn.cfg): b.attn.cfg for b in model.blocks}.values())


def attention_windows(model: TempoModel) -> list[int | None]:
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
def physical_windows_disabled(model: TempoModel) -> Iterator[None]:
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


def rotary_inv_freq(model: TempoModel, layer: int) -> Tensor:
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


# ---------------------------------------------------------------------------- fast path
# Which parameters each TransformerLens 3.x forward re-lays-out on every call, and the
# permutation it applies before handing the result to ``F.linear`` (see tempo_lens.backends.fast).
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


# ---------------------------------------------------------------------------- KV cache
class _CacheOps:
    """The operations on TransformerLens' ``TransformerLensKeyValueCache``.

    Entries hold ``past_keys`` / ``past_values`` ``[batch, pos, head_index, d_head]`` and the
    cache a ``previous_attention_mask`` ``[batch, pos]`` (0 hides a cached position).
    """

    def owns(self, cache: Any) -> bool:
        return isinstance(cache, TransformerLensKeyValueCache)

    def length(self, cache: Any) -> int:
        return int(cache.entries[0].past_keys.shape[1])

    def nbytes(self, cache: Any) -> int:
        return sum(
            e.past_keys.numel() * e.past_keys.element_size()
            + e.past_values.numel() * e.past_values.element_size()
            for e in cache.entries
        )

    def truncate(self, cache: Any, length: int) -> None:
        for entry in cache.entries:
            entry.past_keys = entry.past_keys[:, :length]
            entry.past_values = entry.past_values[:, :length]
        cache.previous_attention_mask = cache.previous_attention_mask[:, :length]

    def reorder(self, cache: Any, batch_indices: Tensor, lengths: list[int] | None) -> None:
        idx = batch_indices.to(cache.previous_attention_mask.device)
        for entry in cache.entries:
            entry.past_keys = entry.past_keys.index_select(0, idx)
            entry.past_values = entry.past_values.index_select(0, idx)
        mask = cache.previous_attention_mask.index_select(0, idx)
        for row, n in enumerate(lengths or []):
            mask[row, n:] = 0
        cache.previous_attention_mask = mask

    def select(self, cache: Any, batch_indices: Tensor, positions: Tensor) -> None:
        rows = batch_indices.to(cache.previous_attention_mask.device)
        pos = positions.to(cache.previous_attention_mask.device)
        for entry in cache.entries:
            entry.past_keys = entry.past_keys.index_select(0, rows).index_select(1, pos)
            entry.past_values = entry.past_values.index_select(0, rows).index_select(1, pos)
        mask = cache.previous_attention_mask.index_select(0, rows)
        cache.previous_attention_mask = mask[:, pos]

    @contextmanager
    def scratch(self, cache: Any, length: int) -> Iterator[None]:
        saved = [(e.past_keys, e.past_values) for e in cache.entries]
        saved_mask = cache.previous_attention_mask
        self.truncate(cache, length)
        cache.freeze()
        try:
            yield
        finally:
            cache.unfreeze()
            for entry, (keys, values) in zip(cache.entries, saved, strict=True):
                entry.past_keys, entry.past_values = keys, values
            cache.previous_attention_mask = saved_mask


CACHE_OPS = _CacheOps()
"""KV-cache operations for ``TransformerLensKeyValueCache`` (see
:class:`~tempo_lens.backends.base.CacheOps`)."""


# ---------------------------------------------------------------------------- backend
class HookedBackend(BackendBase):
    """The :class:`~tempo_lens.backends.base.Backend` of a ``HookedTransformer``.

    Args:
        model: A ``HookedTransformer``.
    """

    name: ClassVar[str] = "hooked"
    keys_cached_rotated: ClassVar[bool] = False
    cache_ops: ClassVar[_CacheOps] = CACHE_OPS

    @staticmethod
    def matches(model: Any) -> bool:
        """Whether ``model`` is a ``HookedTransformer``."""
        return is_hooked(model)

    def check(self) -> None:
        """Raise unless TEMPO can act on the model exactly (see :func:`check_rotary`)."""
        check_hooked(self.model)

    def rotary_inv_freqs(self) -> list[Tensor]:
        """Per layer, RoPE inverse frequencies (radians per position), float64."""
        return [rotary_inv_freq(self.model, layer) for layer in range(self.model.cfg.n_layers)]

    def rotary_layout(self) -> tuple[int, bool]:
        """``(rotary_dim, adjacent_pairs)``."""
        cfg = self.model.cfg
        return int(cfg.rotary_dim or cfg.d_head), bool(cfg.rotary_adjacent_pairs)

    def attention_windows(self) -> list[int | None]:
        """Per layer, the sliding-window size in tokens (``None``: full attention)."""
        return attention_windows(self.model)

    def physical_windows_disabled(self) -> Any:
        """Context manager: the model's physical sliding-window masks off."""
        return physical_windows_disabled(self.model)

    def make_kv_cache(self, batch_size: int = 1) -> KVCache:
        """A fresh, empty KV cache."""
        cfg = self.model.cfg
        return TransformerLensKeyValueCache.init_cache(cfg, cfg.device, batch_size)

    def forward(
        self,
        tokens: Tensor,
        *,
        cache: KVCache | None = None,
        attention_mask: Tensor | None = None,
        positions: Tensor | None = None,
    ) -> Tensor:
        """Logits; the ``HookedTransformer`` derives positions from ``attention_mask``."""
        del positions  # rotated to the count of real tokens before each one (the mask)
        if attention_mask is None:
            attention_mask = torch.ones(
                tokens.shape[0], tokens.shape[1], dtype=torch.long, device=tokens.device
            )
        if cache is None:
            return self.model(tokens, attention_mask=attention_mask)
        return self.model(tokens, past_kv_cache=cache, attention_mask=attention_mask)

    final_residual_hook: ClassVar[str] = "ln_final.hook_normalized"

    def pre_rotation_keys(self, layer: int, k: Tensor) -> Tensor:
        """``hook_k`` through the layer's key norm, as TransformerLens applies it."""
        attn = self.model.blocks[layer].attn
        cfg = self.model.cfg
        norm = getattr(attn, "k_norm", None)
        if norm is None:
            return k
        if cfg.use_qk_norm:  # per head (Gemma 3, Qwen 3)
            return attn._apply_qk_norm(k, norm)
        flat = norm(k.reshape(*k.shape[:-2], -1))  # OLMo: over the projected vector
        return flat.reshape(k.shape)

    def unembed(self, resid: Tensor) -> Tensor:
        """Logits from ``ln_final.hook_normalized``, as the forward computes them.

        The final norm's weight (when not folded into the unembedding), ``model.unembed``,
        then soft-capping.
        """
        weight = getattr(self.model.ln_final, "w", None)
        if weight is not None:  # RMSNorm multiplies by w after hook_normalized
            resid = resid * weight
        logits = self.model.unembed(resid)
        cap = getattr(self.model.cfg, "output_logits_soft_cap", None)
        if cap is not None and cap > 0:
            logits = cap * torch.tanh(logits / cap)
        return logits

    def logit_lens(self, resid: Tensor) -> Tensor:
        """``ln_final`` (if the model has a final norm), ``model.unembed``, soft-capping.

        The same three steps as the end of ``HookedTransformer.forward``.
        """
        if self.model.cfg.normalization_type is not None:
            resid = self.model.ln_final(resid)
        logits = self.model.unembed(resid)
        cap = getattr(self.model.cfg, "output_logits_soft_cap", None)
        if cap is not None and cap > 0:
            logits = cap * torch.tanh(logits / cap)
        return logits

    def logits_from_layer(
        self, tokens: Tensor, resid_pre: Tensor, start_layer: int, positions: Sequence[int]
    ) -> Tensor:
        """Logits at ``positions`` of a forward from block ``start_layer`` (``start_at_layer``)."""
        del tokens  # the earlier blocks are skipped: their output is resid_pre
        n_l = self.model.cfg.n_layers
        resid = self.model(resid_pre, start_at_layer=start_layer, stop_at_layer=n_l)
        return self.logit_lens(resid[:, list(positions)])  # ln_final once, then W_U
