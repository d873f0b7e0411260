"""A switchable fast path for ``HookedTransformer`` forwards: weights stored in compute layout.

Why:
    A stock ``HookedTransformer`` forward re-materialises a transposed copy of almost every
    weight matrix on every call. ``simple_attn_linear`` rearranges ``W_Q``/``W_K``/``W_V``
    (``head_index d_model d_head -> (head_index d_head) d_model``), attention rearranges
    ``W_O`` and calls ``.contiguous()``, ``GatedMLP`` calls ``W_gate.T.contiguous()``,
    ``W_in.T.contiguous()``, ``W_out.T.contiguous()`` and ``Unembed`` calls
    ``W_U.T.contiguous()`` (113 MB for SmolLM2-135M). For single-token decode steps these
    copies cost several times the matmuls themselves.

What:
    :func:`enable_fast_path` re-stores each of those parameters so that its *memory layout*
    is the layout the forward asks for, while its shape, dtype, device, values and Python
    identity are unchanged. The forward's own ``rearrange``/``.T``/``.contiguous()`` then
    returns a view instead of a copy, and ``F.linear`` receives exactly the contiguous
    matrix it received before, so logits and every hook value are bit-identical.

    There is no cache: the parameter *is* the fast layout. In-place edits (``param.add_``,
    ``load_state_dict``, patching/ablation edits of weights, optimiser steps) write into the
    very storage the forward reads, so nothing can go stale and no per-forward validity
    check is needed. Operations that replace a parameter's tensor
    (``load_state_dict(assign=True)``, ``param.data = new``) silently fall back to the stock
    layout (correct, only slower); :func:`fast_path_status` reports it and calling
    :func:`enable_fast_path` again restores it.

    :func:`disable_fast_path` makes every parameter contiguous again (the stock layout);
    :func:`fast_weights` is the context-manager form.

Examples:
    >>> import torch
    >>> from tempo_lens import make_tiny_model
    >>> from tempo_lens.backends.fast import fast_weights
    >>> model = make_tiny_model(n_key_value_heads=2)
    >>> tokens = torch.tensor([[1, 2, 3, 4]])
    >>> stock = model(tokens)
    >>> with fast_weights(model):
    ...     fast = model(tokens)
    >>> torch.equal(stock, fast)
    True

Caveats:
    * ``safetensors.torch.save_file`` refuses non-contiguous tensors: save a state dict
      with the fast path off (or ``{k: v.contiguous() for k, v in sd.items()}``).
    * Configurations whose forward does not copy a weight (``use_split_qkv_input``,
      ``use_attn_in``, ``use_attn_result``, 4-bit weights, the non-gated MLP's ``addmm``)
      keep that weight untouched, so their arithmetic cannot change.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from tempo_lens.backends.base import TempoModel

__all__ = [
    "FastPathStatus",
    "disable_fast_path",
    "enable_fast_path",
    "fast_path_status",
    "fast_weights",
]


def _layout_targets(model: TempoModel) -> list[tuple[str, nn.Parameter, tuple[int, ...]]]:
    # imported on first use: importing tempo_lens does not import TransformerLens
    from tempo_lens.backends.hooked import fast_layout_targets

    return fast_layout_targets(model)


@dataclass(frozen=True)
class FastPathStatus:
    """Which weights are stored in compute layout.

    Attributes:
        fast: Names of parameters in the fast (compute) layout.
        stock: Names of eligible parameters in the stock (contiguous) layout.
    """

    fast: tuple[str, ...]
    stock: tuple[str, ...]

    @property
    def enabled(self) -> bool:
        """True when every eligible parameter is in the fast layout."""
        return bool(self.fast) and not self.stock


def _compute_layout(param: torch.Tensor, order: tuple[int, ...]) -> torch.Tensor:
    """``param``'s values, re-stored so that ``permute(order)`` is contiguous.

    The result has ``param``'s shape and values; its strides are those of a contiguous
    tensor of shape ``[param.shape[i] for i in order]`` permuted back.
    """
    storage = param.detach().permute(order).contiguous()
    inverse = [0] * len(order)
    for i, o in enumerate(order):
        inverse[o] = i
    return storage.permute(inverse)


def _is_compute_layout(param: torch.Tensor, order: tuple[int, ...]) -> bool:
    return param.permute(order).is_contiguous()


def enable_fast_path(model: TempoModel) -> FastPathStatus:
    """Store the weights ``model``'s forward transposes in the layout the forward uses.

    Idempotent; safe to call again after a parameter was replaced. Parameter objects,
    values, ``requires_grad`` and gradients are preserved.

    Returns:
        The resulting :class:`FastPathStatus`.
    """
    with torch.no_grad():
        for _name, param, order in _layout_targets(model):
            if not _is_compute_layout(param, order):
                _set_data(param, _compute_layout(param, order))
    return fast_path_status(model)


def disable_fast_path(model: TempoModel) -> FastPathStatus:
    """Restore the stock (contiguous) layout of every weight :func:`enable_fast_path` touches."""
    with torch.no_grad():
        for _name, param, _order in _layout_targets(model):
            if not param.is_contiguous():
                _set_data(param, param.detach().contiguous())
    return fast_path_status(model)


def fast_path_status(model: TempoModel) -> FastPathStatus:
    """Which eligible weights are currently in the fast layout."""
    fast: list[str] = []
    stock: list[str] = []
    for name, param, order in _layout_targets(model):
        if _is_compute_layout(param, order):
            fast.append(name)
        else:
            stock.append(name)
    return FastPathStatus(fast=tuple(fast), stock=tuple(stock))


@contextmanager
def fast_weights(model: TempoModel, *, restore: bool = True) -> Iterator[TempoModel]:
    """Context manager: the fast path inside the block.

    Args:
        model: The model.
        restore: Put the stock layout back on exit if the fast path was not already on.
    """
    was_on = fast_path_status(model).enabled
    enable_fast_path(model)
    try:
        yield model
    finally:
        if restore and not was_on:
            disable_fast_path(model)


def _set_data(param: nn.Parameter, new: torch.Tensor) -> None:
    """Swap ``param``'s storage, keeping the Parameter object (optimisers, hooks hold it)."""
    grad = param.grad
    param.data = new
    if grad is not None and grad.shape == param.shape:
        param.grad = grad
