"""Re-rotation of already-rotated queries/keys (pure maths, no model).

TransformerLens rotates q and k to their *physical* positions before the hook points
``hook_rot_q`` / ``hook_rot_k``. RoPE rotations compose additively, ``R(a)·R(b) =
R(a + b)``, so moving a vector from physical position ``p`` to logical position ``l`` is
one more rotation by ``Δ = l - p`` (mostly negative in TEMPO, possibly fractional).

Angles are computed directly from the inverse frequencies in float64 — never by indexing
a sin/cos table, which would silently wrap for negative ``Δ`` and cannot represent
fractional positions. Only the first ``rotary_dim`` features are rotated; the rest pass
through. Both pairing conventions are supported:

* ``adjacent_pairs=False`` (GPT-NeoX / Llama / Hugging Face ``rotate_half``): feature
  ``d`` pairs with ``d + rotary_dim/2``;
* ``adjacent_pairs=True`` (GPT-J): feature ``2i`` pairs with ``2i + 1``.

Examples:
    >>> import torch
    >>> inv_freq = torch.tensor([1.0], dtype=torch.float64)
    >>> cos, sin = delta_cos_sin(torch.tensor([0.5]), inv_freq, adjacent_pairs=False)
    >>> x = torch.tensor([[[[1.0, 0.0]]]])  # batch pos head d_head
    >>> rerotate(x, cos, sin, rotary_dim=2, adjacent_pairs=False)
    tensor([[[[0.8776, 0.4794]]]])

References:
    Su et al., "RoFormer: Enhanced Transformer with Rotary Position Embedding" (2021).
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["delta_cos_sin", "rerotate", "rotate_half", "rotation_tables", "apply_rotation"]


def delta_cos_sin(
    delta: Float[Tensor, "*batch pos"],
    inv_freq: Float[Tensor, " half_rotary"],
    *,
    adjacent_pairs: bool,
    dtype: torch.dtype = torch.float32,
) -> tuple[Float[Tensor, "*batch pos rotary_dim"], Float[Tensor, "*batch pos rotary_dim"]]:
    """cos/sin of the rotation by ``delta`` positions, laid out like TransformerLens.

    Args:
        delta: Position shift per token (``logical - physical``), any real value; any
            leading dimensions (e.g. one row of shifts per batch row).
        inv_freq: Inverse frequencies ``θ_i`` (radians per position), one per pair.
        adjacent_pairs: Pairing convention (see module docstring).
        dtype: dtype of the returned tables.

    Returns:
        ``(cos, sin)`` each ``[*batch, pos, rotary_dim]``.
    """
    angles = delta.to(torch.float64)[..., None] * inv_freq.to(torch.float64)
    if adjacent_pairs:
        angles = angles.repeat_interleave(2, dim=-1)
    else:
        angles = torch.cat([angles, angles], dim=-1)
    return torch.cos(angles).to(dtype), torch.sin(angles).to(dtype)


def rotate_half(x: Float[Tensor, "... rotary_dim"], *, adjacent_pairs: bool) -> Tensor:
    """Map each pair ``(a, b)`` to ``(-b, a)`` (a 90° rotation of every pair)."""
    if adjacent_pairs:
        pairs = x.unflatten(-1, (-1, 2))
        return torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


def _swap_pairs(x: Tensor, *, adjacent_pairs: bool) -> Tensor:
    """Map each pair ``(a, b)`` to ``(b, a)``: :func:`rotate_half` without the sign."""
    if adjacent_pairs:
        return x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    a, b = x.chunk(2, dim=-1)
    return torch.cat([b, a], dim=-1)


def _pair_signs(rotary_dim: int, *, adjacent_pairs: bool) -> Tensor:
    """``-1`` for the first feature of each pair, ``+1`` for the second (float64)."""
    signs = torch.ones(rotary_dim, dtype=torch.float64)
    if adjacent_pairs:
        signs[0::2] = -1.0
    else:
        signs[: rotary_dim // 2] = -1.0
    return signs


def rotation_tables(
    delta: Float[Tensor, "*batch pos"],
    inv_freq: Float[Tensor, " half_rotary"],
    *,
    adjacent_pairs: bool,
    dtype: torch.dtype,
    device: torch.device | str | None = None,
) -> tuple[Float[Tensor, "*batch pos 1 rotary_dim"], Float[Tensor, "*batch pos 1 rotary_dim"]]:
    """Tables for :func:`apply_rotation`: ``cos`` and the *signed* ``sin``, ready to broadcast.

    The sign of :func:`rotate_half` is folded into ``sin`` (``(-b)·s == b·(-s)`` exactly in
    IEEE arithmetic), so applying them costs two products and a sum per element, with
    results bit-identical to :func:`rerotate`. Angles are computed in float64 and rounded
    once to ``dtype``.

    Returns:
        ``(cos, signed_sin)`` each ``[*batch, pos, 1, rotary_dim]`` (the ``1`` broadcasts
        over heads) in ``dtype`` on ``device``.
    """
    cos, sin = delta_cos_sin(delta, inv_freq, adjacent_pairs=adjacent_pairs, dtype=torch.float64)
    sin = sin * _pair_signs(cos.shape[-1], adjacent_pairs=adjacent_pairs)
    return (
        cos.unsqueeze(-2).to(device=device, dtype=dtype),
        sin.unsqueeze(-2).to(device=device, dtype=dtype),
    )


def apply_rotation(
    x: Float[Tensor, "batch pos head d_head"],
    cos: Float[Tensor, "#batch pos 1 rotary_dim"],
    signed_sin: Float[Tensor, "#batch pos 1 rotary_dim"],
    *,
    adjacent_pairs: bool,
) -> Float[Tensor, "batch pos head d_head"]:
    """Rotate the first ``rotary_dim`` features of ``x`` with :func:`rotation_tables` tables.

    ``cos``'s batch dimension may be 1 (one table for every batch row).
    """
    rotary_dim = cos.shape[-1]
    x_rot = x[..., :rotary_dim]
    out = x_rot * cos
    out += _swap_pairs(x_rot, adjacent_pairs=adjacent_pairs) * signed_sin
    if rotary_dim == x.shape[-1]:
        return out
    return torch.cat([out, x[..., rotary_dim:]], dim=-1)


def rerotate(
    x: Float[Tensor, "batch pos head d_head"],
    cos: Float[Tensor, "pos rotary_dim"],
    sin: Float[Tensor, "pos rotary_dim"],
    *,
    rotary_dim: int,
    adjacent_pairs: bool,
) -> Float[Tensor, "batch pos head d_head"]:
    """Rotate the first ``rotary_dim`` features of every position by the given angles.

    Args:
        x: Rotated queries or keys (any number of heads, so GQA key heads work).
        cos: cos table from :func:`delta_cos_sin`.
        sin: sin table from :func:`delta_cos_sin`.
        rotary_dim: Number of rotated features (``<= d_head``).
        adjacent_pairs: Pairing convention.

    Returns:
        ``x`` with its rotary part rotated, same shape and dtype.
    """
    x_rot = x[..., :rotary_dim]
    c = cos[None, :, None, :].to(x.dtype)
    s = sin[None, :, None, :].to(x.dtype)
    rotated = x_rot * c + rotate_half(x_rot, adjacent_pairs=adjacent_pairs) * s
    if rotary_dim == x.shape[-1]:
        return rotated
    return torch.cat([rotated, x[..., rotary_dim:]], dim=-1)
