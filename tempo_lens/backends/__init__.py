"""Backends: running a rotary transformer with TransformerLens hook points.

Everything that differs between TransformerLens' two ways of running a model lives in this
wing, behind one :class:`~tempo_lens.backends.base.Backend` object per model::

    backend = backend_of(model)          # HookedBackend or BridgeBackend
    backend.rotary_inv_freqs()           # per layer, float64
    cache = backend.make_kv_cache()
    logits = backend.forward(tokens, cache=cache, positions=positions)

* :mod:`~tempo_lens.backends.hooked` — ``HookedTransformer`` (TransformerLens 3.x);
* :mod:`~tempo_lens.backends.bridge` — ``TransformerBridge`` around a Hugging Face model
  (TransformerLens 3.9 and 4.x; the only backend on 4.x, which removed
  ``HookedTransformer``);
* :mod:`~tempo_lens.backends.fast` — the switchable fast path (``HookedTransformer``).

A new backend is one module with a class satisfying the protocol (plus a ``matches(model)``
static method and a ``cache_ops`` object) and one entry in :data:`BACKENDS`, a name ->
dotted-path table imported on use. The module-level functions below (``forward``,
``make_kv_cache``, ``reorder_kv_cache``, ...) are the backend-neutral spellings the rest of
the package calls.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor

from tempo_lens.backends.base import (
    Backend,
    CacheOps,
    KVCache,
    NotRotaryError,
    TempoModel,
    UnsupportedAttentionError,
    add_permanent_hooks,
    hook_functions,
    hook_name,
    is_attention_shaped,
    layer_of,
    model_name,
    remove_hooks,
)

# Imported from TransformerLens on first access (PEP 562), so that importing the package,
# and with it every CLI's --help, does not import TransformerLens.
_LAZY = {
    "HookPoint": "tempo_lens.backends.base",
    "HAS_HOOKED_TRANSFORMER": "tempo_lens.backends.hooked",
    "fast_layout_targets": "tempo_lens.backends.hooked",
    "is_hooked": "tempo_lens.backends.hooked",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BACKENDS",
    "HAS_HOOKED_TRANSFORMER",
    "Backend",
    "HookPoint",
    "KVCache",
    "NotRotaryError",
    "TempoModel",
    "UnsupportedAttentionError",
    "add_permanent_hooks",
    "backend_of",
    "check_rotary",
    "fast_layout_targets",
    "forward",
    "hook_functions",
    "hook_name",
    "is_attention_shaped",
    "is_bridge",
    "is_hooked",
    "kv_cache_length",
    "kv_cache_nbytes",
    "layer_of",
    "layer_windows",
    "make_kv_cache",
    "max_context",
    "model_name",
    "physical_windows_disabled",
    "provenance",
    "remove_hooks",
    "reorder_kv_cache",
    "scratch_kv_cache",
    "select_kv_cache",
    "truncate_kv_cache",
]

BACKENDS: dict[str, str] = {
    "hooked": "tempo_lens.backends.hooked:HookedBackend",
    "bridge": "tempo_lens.backends.bridge:BridgeBackend",
}
"""Backend name -> ``"module:Class"``, imported on first use, tried in order."""


def _backend_classes() -> tuple[Any, ...]:
    return _import_classes(tuple(BACKENDS.values()))


@functools.lru_cache(maxsize=8)
def _import_classes(paths: tuple[str, ...]) -> tuple[Any, ...]:
    """The classes of ``"module:Class"`` paths, imported once per registry state.

    Every forward asks for its backend, so the lookup is not repeated per step.
    """
    out = []
    for path in paths:
        module, _, cls = path.partition(":")
        out.append(getattr(importlib.import_module(module), cls))
    return tuple(out)


def backend_of(model: Any) -> Backend:
    """The backend object of ``model``.

    Raises:
        TypeError: ``model`` is none of the registered backends' model classes (a
            ``HookedTransformer`` or a ``TransformerBridge``).
    """
    for cls in _backend_classes():
        if cls.matches(model):
            backend: Backend = cls(model)
            return backend
    raise TypeError(
        "tempo_lens needs a transformer_lens.HookedTransformer or TransformerBridge, got "
        f"{type(model).__name__}"
    )


def provenance(model: Any) -> dict[str, Any]:
    """Where a result came from: model name, weights hash, backend, TransformerLens version.

    ``weights_sha256`` is the SHA-256 of the packaged GGUF file for the offline models
    (:func:`tempo_lens.load_model` records it on the model), else absent. Traces record
    this dict (``Trace.provenance``) and experiment manifests carry it.
    """
    import importlib.metadata

    try:
        tl_version = importlib.metadata.version("transformer-lens")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a dev checkout
        tl_version = "unknown"
    out: dict[str, Any] = {
        "model": model_name(model),
        "backend": backend_of(model).name,
        "transformer_lens": tl_version,
    }
    sha = getattr(model, "tempo_lens_weights_sha256", None)
    if sha:
        out["weights_sha256"] = str(sha)
    return out


def is_bridge(model: Any) -> bool:
    """Whether ``model`` is a ``TransformerBridge``."""
    from tempo_lens.backends.bridge import is_bridge as _is_bridge

    return _is_bridge(model)


def check_rotary(model: TempoModel) -> None:
    """Raise unless ``model`` is a rotary model the TEMPO hooks handle exactly.

    Raises:
        TypeError: Neither a ``HookedTransformer`` nor a ``TransformerBridge``.
        NotRotaryError: No RoPE, or RoPE whose frequencies depend on the sequence length
            (dynamic NTK, LongRoPE).
        UnsupportedAttentionError: Non-causal attention, log-n query scaling (which
            depends on the physical position), or a bridge layer without the rotary
            hook points.
    """
    backend_of(model).check()


def layer_windows(model: TempoModel) -> list[int | None]:
    """Each layer's sliding window in tokens (``None``: full attention), on either backend."""
    return backend_of(model).attention_windows()


def physical_windows_disabled(model: TempoModel) -> Any:
    """Context manager: the model's own (physical) sliding-window masks off within the block."""
    return backend_of(model).physical_windows_disabled()


def max_context(model: TempoModel) -> int:
    """The model's maximum context length in tokens (``cfg.n_ctx``; ``math.inf`` if 0)."""
    return backend_of(model).max_context()


def make_kv_cache(model: TempoModel, batch_size: int = 1) -> KVCache:
    """A fresh, empty KV cache for ``model`` (either backend)."""
    return backend_of(model).make_kv_cache(batch_size)


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
    return backend_of(model).forward(
        tokens, cache=cache, attention_mask=attention_mask, positions=positions
    )


def _ops(cache: KVCache) -> CacheOps:
    for cls in _backend_classes():
        if cls.cache_ops.owns(cache):
            ops: CacheOps = cls.cache_ops
            return ops
    raise TypeError(f"not a KV cache of any tempo_lens backend: {type(cache).__name__}")


def kv_cache_length(cache: KVCache) -> int:
    """Number of token positions held by the cache."""
    return _ops(cache).length(cache)


def kv_cache_nbytes(cache: KVCache) -> int:
    """Bytes held by the cache's keys and values (all layers)."""
    return _ops(cache).nbytes(cache)


def truncate_kv_cache(cache: KVCache, length: int) -> None:
    """Drop cached positions from ``length`` on (in place)."""
    _ops(cache).truncate(cache, length)


def reorder_kv_cache(
    cache: KVCache, batch_indices: Tensor, lengths: list[int] | None = None
) -> None:
    """Select / repeat / reorder the cache's batch rows in place.

    Beam search: the parent beam of each new beam. ``batch_indices`` is a 1-D long tensor
    of old batch rows. With ``lengths`` (one per new row) row ``b`` sees only its first
    ``lengths[b]`` cached positions (masked; its next tokens are numbered from there on):
    the ``HookedTransformer`` cache's padding mask, or
    :meth:`~tempo_lens.backends.bridge.BridgeCache.hide_from` on a bridge.
    """
    _ops(cache).reorder(cache, batch_indices, lengths)


def select_kv_cache(cache: KVCache, batch_indices: Tensor, positions: Tensor) -> None:
    """Keep only the given batch rows and cached positions, in place.

    Used by a batch dropping its finished rows and the columns only they used. Both
    ``batch_indices`` and ``positions`` are 1-D long tensors.
    """
    _ops(cache).select(cache, batch_indices, positions)


@contextmanager
def scratch_kv_cache(cache: KVCache, length: int) -> Iterator[None]:
    """Truncate and freeze the cache within the block; restore it exactly afterwards.

    Within the block the cache holds only its first ``length`` positions and is frozen
    (used for the readout forward after pruning).
    """
    with _ops(cache).scratch(cache, length):
        yield
