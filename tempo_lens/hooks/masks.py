"""The mask half of the TEMPO hooks: which query column may see which key column.

:func:`tempo_lens.masks.visibility` answers the question per sequence, over physical
indices. The hooks see *columns*: one sequence's physical indices, or, in a batch, each
row's physical indices interleaved with pad slots (:class:`~tempo_lens.layout.BatchLayout`).
:func:`block_masks` maps the per-row visibility onto the ``[rows, 1, query_pos, key_pos]``
columns of a forward, :func:`additive_bias` turns the result into the ``0 / -inf`` bias the
``hook_attn_scores`` hook adds, and :func:`stale_cache_message` detects a forward that
reuses KV-cache entries a retroactive prune made stale.

Examples:
    >>> import torch
    >>> from tempo_lens import SequenceState
    >>> st = SequenceState.from_sets([1, 2], [[3, 4]], isolate=True)
    >>> blocked, hidden = block_masks([st], torch.arange(4)[None], {}, 0, 4, None)
    >>> blocked[0, 0].int()  # the second member may not see the first (causal: the backend)
    tensor([[0, 0, 0, 0],
            [0, 0, 0, 0],
            [0, 0, 0, 0],
            [0, 0, 1, 0]], dtype=torch.int32)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from tempo_lens.isolation import LayerIsolation
from tempo_lens.layout import PAD, BatchLayout
from tempo_lens.state import SequenceState

__all__ = ["additive_bias", "block_masks", "layer_masks", "stale_cache_message"]


def block_masks(
    states: Sequence[SequenceState],
    columns: Int[Tensor, "rows pos"],
    views: Mapping[int, tuple[int, int]],
    start: int,
    n: int,
    window: int | None,
    *,
    isolate: bool | None = None,
) -> tuple[
    Bool[Tensor, "rows 1 query_pos key_pos"] | None, Bool[Tensor, "rows 1 query_pos key_pos"] | None
]:
    """``(blocked, hidden)`` key masks for query columns ``start..n`` over key columns ``0..n``.

    Args:
        states: One sequence state per row.
        columns: ``[rows, pos]`` physical index per column (``PAD`` at pad slots).
        views: Per row ``(view_step, from_index)``: queries at physical index
            ``>= from_index`` see the sequence as of at least ``view_step``.
        start: First query column.
        n: Number of key columns.
        window: The layer's sliding-window size in logical positions (``None``: global).
        isolate: Override the states' isolation (``None``: each state's own flag).

    Returns:
        ``blocked``: True where a query column may not see a key column (causal,
        isolation, pruning, logical window, pad slots); ``hidden``: for a local layer,
        where the logical window keeps a key at column distance ``>= window`` (the keys a
        physical sliding window would wrongly hide). Each is ``None`` when all False.
    """
    q_cols, k_cols = torch.arange(start, n)[:, None], torch.arange(n)[None, :]
    causal = k_cols <= q_cols
    shape = (columns.shape[0], 1, n - start, n)
    blocked = torch.zeros(shape, dtype=torch.bool)
    kept = torch.zeros(shape, dtype=torch.bool)
    for r, st in enumerate(states):
        q_phys, k_phys = columns[r, start:n], columns[r, :n]
        real_q, real_k = q_phys != PAD, k_phys != PAD
        q = q_phys[real_q]
        allowed = st.visibility(q, window=window, isolate=isolate)
        view = views.get(r)
        if view is not None:
            viewed = q >= view[1]
            allowed[viewed] = st.visibility(
                q[viewed], view_step=view[0], window=window, isolate=isolate
            )
        by_col = allowed[:, k_phys.clamp(min=0)] & real_k[None, :]
        blocked[r, 0, real_q] = causal[real_q] & ~by_col
        blocked[r, 0, ~real_q] = causal[~real_q] & ~real_k[None, :]
        kept[r, 0, real_q] = by_col
    hidden = None
    if window is not None:
        beyond = kept & (k_cols <= q_cols - window)
        hidden = beyond if bool(beyond.any()) else None
    return (blocked if bool(blocked.any()) else None), hidden


def layer_masks(
    states: Sequence[SequenceState],
    columns: Int[Tensor, "rows pos"],
    views: Mapping[int, tuple[int, int]],
    start: int,
    n: int,
    window: int | None,
    *,
    isolation: LayerIsolation | None = None,
    n_heads: int = 1,
) -> tuple[Bool[Tensor, "rows heads query_pos key_pos"] | None, Tensor | None]:
    """:func:`block_masks` for one layer under partial isolation.

    Args:
        states: One sequence state per row.
        columns: ``[rows, pos]`` physical index per column (``PAD`` at pad slots).
        views: Per row ``(view_step, from_index)`` (see :func:`block_masks`).
        start: First query column.
        n: Number of key columns.
        window: The layer's sliding-window size in logical positions (``None``: global).
        isolation: The layer's :data:`~tempo_lens.isolation.LayerIsolation`: ``None`` or
            ``True`` (the states' own flags), ``False`` (siblings visible at this layer),
            or the query heads that isolate (the others see siblings).
        n_heads: Query heads of the layer (the head axis of a per-head mask).

    Returns:
        ``(blocked, hidden)``; ``blocked`` has a head axis of 1, or ``n_heads`` when only
        some heads isolate. ``hidden`` is head-independent (the backend's physical window
        is), taken from the visible mask, which keeps a superset of the isolated keys.
    """
    if isolation is None or isinstance(isolation, bool):
        iso = None if isolation in (None, True) else False
        return block_masks(states, columns, views, start, n, window, isolate=iso)
    iso_blocked, _ = block_masks(states, columns, views, start, n, window)
    vis_blocked, hidden = block_masks(states, columns, views, start, n, window, isolate=False)
    if iso_blocked is None:  # no sibling to hide (nor anything else)
        return vis_blocked, hidden
    heads = torch.zeros(n_heads, dtype=torch.bool)
    heads[list(isolation)] = True
    vis = vis_blocked if vis_blocked is not None else torch.zeros_like(iso_blocked)
    return torch.where(heads[None, :, None, None], iso_blocked, vis), hidden


def additive_bias(
    blocked: Bool[Tensor, "rows heads query_pos key_pos"] | None,
    dtype: torch.dtype,
    device: torch.device | str,
) -> Tensor | None:
    """``0`` where allowed, ``-inf`` where ``blocked`` (``None`` stays ``None``).

    Adding ``0 / -inf`` to the scores is exact and several times faster than a
    broadcast ``masked_fill``.
    """
    if blocked is None:
        return None
    zeros = torch.zeros(blocked.shape, dtype=dtype)
    return zeros.masked_fill(blocked, float("-inf")).to(device)


def stale_cache_message(
    states: Sequence[SequenceState], layout: BatchLayout | None, start: int, what: str
) -> str | None:
    """Why a forward reusing ``start`` cached columns would be wrong, or ``None``.

    A retroactive prune changes the mask rows of tokens appended after the pruning step
    (:attr:`SequenceState.stale_from`); their KV-cache entries were computed with the old
    rows.
    """
    for r, st in enumerate(states):
        stale = st.stale_from
        if stale is None:
            continue
        cached = start if layout is None else layout.n_real_before(r, start)
        if stale < cached:
            return (
                f"{what}: the state was pruned retroactively (rows from physical index "
                f"{stale} changed) but the forward reuses {cached} cached positions — "
                "rebuild the KV cache with a full forward, then call state.clear_stale()"
            )
    return None
