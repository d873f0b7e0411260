"""KV caches and forwards on either backend.

Part of :mod:`tempo_lens._tl`, which re-exports every name here. A ``HookedTransformer`` uses TransformerLens' ``TransformerLensKeyValueCache``; a
``TransformerBridge`` a :class:`tempo_lens._bridge.BridgeCache` (Hugging Face's
``DynamicCache``). The functions below take either; :func:`forward` is the one place a
forward with a cache, a padding mask or explicit positions is spelled per backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias

import torch
from torch import Tensor
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

__all__ = [
    "KVCache",
    "forward",
    "kv_cache_length",
    "kv_cache_nbytes",
    "make_kv_cache",
    "reorder_kv_cache",
    "scratch_kv_cache",
    "select_kv_cache",
    "truncate_kv_cache",
]

TempoModel: TypeAlias = Any


def _is_bridge(model: Any) -> bool:
    from tempo_lens._bridge import is_bridge

    return is_bridge(model)


KVCache: TypeAlias = Any
"""A TransformerLens ``TransformerLensKeyValueCache`` (HookedTransformer) or a
:class:`tempo_lens._bridge.BridgeCache` (TransformerBridge)."""


def make_kv_cache(model: TempoModel, batch_size: int = 1) -> KVCache:
    """A fresh, empty KV cache for ``model`` (either backend)."""
    if _is_bridge(model):
        from tempo_lens._bridge import BridgeCache

        return BridgeCache()
    return TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, batch_size)


def kv_cache_length(cache: KVCache) -> int:
    """Number of token positions held by the cache."""
    if not isinstance(cache, TransformerLensKeyValueCache):
        return int(cache.length())
    return int(cache.entries[0].past_keys.shape[1])


def kv_cache_nbytes(cache: KVCache) -> int:
    """Bytes held by the cache's keys and values (all layers)."""
    if not isinstance(cache, TransformerLensKeyValueCache):
        return int(cache.nbytes())
    return sum(
        e.past_keys.numel() * e.past_keys.element_size()
        + e.past_values.numel() * e.past_values.element_size()
        for e in cache.entries
    )


def truncate_kv_cache(cache: TransformerLensKeyValueCache, length: int) -> None:
    """Drop cached positions from ``length`` on (in place; HookedTransformer cache)."""
    for entry in cache.entries:
        entry.past_keys = entry.past_keys[:, :length]
        entry.past_values = entry.past_values[:, :length]
    cache.previous_attention_mask = cache.previous_attention_mask[:, :length]


def reorder_kv_cache(
    cache: KVCache, batch_indices: Tensor, lengths: list[int] | None = None
) -> None:
    """Select / repeat / reorder the cache's batch rows in place.

    Beam search: the parent beam of each new beam. ``batch_indices`` is a 1-D long tensor
    of old batch rows. With ``lengths`` (one per new row) row ``b`` sees only its first
    ``lengths[b]`` cached positions (masked; its next tokens are numbered from there on).

    Raises:
        NotImplementedError: ``lengths`` with a bridge cache (which has no padding mask).
    """
    if not isinstance(cache, TransformerLensKeyValueCache):
        if lengths is not None:
            raise NotImplementedError(
                "reorder_kv_cache(lengths=...) needs a HookedTransformer cache; a "
                "TransformerBridge cache has no padding mask"
            )
        cache.select(batch_indices)
        return
    idx = batch_indices.to(cache.previous_attention_mask.device)
    for entry in cache.entries:
        entry.past_keys = entry.past_keys.index_select(0, idx)
        entry.past_values = entry.past_values.index_select(0, idx)
    mask = cache.previous_attention_mask.index_select(0, idx)
    for row, n in enumerate(lengths or []):
        mask[row, n:] = 0
    cache.previous_attention_mask = mask


def select_kv_cache(cache: KVCache, batch_indices: Tensor, positions: Tensor) -> None:
    """Keep only the given batch rows and cached positions, in place.

    Used by a batch dropping its finished rows and the columns only they used. Both
    ``batch_indices`` and ``positions`` are 1-D long tensors.
    """
    if not isinstance(cache, TransformerLensKeyValueCache):
        cache.select(batch_indices, positions)
        return
    rows = batch_indices.to(cache.previous_attention_mask.device)
    pos = positions.to(cache.previous_attention_mask.device)
    for entry in cache.entries:
        entry.past_keys = entry.past_keys.index_select(0, rows).index_select(1, pos)
        entry.past_values = entry.past_values.index_select(0, rows).index_select(1, pos)
    cache.previous_attention_mask = cache.previous_attention_mask.index_select(0, rows)[:, pos]


def forward(
    model: TempoModel,
    tokens: Tensor,
    *,
    cache: KVCache | None = None,
    attention_mask: Tensor | None = None,
    positions: Tensor | None = None,
) -> Tensor:
    """Logits ``[batch, pos, d_vocab]`` of one forward on either backend.

    Args:
        model: A ``HookedTransformer`` or a ``TransformerBridge``.
        tokens: ``[batch, pos]`` token ids (with ``cache``: only the new ones).
        cache: A KV cache from :func:`make_kv_cache`, extended in place.
        attention_mask: ``[batch, past + pos]`` 1/0 (0 at pad slots). The
            ``HookedTransformer`` rotates each token to the number of real tokens before
            it in its row; a bridge ignores it (pass ``positions``).
        positions: ``[batch, pos]`` physical position of each given token, for a bridge
            (default ``past .. past + pos - 1``); the ``HookedTransformer`` derives them
            from ``attention_mask`` instead.
    """
    if _is_bridge(model):
        from tempo_lens import _bridge

        if positions is None:
            past = kv_cache_length(cache) if cache is not None else 0
            positions = torch.arange(past, past + tokens.shape[1])[None].expand(tokens.shape)
        return _bridge.forward(model, tokens, positions, cache)
    if attention_mask is None:
        attention_mask = torch.ones(
            tokens.shape[0], tokens.shape[1], dtype=torch.long, device=tokens.device
        )
    if cache is None:
        return model(tokens, attention_mask=attention_mask)
    return model(tokens, past_kv_cache=cache, attention_mask=attention_mask)


__all__ += ["KVCache", "forward", "kv_cache_nbytes"]


@contextmanager
def scratch_kv_cache(cache: KVCache, length: int) -> Iterator[None]:
    """Truncate and freeze the cache within the block; restore it exactly afterwards.

    Within the block the cache holds only its first ``length`` positions and is frozen
    (used for the readout forward after pruning).
    """
    if not isinstance(cache, TransformerLensKeyValueCache):
        with cache.scratch(length):
            yield
        return
    saved = [(e.past_keys, e.past_values) for e in cache.entries]
    saved_mask = cache.previous_attention_mask
    truncate_kv_cache(cache, length)
    cache.freeze()
    try:
        yield
    finally:
        cache.unfreeze()
        for entry, (keys, values) in zip(cache.entries, saved, strict=True):
            entry.past_keys, entry.past_values = keys, values
        cache.previous_attention_mask = saved_mask
