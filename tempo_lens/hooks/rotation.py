"""The position half of the TEMPO hooks: re-rotating q/k by ``logical - physical``.

TransformerLens rotates every query and key to its *physical* index (its column in the
forward, or its cache offset). :class:`Rerotation` turns those rotations into rotations to
the *logical* positions of a :class:`~tempo_lens.state.SequenceState`: it multiplies the
already-rotated q/k by the rotation of angle ``(logical - physical) * inv_freq``
(:func:`tempo_lens.rope.apply_rotation`; RoPE rotations compose additively).

It holds what the model fixes (the rotary layout and each layer's inverse frequencies,
layers with identical frequencies sharing one group of tables); the per-forward deltas come
from :func:`column_deltas`. :class:`~tempo_lens.hooks.TempoHooks` memoises both per state
version and calls :meth:`Rerotation.apply` from ``hook_rot_q`` / ``hook_rot_k``.

Examples:
    >>> import torch
    >>> from tempo_lens import SequenceState
    >>> st = SequenceState.from_sets([1, 2], [[3, 4], [5]])
    >>> column_deltas([st], None).tolist()  # members 3, 4 share logical position 2
    [[0.0, 0.0, 0.0, -1.0, -1.0]]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tempo_lens.backends import TempoModel, backend_of
from tempo_lens.layout import PAD, BatchLayout
from tempo_lens.rope import apply_rotation, rotation_tables
from tempo_lens.state import SequenceState

__all__ = ["Rerotation", "column_deltas", "physical_columns"]

Tables = tuple[int, Tensor, Tensor]
"""``(first, cos, signed_sin)``: see :meth:`Rerotation.tables`."""


def physical_columns(
    states: Sequence[SequenceState], layout: BatchLayout | None
) -> Int[Tensor, "rows pos"]:
    """``[rows, pos]`` physical index per column (``PAD`` at pad slots).

    Without a layout there is one row whose columns are its physical indices.
    """
    if layout is not None:
        return layout.tensor()
    return torch.arange(len(states[0]))[None]


def column_deltas(
    states: Sequence[SequenceState], layout: BatchLayout | None
) -> Float[Tensor, "rows pos"]:
    """``[rows, pos]`` float64 ``logical - physical`` per column (0 at pad slots)."""
    if layout is None:
        return states[0].position_deltas()[None]
    cols = layout.tensor()
    out = torch.zeros(cols.shape, dtype=torch.float64)
    for r, st in enumerate(states):
        real = cols[r] != PAD
        out[r, real] = st.position_deltas()[cols[r, real]]
    return out


class Rerotation:
    """The rotary layout of a model and the re-rotation of its q/k.

    Args:
        model: A rotary ``HookedTransformer`` or ``TransformerBridge``.

    Attributes:
        bridge: True if the backend caches keys after ``hook_rot_k`` (a
            ``TransformerBridge``), so ``hook_rot_k`` sees only the new keys.
        rotary_dim: Number of rotated dimensions of each head.
        adjacent_pairs: The GPT-J pairing convention (else GPT-NeoX halves).
        windows: Per layer, the sliding-window size (``None``: global attention).
        groups: Per layer, the index of its frequency group (layers with equal
            ``inv_freq`` share tables).

    Raises:
        ValueError: The model is not rotary (see :func:`tempo_lens.backends.check_rotary`).
    """

    def __init__(self, model: TempoModel) -> None:
        backend = backend_of(model)
        backend.check()
        self.bridge = backend.keys_cached_rotated
        freqs = backend.rotary_inv_freqs()
        self.rotary_dim, self.adjacent_pairs = backend.rotary_layout()
        self.windows: list[int | None] = list(backend.attention_windows())
        self.groups: list[int] = []
        self._inv_freqs: list[Tensor] = []
        for f in freqs:
            for g, known in enumerate(self._inv_freqs):
                if torch.equal(known, f):
                    self.groups.append(g)
                    break
            else:
                self.groups.append(len(self._inv_freqs))
                self._inv_freqs.append(f)

    def tables(self, group: int, delta: Tensor, x: Tensor) -> Tables | None:
        """``(first, cos, signed_sin)`` for the columns of ``delta``; None if all Δ = 0.

        Args:
            group: A frequency group (:attr:`groups`).
            delta: ``[rows, cols]`` float64 ``logical - physical`` of the hooked columns.
            x: The hooked tensor (its dtype and device are those of the tables).

        ``first`` is the offset of the first column with a non-zero Δ in any row: columns
        before it need no rotation.
        """
        moved = (delta != 0).any(dim=0)
        if not bool(moved.any()):
            return None
        first = int(moved.nonzero()[0, 0])
        cos, sin = rotation_tables(
            delta[:, first:],
            self._inv_freqs[group],
            adjacent_pairs=self.adjacent_pairs,
            dtype=x.dtype,
            device=x.device,
        )
        return first, cos, sin

    def apply(
        self, x: Float[Tensor, "batch pos head_index d_head"], tables: Tables | None
    ) -> Float[Tensor, "batch pos head_index d_head"]:
        """Rotate ``x`` (q or k, already rotated to physical positions) by ``tables``."""
        if tables is None:
            return x
        first, cos, sin = tables
        if first == 0:
            return apply_rotation(x, cos, sin, adjacent_pairs=self.adjacent_pairs)
        rotated = apply_rotation(x[:, first:], cos, sin, adjacent_pairs=self.adjacent_pairs)
        return torch.cat([x[:, :first], rotated], dim=1)
