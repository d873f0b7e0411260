"""Visibility masks for TEMPO sequences (pure maths, no model).

A query at physical index ``i`` may attend to a key at physical index ``j`` iff all of:

1. **causal**: ``j <= i``;
2. **isolation** (isolated mode only): ``i`` and ``j`` are not distinct members of the
   same parallel set (a member sees the prompt, every member of every earlier set, and
   itself); in visible mode siblings see earlier siblings, which the causal rule gives;
3. **pruning**: if ``j`` was pruned at step ``p``, no query whose (viewing) step is
   ``> p`` sees it. A query's viewing step is its own step, or ``view_step`` when that is
   larger — used for the readout forward that produces step ``p + 1``'s distribution;
   a *hard*-pruned ``j`` is seen by no query but itself (as if never appended);
4. **sliding window** (local-attention layers only): ``logical[i] - logical[j] < window``.
   The window is measured in *logical* positions, the distance the model's RoPE sees and
   the one it was trained with (Hugging Face's ``kv_idx > q_idx - sliding_window`` on a
   plain sequence); see ``docs/concepts.md``;
5. **trees** (tree tokens only, ``parents[i] >= 0``): ``j`` is ``i`` itself or in the
   *reach* of ``i``'s parent, where the reach of a tree token is itself plus its parent's
   reach, and the reach of any other token (prompt or TEMPO member) is what rules 1-3 let
   it see. So a tree token under the prompt sees the prompt and its own ancestors only
   (beam search, a draft tree: EAGLE's ``tree_mask``); rule 2 does not apply to tree
   queries (a draft tree's levels may share one step), rules 3-4 do.

Prompt tokens have step ``-1``. Alive tokens have ``pruned_at = ALIVE`` (a large
sentinel), so rule 3 never fires for them.

Examples:
    >>> import torch
    >>> steps = torch.tensor([-1, -1, 0, 0, 1])
    >>> alive = torch.full((5,), ALIVE)
    >>> visibility(steps, alive, torch.arange(5), isolate=True).int()
    tensor([[1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0],
            [1, 1, 0, 1, 0],
            [1, 1, 1, 1, 1]], dtype=torch.int32)
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

__all__ = ["ALIVE", "visibility"]

ALIVE = 2**62
"""Sentinel ``pruned_at`` value of a token that has not been pruned."""


def visibility(
    steps: Int[Tensor, " n_keys"],
    pruned_at: Int[Tensor, " n_keys"],
    query_indices: Int[Tensor, " n_queries"],
    *,
    isolate: bool,
    view_step: int | None = None,
    logical: Float[Tensor, " n_keys"] | None = None,
    window: int | float | None = None,
    hard: Bool[Tensor, " n_keys"] | None = None,
    parents: Int[Tensor, " n_keys"] | None = None,
) -> Bool[Tensor, "n_queries n_keys"]:
    """Which keys each query may attend to.

    Args:
        steps: Step of every token (``-1`` for the prompt), indexed physically.
        pruned_at: Step at which each token was pruned, ``ALIVE`` if never.
        query_indices: Physical indices of the queries (rows of the result).
        isolate: Whether members of one set are hidden from each other.
        view_step: If given, queries see the sequence as of at least this step (their
            viewing step is ``max(own step, view_step)``).
        logical: Logical position of every token; required with ``window``.
        window: Sliding-window size in logical positions (``None``: global attention).
        hard: Hard-pruned tokens (hidden from every query but themselves).
        parents: Tree parent of every token (``-1``: not a tree token); rule 5.

    Returns:
        Boolean ``[n_queries, n_keys]``; ``True`` where attention is allowed.

    Raises:
        ValueError: ``window`` is not positive, or is given without ``logical``.
    """
    n = steps.shape[0]
    keys = torch.arange(n, device=steps.device)
    q = query_indices.to(steps.device)
    allowed = keys[None, :] <= q[:, None]
    q_steps = steps[q]
    tree_q = None if parents is None else parents.to(steps.device)[q] >= 0
    if isolate:
        same_set = (q_steps[:, None] == steps[None, :]) & (q_steps[:, None] >= 0)
        if tree_q is not None:
            same_set &= ~tree_q[:, None]
        allowed &= ~same_set | (keys[None, :] == q[:, None])
    if view_step is not None:
        q_steps = torch.clamp(q_steps, min=view_step)
    allowed &= ~(q_steps[:, None] > pruned_at[None, :])
    if hard is not None:
        allowed &= ~hard.to(steps.device)[None, :] | (keys[None, :] == q[:, None])
    if window is not None:
        if logical is None or not window > 0:
            raise ValueError(f"window={window!r} needs logical positions and must be > 0")
        pos = logical.to(device=steps.device, dtype=torch.float64)
        allowed &= (pos[q][:, None] - pos[None, :]) < window
    if parents is not None and tree_q is not None and bool(tree_q.any()):
        rows = torch.nonzero(tree_q).flatten()
        allowed[rows] &= _tree_reach(steps, pruned_at, q[rows], parents, isolate=isolate, hard=hard)
    return allowed


def _tree_reach(
    steps: Int[Tensor, " n_keys"],
    pruned_at: Int[Tensor, " n_keys"],
    tree_queries: Int[Tensor, " n_queries"],
    parents: Int[Tensor, " n_keys"],
    *,
    isolate: bool,
    hard: Bool[Tensor, " n_keys"] | None,
) -> Bool[Tensor, "n_queries n_keys"]:
    """Rule 5's reach of tree queries.

    Their tree ancestors, themselves, and what the first non-tree ancestor (the root)
    sees by rules 1-3.
    """
    par = parents.tolist()
    chains, roots = [], []
    for i in tree_queries.tolist():
        chain = [i]
        p = par[i]
        while par[p] >= 0:
            chain.append(p)
            p = par[p]
        chains.append(chain)
        roots.append(p)
    root_idx = torch.tensor(roots, dtype=torch.long, device=steps.device)
    reach = visibility(steps, pruned_at, root_idx, isolate=isolate, hard=hard)
    for r, chain in enumerate(chains):
        reach[r, chain] = True
    return reach
