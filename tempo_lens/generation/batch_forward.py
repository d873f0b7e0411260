"""Forwards for several TEMPO sequences in one batch (the model-facing half of generation).

:class:`BatchForward` owns everything a generation step needs from the model for ``B``
rows at once: the :class:`~tempo_lens.layout.BatchLayout` (which token of which row sits in
each column, pad slots where a row appended fewer tokens than the widest), the TEMPO hooks
over the rows' states (per-row positions and ``[batch, 1, q, k]`` masks), the KV cache,
and the rows' step observers.

Observers are per row and see their row exactly as in a single-sequence generation: their
hooks receive a view of the hooked tensor restricted to that row's real tokens (batch
dimension 1, pad slots removed from the query and key axes of attention-shaped hooks and
from the position axis of the others). With one row and no pads the view is the tensor
itself. Observers must only read (their return values are ignored).

Example:
    >>> from tempo_lens import SequenceState, make_tiny_model
    >>> model = make_tiny_model()
    >>> states = [SequenceState([1, 2, 3]), SequenceState([4, 5])]
    >>> fwd = BatchForward(model, states, use_kv_cache=True)
    >>> with fwd.attached():
    ...     logits = fwd.run([[0, 1, 2], [0, 1]], step=-1)
    >>> [tuple(x.shape) for x in logits]  # one [k, d_vocab] block per row
    [(3, 64), (2, 64)]
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from tempo_lens.backends import (
    TempoModel,
    forward,
    is_attention_shaped,
    kv_cache_length,
    make_kv_cache,
    scratch_kv_cache,
    select_kv_cache,
    truncate_kv_cache,
)
from tempo_lens.hooks import HookFn, TempoHooks
from tempo_lens.layout import PAD, BatchLayout
from tempo_lens.state import SequenceState

__all__ = ["BatchForward"]
"""Hook-name suffixes whose tensors are ``[batch, head_index, query_pos, key_pos]``."""


class BatchForward:
    """Batched forwards over the states of ``B`` TEMPO sequences.

    Args:
        model: A rotary ``HookedTransformer``.
        states: One :class:`~tempo_lens.SequenceState` per row (mutated by the caller
            through ``append_set`` / ``prune`` between forwards).
        use_kv_cache: Keep a KV cache (forward only new columns) or run full forwards.
        observers: One list of step observers per row (``None``: none).
        isolate_layers: Partial isolation by layer (see :class:`TempoHooks`).
        isolate_heads: Partial isolation by query head (see :class:`TempoHooks`).
    """

    def __init__(
        self,
        model: TempoModel,
        states: Sequence[SequenceState],
        *,
        use_kv_cache: bool,
        observers: Sequence[Sequence[Any]] | None = None,
        isolate_layers: object = None,
        isolate_heads: object = None,
    ) -> None:
        self.model = model
        self.states = list(states)
        self.rows = list(range(len(self.states)))
        """Row (index into ``states``) in each batch slot; finished rows are dropped."""
        self.layout = BatchLayout(len(self.states))
        self.hooks = TempoHooks(
            model,
            self.states,
            layout=self.layout,
            isolate_layers=isolate_layers,
            isolate_heads=isolate_heads,
        )
        self.cache = make_kv_cache(model, batch_size=len(self.states)) if use_kv_cache else None
        self.observers = [list(o) for o in observers] if observers else [[] for _ in states]
        if len(self.observers) != len(self.states):
            raise ValueError(f"{len(self.observers)} observer lists for {len(self.states)} rows")
        self._slot = {r: r for r in self.rows}
        self._views: dict[tuple[Any, ...], Tensor | None] = {}
        self._views_version = -1

    # ------------------------------------------------------------------ hooks
    def fwd_hooks(self) -> list[tuple[str, HookFn]]:
        """The TEMPO hooks, then one dispatching hook per hook name the observers use."""
        by_name: dict[str, list[tuple[int, HookFn]]] = {}
        for row, observers in enumerate(self.observers):
            for obs in observers:
                for name, fn in obs.fwd_hooks(self.model):
                    by_name.setdefault(name, []).append((row, fn))
        return self.hooks.fwd_hooks() + [(n, self._dispatch(n, fns)) for n, fns in by_name.items()]

    @contextmanager
    def attached(self) -> Iterator[BatchForward]:
        """Attach all hooks to the model for the block (no gradients inside)."""
        with (
            torch.no_grad(),
            self.hooks.backend_masks_replaced(),
            self.model.hooks(fwd_hooks=self.fwd_hooks()),  # type: ignore[arg-type]
        ):
            yield self

    def _dispatch(self, name: str, fns: list[tuple[int, HookFn]]) -> HookFn:
        attention = is_attention_shaped(name)

        def hook(tensor: Tensor, hook: Any) -> None:
            for row, fn in fns:
                slot = self._slot.get(row)
                view = None if slot is None else self._row_view(tensor, slot, attention)
                if view is not None:
                    fn(view, hook)

        return hook

    def _row_view(self, x: Tensor, slot: int, attention: bool) -> Tensor | None:
        """``x`` restricted to a slot's real tokens; None when it has none in ``x``."""
        if self.layout.n_rows == 1 and PAD not in self.layout.columns[0]:
            return x
        dims = (2, 3) if attention else (1,)
        out = x[slot : slot + 1]
        for dim in dims:
            keep = self._real(slot, x.shape[dim])
            if keep is None:
                return None
            if keep.numel() != x.shape[dim]:
                out = out.index_select(dim, keep.to(x.device))
        return out

    def _real(self, slot: int, width: int) -> Tensor | None:
        """Offsets of the real tokens of a slot among the last ``width`` columns."""
        if self._views_version != self.layout.version:
            self._views, self._views_version = {}, self.layout.version
        key = (slot, width)
        if key not in self._views:
            cols = self.layout.tensor()[slot, self.layout.n_columns - width :]
            keep = (cols != PAD).nonzero()[:, 0]
            self._views[key] = keep if keep.numel() else None
        return self._views[key]

    # ------------------------------------------------------------------ forwards
    def drop(self, rows: Sequence[int]) -> None:
        """Remove finished rows from the batch.

        Their slots, their KV-cache rows and the columns no remaining row uses are dropped,
        so later forwards no longer compute them.
        """
        keep = [i for i, r in enumerate(self.rows) if r not in set(rows)]
        if len(keep) == len(self.rows) or not keep:
            return
        columns = self.layout.select(keep)
        if self.cache is not None:
            select_kv_cache(self.cache, torch.tensor(keep), torch.tensor(columns))
        self.rows = [self.rows[i] for i in keep]
        self._slot = {r: i for i, r in enumerate(self.rows)}
        self.hooks.states = [self.states[r] for r in self.rows]

    def run(self, new: Sequence[Sequence[int]], step: int) -> list[Tensor]:
        """Append one block of columns (each row's new physical indices) and forward it.

        Observers of rows with new tokens record this forward as ``step``.

        Args:
            new: Per row (all rows, in the order given at construction), the physical
                indices just appended to its state (``[]`` for a row that appends nothing).
            step: The step the new tokens belong to (``-1``: the prompts).

        Returns:
            Per row, the ``[k, d_vocab]`` logits of its new tokens (``k = 0`` when none).
        """
        dropped = [r for r, ix in enumerate(new) if ix and r not in self._slot]
        if dropped:
            raise ValueError(f"rows {dropped} were dropped from the batch")
        start = self.layout.append([new[r] for r in self.rows])
        active = [r for r, ix in enumerate(new) if ix]
        begun: list[Any] = []
        try:
            for r in active:
                for obs in self.observers[r]:
                    obs.begin_step(step, list(new[r]), self.states[r])
                    begun.append(obs)
            logits = self._forward(start)
        except BaseException:
            _abort(begun)
            raise
        _end([obs for r in active for obs in self.observers[r]])
        return self._split(logits, start, new)

    def rerun(
        self, views: Mapping[int, tuple[int, int]], new: Sequence[Sequence[int]]
    ) -> list[Tensor]:
        """Forward the last block again with per-row viewing steps.

        Not recorded by observers; the KV cache is left as it was. Used for the readout
        after a pruning event.

        Args:
            views: Per row ``(view_step, from_index)`` (see :meth:`TempoHooks.viewing`).
            new: The last block's per-row physical indices (as given to :meth:`run`).
        """
        start = self.layout.n_columns - max(len(new[r]) for r in self.rows)
        slots = {self._slot[r]: v for r, v in views.items()}
        with self.hooks.viewing(0, rows=slots):
            logits = self._forward(start)
        return self._split(logits, start, new)

    def rebuild(
        self, rows: Sequence[int], new: Sequence[Sequence[int]], *, rerecord: Sequence[Any] = ()
    ) -> list[Tensor]:
        """Recompute every column from the rows' first stale token on, after hard prunes.

        A hard prune (``state.prune(..., hard=True)``) changes what every token after the
        pruned one may see. With a KV cache, the cache is truncated at the first such
        column (over ``rows``) and those columns are forwarded again and committed, so the
        cache is exactly that of a sequence in which the pruned tokens were never
        appended; without a cache the next full forward does the same. The rows' states
        are then marked fresh (:meth:`~tempo_lens.SequenceState.clear_stale`). Not recorded
        by observers (each query is recorded once, when it is appended).

        Args:
            rows: The rows (indices into the construction ``states``) pruned hard.
            new: The last block's per-row physical indices (as given to :meth:`run`).
            rerecord: Attention recorders (e.g. the pruners) whose stored rows of the
                recomputed steps are replaced by the rebuilt attention
                (:meth:`~tempo_lens.hooks.recorder.AttentionRecorder.begin_rerecord`).

        Returns:
            Per row, the ``[k, d_vocab]`` logits of its last block (the readout).
        """
        last = self.layout.n_columns - max(len(new[r]) for r in self.rows)
        stale = [(self._slot[r], self.states[r].stale_from) for r in rows]
        cols = [self.layout.column_of(slot, [i])[0] for slot, i in stale if i is not None]
        start = min([last, *cols]) if self.cache is not None else last
        if self.cache is not None:
            truncate_kv_cache(self.cache, start)
        recorders = [r for r in rerecord if r is not None]
        for rec in recorders:
            rec.begin_rerecord()
        try:
            logits = self._forward(start)[:, last - start :]
        except BaseException:
            _abort(recorders)
            raise
        for rec in recorders:
            rec.end_rerecord()
        for r in rows:
            self.states[r].clear_stale()
        return self._split(logits, last, new)

    def _forward(self, start: int) -> Tensor:
        device = self.model.cfg.device
        first = start if self.cache is not None else 0
        tokens = self._tokens(first).to(device)
        mask = self.layout.attention_mask(first, device)
        positions = self.layout.tensor()[:, first:].clamp(min=0)  # physical, per row
        if self.cache is None:
            logits = forward(self.model, tokens, attention_mask=mask, positions=positions)
            return logits[:, start:]
        if kv_cache_length(self.cache) == start:
            return forward(
                self.model, tokens, cache=self.cache, attention_mask=mask, positions=positions
            )
        with scratch_kv_cache(self.cache, start):  # readout forward: do not commit
            return forward(
                self.model, tokens, cache=self.cache, attention_mask=mask, positions=positions
            )

    def _tokens(self, start: int) -> Tensor:
        """Token ids of columns ``start..`` (pad slots get token 0; they are never seen)."""
        cols = self.layout.tensor()[:, start:]
        out = torch.zeros(cols.shape, dtype=torch.long)
        for slot, r in enumerate(self.rows):
            real = cols[slot] != PAD
            ids = torch.tensor(self.states[r].token_ids, dtype=torch.long)
            out[slot, real] = ids[cols[slot, real]]
        return out

    def _split(self, logits: Tensor, start: int, new: Sequence[Sequence[int]]) -> list[Tensor]:
        """Per row, the logits of its real columns among ``start..``."""
        out = [logits.new_empty((0, logits.shape[-1])) for _ in new]
        for slot, r in enumerate(self.rows):
            cols = self.layout.columns[slot][start:]
            offsets = [c for c, p in enumerate(cols) if p != PAD]
            out[r] = logits[slot, offsets] if len(offsets) != len(cols) else logits[slot]
            if len(offsets) != len(new[r]):
                raise AssertionError(f"row {r}: {len(offsets)} columns for {len(new[r])} tokens")
        return out


def _end(observers: Sequence[Any]) -> None:
    """End the step of every observer; the first error is raised after all have ended."""
    error: BaseException | None = None
    for obs in observers:
        try:
            obs.end_step()
        except BaseException as exc:  # re-raised below, once every observer has ended
            error = error or exc
    if error is not None:
        raise error


def _abort(observers: Sequence[Any]) -> None:
    """A forward failed: end every begun observer's step without raising over the error.

    Observers may define ``abort_step()`` (discard the step); otherwise ``end_step()`` is
    called and whatever it raises is dropped, so the original exception propagates.
    """
    for obs in observers:
        with contextlib.suppress(Exception):
            getattr(obs, "abort_step", obs.end_step)()
