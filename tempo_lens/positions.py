"""Logical (RoPE) position maps for TEMPO sequences.

TEMPO appends every member of a parallel set to one sequence. The *physical* index of a
token is its place in the token tensor (and, because every token is fed exactly once,
its place in the KV cache). Its *logical* position is the position its query/key is
rotated to by RoPE. This module holds the pure maths that assigns logical positions;
it imports no model.

Schemes (``PositionScheme.kind``):

* ``"shared"`` (TEMPO default): prompt tokens sit at ``0..L-1``; every member of step
  ``s`` sits at ``L + s`` (positions are *compacted*: the next step continues at the
  next logical position, not the next physical one). With ``member_offset = δ`` member
  ``i`` of the set sits at ``L + s + i·δ`` — the fractional-position research question.
* ``"distinct"``: every token gets its own consecutive position (logical = physical),
  the control condition for studying position sharing.

Examples:
    >>> logical_positions(3, [2, 1], PositionScheme())
    [0.0, 1.0, 2.0, 3.0, 3.0, 4.0]
    >>> logical_positions(3, [2, 1], PositionScheme(member_offset=0.01))
    [0.0, 1.0, 2.0, 3.0, 3.01, 4.0]
    >>> logical_positions(3, [2, 1], PositionScheme(kind="distinct"))
    [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from tempo_lens._numbers import RealLike, normalise_fields

__all__ = ["PositionScheme", "check_finite_positions", "logical_positions", "set_positions"]


@dataclass(frozen=True, kw_only=True)
class PositionScheme:
    """How logical positions are assigned to generated tokens.

    Attributes:
        kind: ``"shared"`` — all members of a step share ``L + step`` (plus
            ``member_offset`` per member rank); ``"distinct"`` — every token its own
            consecutive position (logical == physical).
        member_offset: Offset δ added per member rank in ``"shared"`` mode (member ``i`` at
            ``L + s + i·δ``). Must be finite and ``>= 0``; 0 is plain TEMPO.
    """

    kind: Literal["shared", "distinct"] = "shared"
    member_offset: RealLike = 0.0

    def __post_init__(self) -> None:
        normalise_fields(self, reals=("member_offset",))
        if not isinstance(self.member_offset, float):
            raise ValueError(f"member_offset must be a number, got {self.member_offset!r}")
        if self.kind not in ("shared", "distinct"):
            raise ValueError(
                f"PositionScheme.kind must be 'shared' or 'distinct', got {self.kind!r}"
            )
        if not math.isfinite(self.member_offset) or self.member_offset < 0:
            raise ValueError(f"member_offset must be finite and >= 0, got {self.member_offset}")
        if self.kind == "distinct" and self.member_offset != 0:
            raise ValueError("member_offset only applies to kind='shared'")


def set_positions(
    scheme: PositionScheme, *, prompt_length: int, step: int, n_members: int, first_index: int
) -> list[float]:
    """Logical positions of the members of one parallel set.

    Args:
        scheme: The position scheme.
        prompt_length: Number of prompt tokens ``L``.
        step: The set's step ``s`` (0-based).
        n_members: Number of members ``k`` of the set.
        first_index: Physical index of the set's first member.

    Returns:
        ``k`` logical positions, in member order.
    """
    if n_members < 1:
        raise ValueError("a parallel set needs at least one member")
    if scheme.kind == "distinct":
        return [float(first_index + i) for i in range(n_members)]
    base = float(prompt_length + step)
    return [base + i * scheme.member_offset for i in range(n_members)]


def logical_positions(
    prompt_length: int, set_sizes: Sequence[int], scheme: PositionScheme
) -> list[float]:
    """Logical positions of a whole sequence: prompt then one set per step.

    Args:
        prompt_length: Number of prompt tokens.
        set_sizes: Number of members of each step's set, in step order.
        scheme: The position scheme.

    Returns:
        One logical position per physical token.
    """
    out = [float(i) for i in range(prompt_length)]
    for step, k in enumerate(set_sizes):
        out += set_positions(
            scheme, prompt_length=prompt_length, step=step, n_members=k, first_index=len(out)
        )
    return out


def check_finite_positions(values: Sequence[float]) -> None:
    """Refuse non-finite logical positions.

    Raises:
        ValueError: Some value is NaN or infinite (the first three are named).
    """
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise ValueError(f"logical positions must be finite, got {bad[:3]}")
