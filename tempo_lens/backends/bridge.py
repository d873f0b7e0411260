"""Every use of ``TransformerBridge`` internals lives here (the bridge backend).

``transformer_lens.model_bridge.TransformerBridge`` (TransformerLens 3.9 and 4.x) wraps a
Hugging Face model and re-implements its rotary attention
(``PositionEmbeddingsAttentionBridge``) so the TransformerLens hook points fire. Facts
relied on (checked by ``tests/model/test_bridge.py`` against the installed version):

* ``blocks.{l}.attn.hook_rot_q`` / ``hook_rot_k`` fire after Hugging Face's RoPE at the
  *physical* positions (``arange + past length``), in the ``[batch, pos, head_index,
  d_head]`` layout, and only on the *new* keys: the Hugging Face KV cache is updated after
  the hook, so cached keys keep the rotation the hook gave them;
* ``hook_attn_scores`` fires after the Hugging Face 4-D mask (causal; sliding window by
  *physical* distance, built from ``config.sliding_window`` at forward time) and before
  the softmax; masked entries hold ``-inf`` or the dtype's minimum;
* the RoPE inverse frequencies are the Hugging Face rotary embedding's buffers
  (``inv_freq``, or ``{layer_type}_inv_freq`` for per-layer-type bases such as Gemma 3).

Size: every use of the bridge's internals is kept in this one module on purpose (the cache,
the window overrides, the refusals' probes and the backend class), so it runs past 500
lines.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import Tensor

from tempo_lens.backends.base import (
    BackendBase,
    KVCache,
    NotRotaryError,
    UnsupportedAttentionError,
    hook_name,
)
from tempo_lens.backends.refusals import check_hf_attention, probe_rotary_hooks

__all__ = [
    "CACHE_OPS",
    "BridgeBackend",
    "BridgeCache",
    "attention_windows",
    "boot",
    "check_bridge",
    "is_bridge",
    "physical_windows_disabled",
    "rotary_inv_freqs",
    "rotary_layout",
    "unwrapped_hf_copy",
]

_NO_WINDOW = 2**62
_WINDOW_OVERRIDES: dict[int, tuple[Any, int]] = {}


def _bridge_class() -> type | None:
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:  # pragma: no cover - TransformerLens without the bridge
        return None
    return TransformerBridge


def is_bridge(model: Any) -> bool:
    """Whether ``model`` is a ``TransformerBridge``."""
    cls = _bridge_class()
    return cls is not None and isinstance(model, cls)


def boot(hf_model: Any, tokenizer: Any, name: str, *, prepend_bos: bool) -> Any:
    """``TransformerBridge.boot_transformers`` around an already loaded HF causal LM.

    Nothing is downloaded: the config comes from ``hf_model``; the bridge keeps the given
    tokenizer unchanged (TransformerLens would reload it with ``add_bos_token=True``) and
    ``cfg.default_prepend_bos = prepend_bos`` (the model's training convention). The
    bridge wraps ``hf_model``'s modules in place.
    """
    from transformer_lens.model_bridge import TransformerBridge

    if not getattr(hf_model.config, "architectures", None):
        hf_model.config.architectures = [type(hf_model).__name__]
    device = next(hf_model.parameters()).device
    bridge = TransformerBridge.boot_transformers(  # it edits the tokenizer it is given
        name, hf_model=hf_model, tokenizer=copy.deepcopy(tokenizer), device=device
    )
    check_bridge(bridge)
    bridge._tokenizer = tokenizer  # the setter would re-run the BOS-adding setup
    bridge.cfg.default_prepend_bos = prepend_bos
    bridge.cfg.tokenizer_prepends_bos = len(tokenizer.encode("a")) > 1
    return bridge


def _hf(model: Any) -> Any:
    return model.original_model


def unwrapped_hf_copy(model: Any) -> Any:
    """A fresh Hugging Face model with the bridge's weights, outside the bridge (eval).

    The bridge wraps the Hugging Face modules it was given in place (their parameters sit
    under ``._original_component``), so running ``original_model`` directly would run the
    bridge's components; this copy is the plain Hugging Face computation, for Hugging
    Face's own decoders and as an oracle. Same dtype and device.

    Raises:
        ValueError: a parameter of the fresh model has no counterpart in the bridge.
    """
    import re

    hf = _hf(model)
    weights = {re.sub(r"\._original_component", "", k): v for k, v in hf.state_dict().items()}
    fresh = type(hf)(hf.config)
    missing, _ = fresh.load_state_dict(weights, strict=False)  # aliases are left over
    if missing:
        raise ValueError(f"bridge weights without a Hugging Face counterpart: {missing[:3]}")
    param = next(hf.parameters())
    return fresh.to(device=param.device, dtype=param.dtype).eval()


def _hf_config(model: Any) -> Any:
    return _hf(model).config


def _rotary_embedding(model: Any) -> Any:
    hf = _hf(model)
    for owner in (getattr(hf, "model", None), getattr(hf, "base_model", None), hf):
        rot = getattr(owner, "rotary_emb", None)
        if rot is not None:
            return rot
    raise UnsupportedAttentionError(
        f"{type(hf).__name__} has no model-level rotary embedding (rotary_emb): its "
        "attention layers compute RoPE themselves (e.g. GPT-J/CodeGen's embed_positions "
        "table), so the bridge backend cannot read the frequencies to re-rotate queries "
        "and keys"
    )


def check_bridge(model: Any) -> None:
    """Raise unless every layer of the bridge exposes the hooks TEMPO needs.

    Raises:
        NotRotaryError: No RoPE, or a RoPE type whose frequencies depend on the length.
        UnsupportedAttentionError: A layer without ``hook_rot_q``/``hook_rot_k``/
            ``hook_attn_scores`` (attention the bridge does not re-implement), rotary hooks
            that never fire (a two-token probe forward, run once per model), RoPE computed
            inside the attention layers (GPT-J, CodeGen), latent attention (DeepSeek MLA),
            layers without RoPE (Llama 4 NoPE) or chunked attention.
    """
    if getattr(model.cfg, "positional_embedding_type", None) != "rotary":
        raise NotRotaryError(
            "the bridged model does not use rotary position embeddings; TEMPO shares RoPE "
            "positions, so tempo_lens supports only rotary models"
        )
    rot = _rotary_embedding(model)
    rope_types = getattr(rot, "rope_type", "default")
    kinds = set(rope_types.values()) if isinstance(rope_types, dict) else {rope_types}
    if kinds & {"dynamic", "longrope"}:
        raise NotRotaryError(
            f"rope_type {sorted(kinds)} rescales frequencies with the sequence length; "
            "tempo_lens cannot re-rotate it exactly"
        )
    hooks = model.hook_dict
    for layer in range(int(model.cfg.n_layers)):
        for short in ("rot_q", "rot_k", "attn_scores"):
            if (name := hook_name(layer, short)) not in hooks:
                raise UnsupportedAttentionError(
                    f"{name} missing: this bridge does not re-implement the layer's rotary "
                    "attention, so TEMPO cannot act on it"
                )
    check_hf_attention(_hf_config(model))
    probe_rotary_hooks(model, _hf(model))


def rotary_inv_freqs(model: Any) -> list[Tensor]:
    """Each layer's RoPE inverse frequencies (float64), from the HF rotary embedding."""
    rot = _rotary_embedding(model)
    types = getattr(_hf_config(model), "layer_types", None)
    out = []
    for layer in range(int(model.cfg.n_layers)):
        name = f"{types[layer]}_inv_freq" if types else "inv_freq"
        inv = getattr(rot, name, None)
        if inv is None:
            inv = rot.inv_freq
        out.append(inv.detach().to(torch.float64).cpu())
    return out


def rotary_layout(model: Any) -> tuple[int, bool]:
    """``(rotary_dim, adjacent_pairs)`` of the bridged model's RoPE."""
    rotary_dim = 2 * int(rotary_inv_freqs(model)[0].numel())
    cfg = model.cfg
    adjacent = bool(getattr(cfg, "rotary_adjacent_pairs", False)) or bool(
        getattr(cfg, "rotary_interleaved_cos_sin", False)
    )
    return rotary_dim, adjacent


def attention_windows(model: Any) -> list[int | None]:
    """Sliding-window size of each layer (``None`` for full attention), from the HF config."""
    cfg = _hf_config(model)
    n = int(model.cfg.n_layers)
    saved = _WINDOW_OVERRIDES.get(id(cfg))
    window = saved[1] if saved is not None else getattr(cfg, "sliding_window", None)
    if window is None or getattr(cfg, "use_sliding_window", True) is False:
        return [None] * n
    types = getattr(cfg, "layer_types", None)
    if types:
        return [int(window) if t == "sliding_attention" else None for t in types[:n]]
    return [int(window)] * n


@contextmanager
def physical_windows_disabled(model: Any) -> Iterator[None]:
    """Within the block Hugging Face builds plain causal masks for sliding layers.

    ``config.sliding_window`` (read when the masks are built, every forward) is set beyond
    any length and restored on exit, so ``hook_attn_scores`` can apply TEMPO's logical
    window. Models without sliding layers are untouched.
    """
    cfg = _hf_config(model)
    if all(w is None for w in attention_windows(model)) or id(cfg) in _WINDOW_OVERRIDES:
        yield
        return
    _WINDOW_OVERRIDES[id(cfg)] = (cfg, cfg.sliding_window)
    cfg.sliding_window = _NO_WINDOW
    try:
        yield
    finally:
        cfg.sliding_window = _WINDOW_OVERRIDES.pop(id(cfg))[1]


# ---------------------------------------------------------------------------- forwards
class BridgeCache:
    """A Hugging Face ``DynamicCache`` with the operations generation needs.

    Keys are stored as the bridge's ``hook_rot_k`` left them (re-rotated to their logical
    positions), so an incremental forward sees exactly the keys a full forward would.
    Full-attention layers only (created without the model config): sliding windows are
    applied by TEMPO's mask hook, by logical distance, never by dropping cached keys.
    Tensors are ``[batch, head_index, pos, d_head]``.
    """

    def __init__(self) -> None:
        from transformers import DynamicCache

        self.hf = DynamicCache()
        self.key_mask: Tensor | None = None
        """``[batch, pos]`` 1/0 over the cached positions (0: hidden from every later
        query, see :meth:`hide_from`); ``None``: all visible."""

    def _layers(self) -> list[Any]:
        return [layer for layer in self.hf.layers if getattr(layer, "keys", None) is not None]

    def length(self) -> int:
        """Number of cached positions."""
        return int(self.hf.get_seq_length())

    def nbytes(self) -> int:
        """Bytes held by the cached keys and values."""
        return sum(
            t.numel() * t.element_size()
            for layer in self._layers()
            for t in (layer.keys, layer.values)
        )

    def select(self, rows: Tensor, positions: Tensor | None = None) -> None:
        """Keep batch ``rows`` (1-D long) and, if given, cached ``positions``, in place."""
        for layer in self._layers():
            keys, values = layer.keys.index_select(0, rows), layer.values.index_select(0, rows)
            if positions is not None:
                keys, values = keys.index_select(2, positions), values.index_select(2, positions)
            layer.keys, layer.values = keys, values
        if self.key_mask is not None:
            mask = self.key_mask.index_select(0, rows.to(self.key_mask.device))
            if positions is not None:
                mask = mask.index_select(1, positions.to(mask.device))
            self.key_mask = mask

    def truncate(self, length: int) -> None:
        """Drop cached positions from ``length`` on (in place)."""
        for layer in self._layers():
            layer.keys, layer.values = layer.keys[:, :, :length], layer.values[:, :, :length]
        if self.key_mask is not None:
            self.key_mask = self.key_mask[:, :length]

    def hide_from(self, lengths: list[int]) -> None:
        """Row ``b`` sees only its first ``lengths[b]`` cached positions from now on.

        The later ones are masked for every new query (the bridge's counterpart of a
        ``HookedTransformer`` cache's padding mask), and the row's next tokens are numbered
        from ``lengths[b]`` on (:meth:`BridgeBackend.forward`).
        """
        n = self.length()
        mask = torch.ones(len(lengths), n, dtype=torch.long)
        for row, k in enumerate(lengths):
            mask[row, k:] = 0
        self.key_mask = mask if self.key_mask is None else self.key_mask * mask.to(self.key_mask)

    @contextmanager
    def scratch(self, length: int) -> Iterator[None]:
        """Within the block the cache holds its first ``length`` positions; restored after."""
        saved = [(layer, layer.keys, layer.values) for layer in self._layers()]
        saved_mask = self.key_mask
        for layer, keys, values in saved:
            layer.keys, layer.values = keys[:, :, :length], values[:, :, :length]
        if saved_mask is not None:
            self.key_mask = saved_mask[:, :length]
        try:
            yield
        finally:
            for layer, keys, values in saved:
                layer.keys, layer.values = keys, values
            self.key_mask = saved_mask


def _cache_argument(model: Any) -> str:
    """The name under which the HF forward takes its KV cache (``cache`` since 5.x)."""
    import inspect

    params = inspect.signature(_hf(model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def bridge_forward(
    model: Any, tokens: Tensor, positions: Tensor, cache: BridgeCache | None = None
) -> Tensor:
    """Logits of a bridge forward at explicit ``positions`` (``[batch, pos]`` long).

    Positions are always passed, so the bridge never derives them from an attention
    mask (TransformerLens 4 does when a mask has zeros); the TEMPO hooks then re-rotate
    from these positions to the logical ones. With ``cache`` only the new tokens are
    given and the cache is extended in place. Without it an all-ones 2-D mask is passed:
    Hugging Face (>= 4.53) otherwise reads a position that does not follow its left
    neighbour (a batch row's pad slots) as the start of a packed sequence and hides
    everything before it. Pad slots are hidden by the TEMPO mask hook instead.
    """
    kwargs: dict[str, Any] = {"position_ids": positions.to(tokens.device)}
    if cache is None:  # an all-ones mask, else HF reads position resets (pads) as packing
        mask = torch.ones(tokens.shape, dtype=torch.long, device=tokens.device)
        return model(tokens, attention_mask=mask, use_cache=False, **kwargs)
    kwargs[_cache_argument(model)] = cache.hf
    if cache.key_mask is not None:  # hidden cached positions (hide_from): a 2-D padding mask
        new = torch.ones(tokens.shape, dtype=torch.long)
        cache.key_mask = torch.cat([cache.key_mask.to(new), new], dim=1)
        kwargs["attention_mask"] = cache.key_mask.to(tokens.device)
    with _cache_reaches_attention(model):
        return model(tokens, use_cache=True, **kwargs)


@contextmanager
def _cache_reaches_attention(model: Any) -> Iterator[None]:
    """Hand HF's ``cache=`` keyword to the bridge's attention as ``past_key_values``.

    Hugging Face 5.x passes the layer cache to attention as ``cache``; the bridge's
    re-implemented attention (TransformerLens 3.9 and 4.3) reads ``past_key_values``
    only, so without this the cache is silently left empty and incremental forwards
    attend to the new tokens alone (measured: logits 8.1 off on a tiny Llama).
    """

    def pre_hook(module: Any, args: Any, kwargs: dict[str, Any]) -> tuple[Any, Any]:
        if kwargs.get("past_key_values") is None and kwargs.get("cache") is not None:
            kwargs["past_key_values"] = kwargs["cache"]
        return args, kwargs

    handles = [
        block.attn.register_forward_pre_hook(pre_hook, with_kwargs=True) for block in model.blocks
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class _CacheOps:
    """The operations on a :class:`BridgeCache` (see :class:`~tempo_lens.backends.base.CacheOps`)."""

    def owns(self, cache: Any) -> bool:
        return isinstance(cache, BridgeCache)

    def length(self, cache: Any) -> int:
        return cache.length()

    def nbytes(self, cache: Any) -> int:
        return cache.nbytes()

    def truncate(self, cache: Any, length: int) -> None:
        cache.truncate(length)

    def reorder(self, cache: Any, batch_indices: Tensor, lengths: list[int] | None) -> None:
        cache.select(batch_indices)
        if lengths is not None:
            cache.hide_from(list(lengths))

    def select(self, cache: Any, batch_indices: Tensor, positions: Tensor) -> None:
        cache.select(batch_indices, positions)

    def scratch(self, cache: Any, length: int) -> Any:
        return cache.scratch(length)


CACHE_OPS = _CacheOps()
"""KV-cache operations for :class:`BridgeCache`."""


class BridgeBackend(BackendBase):
    """The :class:`~tempo_lens.backends.base.Backend` of a ``TransformerBridge``.

    Args:
        model: A ``TransformerBridge`` around a rotary Hugging Face causal LM.
    """

    name: ClassVar[str] = "bridge"
    keys_cached_rotated: ClassVar[bool] = True
    cache_ops: ClassVar[_CacheOps] = CACHE_OPS

    @staticmethod
    def matches(model: Any) -> bool:
        """Whether ``model`` is a ``TransformerBridge``."""
        return is_bridge(model)

    def check(self) -> None:
        """Raise unless TEMPO can act on the model exactly (see :func:`check_rotary`)."""
        check_bridge(self.model)

    def rotary_inv_freqs(self) -> list[Tensor]:
        """Per layer, RoPE inverse frequencies (radians per position), float64."""
        return rotary_inv_freqs(self.model)

    def rotary_layout(self) -> tuple[int, bool]:
        """``(rotary_dim, adjacent_pairs)``."""
        return rotary_layout(self.model)

    def attention_windows(self) -> list[int | None]:
        """Per layer, the sliding-window size in tokens (``None``: full attention)."""
        return attention_windows(self.model)

    def physical_windows_disabled(self) -> Any:
        """Context manager: the model's physical sliding-window masks off."""
        return physical_windows_disabled(self.model)

    def make_kv_cache(self, batch_size: int = 1) -> KVCache:
        """A fresh, empty KV cache."""
        del batch_size  # a DynamicCache takes its batch from the first forward
        return BridgeCache()

    def forward(
        self,
        tokens: Tensor,
        *,
        cache: KVCache | None = None,
        attention_mask: Tensor | None = None,
        positions: Tensor | None = None,
    ) -> Tensor:
        """Logits at explicit ``positions``.

        Default positions: ``past .. past + pos - 1``; after
        :meth:`BridgeCache.hide_from`, each row's count of visible cached positions on.

        ``attention_mask`` is ignored: pad slots are hidden by the TEMPO mask hook.
        """
        del attention_mask
        if positions is None:
            new = torch.arange(tokens.shape[1])[None]
            if cache is not None and cache.key_mask is not None:  # after hide_from
                positions = cache.key_mask.sum(1, keepdim=True).cpu() + new
            else:
                past = cache.length() if cache is not None else 0
                positions = (past + new).expand(tokens.shape)
        return bridge_forward(self.model, tokens, positions, cache)

    final_residual_hook: ClassVar[str] = "ln_final.hook_out"

    def pre_rotation_keys(self, layer: int, k: Tensor) -> Tensor:
        """``hook_k`` through the Hugging Face attention's ``k_norm``, if it has one."""
        attn = _hf(self.model).model.layers[layer].self_attn
        norm = getattr(attn, "k_norm", None)
        return k if norm is None else norm(k)

    def unembed(self, resid: Tensor) -> Tensor:
        """Logits from ``ln_final.hook_out``: the HF ``lm_head``, then its soft-capping."""
        hf = _hf(self.model)
        logits = hf.lm_head(resid)
        cap = getattr(hf.config, "final_logit_softcapping", None)
        if cap is not None and cap > 0:
            logits = cap * torch.tanh(logits / cap)
        return logits

    def logit_lens(self, resid: Tensor) -> Tensor:
        """The bridge's ``ln_final`` (the Hugging Face final norm), then :meth:`unembed`."""
        if getattr(self.model, "ln_final", None) is None:
            raise ValueError(f"{self!r} (the bridge backend) has no ln_final: no logit lens")
        return self.unembed(self.model.ln_final(resid))

    def logits_from_layer(
        self, tokens: Tensor, resid_pre: Tensor, start_layer: int, positions: Sequence[int]
    ) -> Tensor:
        """Logits at ``positions``: the whole forward from ``tokens``, one row per batch row."""
        del start_layer  # blocks before it are untouched by the caller's hooks: rerun them
        batch = resid_pre.shape[0]
        rows = tokens.expand(batch, -1)
        logits = self.forward(rows, positions=torch.arange(rows.shape[1]).expand(rows.shape))
        return logits[:, list(positions)]
