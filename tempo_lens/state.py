"""The sequence state: the one source of truth for every token of a TEMPO sequence.

There are three index spaces (see ``docs/concepts.md``):

* **physical** — order in the token tensor;
* **cache** — order in the KV cache. tempo_lens feeds every member of every set to the
  model exactly once, so cache index == physical index, always;
* **logical** — the RoPE position (float) and the step.

``SequenceState`` maps each physical index to its token id, step (``-1`` for the
prompt), member rank within its set, logical position, and pruned/alive status with the
step at which it was pruned; in a *token tree* (beam search, a draft tree), also its
parent (:attr:`SequenceState.parents`: depth is its position, ancestors its context). Position hooks, mask hooks, attention capture and every
analysis read it; nothing else keeps a copy of indices.

Examples:
    >>> st = SequenceState.from_prompt([5, 6, 7], isolate=True)
    >>> st.append_set([10, 11])
    [3, 4]
    >>> st.append_set([12])
    [5]
    >>> st.logical
    [0.0, 1.0, 2.0, 3.0, 3.0, 4.0]
    >>> st.prune(4, at_step=1)
    >>> st.alive_indices()
    [0, 1, 2, 3, 5]
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tempo_lens.masks import ALIVE, visibility
from tempo_lens.positions import PositionScheme, check_finite_positions, set_positions
from tempo_lens.prompts import prompt_token_ids

__all__ = ["SequenceState", "TokenInfo"]


@dataclass(frozen=True)
class TokenInfo:
    """A read-only view of one token of the sequence."""

    index: int
    token_id: int
    step: int
    rank: int
    logical_position: float
    pruned_at_step: int | None
    parent: int | None = None
    """Physical index of its tree parent (``None``: not a tree token)."""

    @property
    def is_prompt(self) -> bool:
        """True for a prompt token (step ``-1``)."""
        return self.step < 0

    @property
    def alive(self) -> bool:
        """True unless the token was pruned."""
        return self.pruned_at_step is None


class SequenceState:
    """Token ids, steps, set membership, logical positions and pruning of one sequence.

    Mutate it only through :meth:`append_set`, :meth:`prune` and
    :meth:`set_logical_positions`; each mutation bumps :attr:`version`, which the hooks
    use to memoise their per-forward work and to detect stale use.

    Args:
        prompt_ids: Token ids of the prompt (physical indices ``0..L-1``, step ``-1``,
            logical positions ``0..L-1``).
        isolate: If True, members of one parallel set cannot attend to each other.
        positions: How logical positions are assigned to generated tokens.
    """

    def __init__(
        self,
        prompt_ids: Sequence[int],
        *,
        isolate: bool = True,
        positions: PositionScheme | None = None,
    ) -> None:
        ids = [int(t) for t in prompt_ids]
        if not ids:
            raise ValueError("the prompt must contain at least one token")
        self.isolate = bool(isolate)
        self.scheme = positions if positions is not None else PositionScheme()
        self.prompt_length = len(ids)
        self.token_ids: list[int] = ids
        self.steps: list[int] = [-1] * len(ids)
        self.ranks: list[int] = [0] * len(ids)
        self.logical: list[float] = [float(i) for i in range(len(ids))]
        self.pruned_at: list[int | None] = [None] * len(ids)
        self.hard_pruned: set[int] = set()  # hidden from every other query (prune(hard=))
        self.set_indices: list[list[int]] = []
        self.parents: list[int | None] = [None] * len(ids)
        """Per token, the physical index of its tree parent, or ``None`` (prompt and TEMPO
        tokens). A token with a parent is a *tree token*: it sees its parent, whatever its
        parent sees, and itself (ancestor-only visibility; see :func:`~tempo_lens.masks.visibility`)."""
        self.version = 0
        self.stale_from: int | None = None
        """Smallest physical index whose mask row changed after later tokens existed
        (a retroactive prune): KV-cache entries from there on are stale."""

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_prompt(
        cls,
        prompt_ids: Sequence[Any] | Tensor | np.ndarray,
        *,
        isolate: bool = True,
        positions: PositionScheme | None = None,
    ) -> SequenceState:
        """Start a state from prompt token ids (shapes: :func:`tempo_lens.prompts.prompt_token_ids`)."""
        prompt_ids = prompt_token_ids(prompt_ids)
        return cls(prompt_ids, isolate=isolate, positions=positions)

    @classmethod
    def from_sets(
        cls,
        prompt_ids: Sequence[int],
        sets: Iterable[Sequence[int]],
        *,
        isolate: bool = True,
        positions: PositionScheme | None = None,
    ) -> SequenceState:
        """Build a state from a prompt and a list of parallel sets (one per step)."""
        st = cls(prompt_ids, isolate=isolate, positions=positions)
        for members in sets:
            st.append_set(members)
        return st

    # ------------------------------------------------------------------ mutation
    @property
    def n_steps(self) -> int:
        """Number of parallel sets appended so far."""
        return len(self.set_indices)

    def append_set(
        self,
        token_ids: Sequence[int],
        *,
        positions: Sequence[float] | None = None,
        parents: Sequence[int] | None = None,
    ) -> list[int]:
        """Append the members of the next step's parallel set.

        Args:
            token_ids: Member token ids, in member order (most probable first).
            positions: Explicit logical positions for the members (any finite floats);
                defaults to the state's :class:`PositionScheme`, or for tree members to
                their parent's logical position + 1 (depth).
            parents: Make the members *tree tokens*: the physical index of each member's
                parent, an earlier token (a member of this set appended before it is
                allowed, so a whole draft tree can be one set). A tree token sees only its
                ancestors and itself (isolation does not apply to it), see
                :func:`tempo_lens.masks.visibility`.

        Returns:
            The physical indices given to the members.

        Raises:
            ValueError: No members; ``positions`` or ``parents`` of the wrong length; a
                non-finite position; a parent that is not an earlier token.
        """
        ids = [int(t) for t in token_ids]
        if not ids:
            raise ValueError("a parallel set needs at least one member")
        step = self.n_steps
        first = len(self.token_ids)
        tree = None if parents is None else [int(p) for p in parents]
        if tree is not None:
            if len(tree) != len(ids):
                raise ValueError(f"got {len(tree)} parents for {len(ids)} members")
            bad = [p for k, p in enumerate(tree) if not 0 <= p < first + k]
            if bad:
                raise ValueError(f"parents must be earlier physical indices, got {bad[:3]}")
        if positions is None and tree is not None:
            pos: list[float] = []
            for p in tree:
                pos.append((self.logical[p] if p < first else pos[p - first]) + 1.0)
        elif positions is None:
            pos = set_positions(
                self.scheme,
                prompt_length=self.prompt_length,
                step=step,
                n_members=len(ids),
                first_index=first,
            )
        else:
            pos = [float(p) for p in positions]
            if len(pos) != len(ids):
                raise ValueError(f"got {len(pos)} positions for {len(ids)} members")
            check_finite_positions(pos)
        indices = list(range(first, first + len(ids)))
        self.token_ids += ids
        self.steps += [step] * len(ids)
        self.ranks += list(range(len(ids)))
        self.logical += pos
        self.pruned_at += [None] * len(ids)
        self.parents += [None] * len(ids) if tree is None else tree
        self.set_indices.append(indices)
        self.version += 1
        return indices

    def prune(self, index: int, *, at_step: int, hard: bool = False) -> None:
        """Mark a generated token as pruned at ``at_step``.

        Queries whose step is greater than ``at_step`` (and the readout that produces
        step ``at_step + 1``'s distribution) no longer see it. The token stays in the
        sequence and the record.

        Args:
            index: Physical index of a generated, alive token.
            at_step: The step at which the pruning happens (``>=`` the token's step).
            hard: Hide it from every other query, also those appended before the prune
                (as if it had never been appended); their KV-cache entries become stale.
        """
        if not 0 <= index < len(self.token_ids):
            raise IndexError(f"no token at physical index {index} (length {len(self)})")
        if self.steps[index] < 0:
            raise ValueError(f"token {index} is part of the prompt and cannot be pruned")
        if self.pruned_at[index] is not None:
            raise ValueError(f"token {index} was already pruned at step {self.pruned_at[index]}")
        if at_step < self.steps[index]:
            raise ValueError(
                f"token {index} was appended at step {self.steps[index]}; cannot prune it at {at_step}"
            )
        self.pruned_at[index] = int(at_step)
        if hard:
            self.hard_pruned.add(index)
        later = [i for i, s in enumerate(self.steps) if (i > index if hard else s > at_step)]
        if later:
            first = later[0]
            self.stale_from = first if self.stale_from is None else min(self.stale_from, first)
        self.version += 1

    def set_logical_positions(self, positions: Sequence[float]) -> None:
        """Replace the whole logical position map (one finite float per token)."""
        pos = [float(p) for p in positions]
        if len(pos) != len(self.token_ids):
            raise ValueError(f"got {len(pos)} positions for {len(self.token_ids)} tokens")
        check_finite_positions(pos)
        self.logical = pos
        self.stale_from = 0
        self.version += 1

    def clear_stale(self) -> None:
        """Declare the KV cache rebuilt after a retroactive prune (see :attr:`stale_from`)."""
        self.stale_from = None

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self.token_ids)

    def token(self, index: int) -> TokenInfo:
        """Everything known about the token at a physical index."""
        at = (self.token_ids, self.steps, self.ranks, self.logical, self.pruned_at, self.parents)
        return TokenInfo(index, *(values[index] for values in at))  # type: ignore[arg-type]

    def tokens(self) -> list[TokenInfo]:
        """Every token's :class:`TokenInfo`, by physical index."""
        return [self.token(i) for i in range(len(self))]

    def set_of(self, index: int) -> list[int]:
        """Physical indices of the parallel set a generated token belongs to."""
        step = self.steps[index]
        if step < 0:
            raise ValueError(f"token {index} is part of the prompt, not of a parallel set")
        return list(self.set_indices[step])

    def alive_indices(self, as_of_step: int | None = None) -> list[int]:
        """Indices of tokens not pruned (as of ``as_of_step``: pruned at a step ``<`` it)."""
        cut = ALIVE if as_of_step is None else as_of_step
        return [i for i, p in enumerate(self.pruned_at) if p is None or p >= cut]

    @property
    def is_tree(self) -> bool:
        """True if some token has a tree parent (see :attr:`parents`)."""
        return any(p is not None for p in self.parents)

    def ancestors(self, index: int) -> list[int]:
        """Physical indices of a token's tree ancestors, nearest first (``[]`` if none).

        The chain of :attr:`parents` up to and including the first token that is not a
        tree token (a prompt or TEMPO token).
        """
        out = []
        p = self.parents[index]
        while p is not None:
            out.append(p)
            p = self.parents[p]
        return out

    def is_parallel(self, index: int) -> bool:
        """True if the token belongs to a set with more than one member."""
        return self.steps[index] >= 0 and len(self.set_indices[self.steps[index]]) > 1

    # ------------------------------------------------------------------ tensors
    def tokens_tensor(self, device: torch.device | str | None = None) -> Int[Tensor, "1 pos"]:
        """``[1, pos]`` token ids (the model's input)."""
        return torch.tensor([self.token_ids], dtype=torch.long, device=device)

    def steps_tensor(self, device: torch.device | str | None = None) -> Int[Tensor, " pos"]:
        """The step of every token (``-1`` for the prompt)."""
        return torch.tensor(self.steps, dtype=torch.long, device=device)

    def pruned_tensor(self, device: torch.device | str | None = None) -> Int[Tensor, " pos"]:
        """The step at which each token was pruned (:data:`~tempo_lens.masks.ALIVE` if alive)."""
        vals = [ALIVE if p is None else p for p in self.pruned_at]
        return torch.tensor(vals, dtype=torch.long, device=device)

    def position_deltas(self, device: torch.device | str | None = None) -> Float[Tensor, " pos"]:
        """``logical - physical`` for every token (float64)."""
        deltas = [lp - i for i, lp in enumerate(self.logical)]
        return torch.tensor(deltas, dtype=torch.float64, device=device)

    def parents_tensor(self, device: torch.device | str | None = None) -> Int[Tensor, " pos"]:
        """Each token's tree parent (``-1`` where it has none)."""
        vals = [-1 if p is None else p for p in self.parents]
        return torch.tensor(vals, dtype=torch.long, device=device)

    def visibility(
        self,
        query_indices: Sequence[int] | Tensor | None = None,
        *,
        view_step: int | None = None,
        window: int | float | None = None,
        isolate: bool | None = None,
        device: torch.device | str | None = None,
    ) -> Bool[Tensor, "n_queries n_keys"]:
        """Which keys each query may attend to (see :func:`tempo_lens.masks.visibility`).

        Args:
            query_indices: Physical indices of the queries; default all tokens.
            view_step: Queries see the sequence as of at least this step.
            window: Sliding-window size in logical positions (local-attention layers).
            isolate: Override :attr:`isolate` (partial isolation: a layer or head that is
                not isolated sees siblings as in visible mode).
            device: Device of the result.
        """
        if query_indices is None:
            q = torch.arange(len(self), device=device)
        else:
            q = torch.as_tensor(query_indices, dtype=torch.long, device=device)
        return visibility(
            self.steps_tensor(device),
            self.pruned_tensor(device),
            q,
            isolate=self.isolate if isolate is None else isolate,
            view_step=view_step,
            hard=torch.tensor([i in self.hard_pruned for i in range(len(self))], device=device),
            logical=(
                None
                if window is None
                else torch.tensor(self.logical, dtype=torch.float64, device=device)
            ),
            window=window,
            parents=self.parents_tensor(device) if self.is_tree else None,
        )

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record of the state (inverse: :meth:`from_dict`).

        Keys: ``prompt_length``, ``isolate``, ``positions`` (the :class:`PositionScheme`),
        and one list per token, by physical index: ``token_ids``, ``steps`` (``-1`` for
        the prompt), ``logical`` (RoPE positions) and ``pruned_at`` (step or ``None``).
        Ranks and sets follow from ``steps`` (members of a step are contiguous). A tree
        state adds ``parents`` (parent index or ``None`` per token).
        """
        return {
            "prompt_length": self.prompt_length,
            "isolate": self.isolate,
            "positions": asdict(self.scheme),
            "token_ids": list(self.token_ids),
            "steps": list(self.steps),
            "logical": list(self.logical),
            "pruned_at": list(self.pruned_at),
            **({"hard_pruned": sorted(self.hard_pruned)} if self.hard_pruned else {}),
            **({"parents": list(self.parents)} if self.is_tree else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SequenceState:
        """Rebuild a state from :meth:`to_dict`.

        Built through :meth:`append_set` and :meth:`prune`, so every invariant is checked
        again.

        Raises:
            ValueError: The lists disagree in length, or the steps are not the prompt
                (``-1``) followed by contiguous sets ``0, 1, 2, ...``.
        """
        ids, steps, logical = data["token_ids"], data["steps"], data["logical"]
        pruned = data["pruned_at"]
        p = int(data["prompt_length"])
        if not len(ids) == len(steps) == len(logical) == len(pruned):
            raise ValueError("sequence state lists have different lengths")
        st = cls(
            ids[:p],
            isolate=bool(data["isolate"]),
            positions=PositionScheme(**data.get("positions") or {}),
        )
        parents = data.get("parents") or [None] * len(ids)
        if len(parents) != len(ids):
            raise ValueError("sequence state lists have different lengths")
        if any(x is not None for x in parents[:p]):
            raise ValueError("prompt tokens cannot have tree parents")
        for step, group in itertools.groupby(range(p, len(ids)), key=lambda i: steps[i]):
            idx = list(group)
            if step != st.n_steps:
                raise ValueError(f"token {idx[0]} has step {step}, expected {st.n_steps}")
            tree = [parents[i] for i in idx]
            if any(x is None for x in tree) and any(x is not None for x in tree):
                raise ValueError(f"step {step} mixes tree and non-tree tokens")
            st.append_set(
                [ids[i] for i in idx],
                positions=[logical[i] for i in idx],
                parents=None if tree[0] is None else tree,
            )
        if steps[:p] != [-1] * p:
            raise ValueError("prompt tokens must have step -1")
        if [float(x) for x in logical] != st.logical:  # e.g. a moved prompt
            st.set_logical_positions(logical)
        hard = set(data.get("hard_pruned") or ())
        for i, at in enumerate(pruned):
            if at is not None:
                st.prune(i, at_step=int(at), hard=i in hard)
        st.clear_stale()
        return st

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SequenceState):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable

    # ------------------------------------------------------------------ misc
    def copy(self) -> SequenceState:
        """An independent copy (same version number)."""
        new = copy.copy(self)  # scalars and the frozen scheme are shared
        for name in ("token_ids", "steps", "ranks", "logical", "pruned_at", "parents"):
            setattr(new, name, list(getattr(self, name)))
        new.set_indices = [list(s) for s in self.set_indices]
        new.hard_pruned = set(self.hard_pruned)
        return new

    def __repr__(self) -> str:
        n_pruned = sum(p is not None for p in self.pruned_at)
        return (
            f"SequenceState(len={len(self)}, prompt={self.prompt_length}, steps={self.n_steps}, "
            f"isolate={self.isolate}, scheme={self.scheme}, pruned={n_pruned})"
        )
