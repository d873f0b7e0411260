"""The one attention recorder: ``hook_pattern`` rows of each step's new queries.

Retroactive pruning (in :func:`tempo_lens.generate`) and attention capture
(:class:`~tempo_lens.hooks.capture.AttentionCapture`) both need the same thing: for some layers
and heads, the attention rows of the queries appended at a step to every key that existed
then. :class:`AttentionRecorder` is a :class:`~tempo_lens.generation.StepObserver` that
records exactly that, read from ``blocks.{l}.attn.hook_pattern``:

* with a KV cache the pattern is ``[batch, head_index, q_new, key_pos]``; without one it is
  ``[batch, head_index, pos, pos]`` and the new queries are its last ``q_new`` rows; both
  give the same rows;
* row ``r`` of step ``s`` is the query at physical index ``state.set_indices[s][r]``
  (step ``-1``: the prompt) and column ``j`` the key at physical index ``j``, because every
  token is fed to the model exactly once (physical index == KV-cache index).

Only forwards between :meth:`~AttentionRecorder.begin_step` and
:meth:`~AttentionRecorder.end_step` are recorded (the readout forward after a pruning
event is not), so each token's query is recorded exactly once.

Examples:
    >>> from tempo_lens import TempoConfig, generate, make_tiny_model
    >>> model = make_tiny_model()
    >>> rec = AttentionRecorder(layers=[0, 1], heads=[2])
    >>> trace = generate(model, [1, 2, 3], TempoConfig(max_steps=2), observers=[rec])
    >>> tuple(rec.rows[0].shape[:2])  # [layer, head_index, q_new, key_pos]
    (2, 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from tempo_lens._numbers import LayersLike
from tempo_lens.backends import TempoModel, hook_name, layer_of, layer_windows
from tempo_lens.pruning import gather_votes, resolve_layers
from tempo_lens.state import SequenceState

__all__ = ["AttentionRecorder"]


class AttentionRecorder:
    """Record ``[layer, head_index, q_new, key_pos]`` attention rows of every step.

    Args:
        layers: Layers to record: ``"all"``, a group (``"early"``, ``"middle"``,
            ``"late"``), ``"0,3,5"`` or a list of ints (see
            :func:`tempo_lens.pruning.resolve_layers`).
        heads: Query heads to record (``None`` = all, in order).
        dtype: Stored dtype (``torch.float32`` or ``torch.float16``).
        device: Where rows are stored (``None``: where the model computed them).
        include_prompt: Also record the prompt forward's rows (step ``-1``).

    Attributes:
        layers: Resolved model layer ids of axis 0 (set by :meth:`fwd_hooks`).
        heads: Resolved model head ids of axis 1 (set by :meth:`fwd_hooks`).
        windows: Sliding window of each recorded layer (``None``: full attention).
        rows: ``step -> [layer, head_index, q_new, n_keys]`` tensors.
        query_indices: ``step -> physical indices`` of the step's queries.
        token_ids: Token ids of the sequence as of the last step begun.

    Raises:
        ValueError: From :meth:`fwd_hooks`, for layers or heads the model does not have.
    """

    def __init__(
        self,
        *,
        layers: LayersLike = "all",
        heads: Sequence[int] | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        include_prompt: bool = True,
    ) -> None:
        self.layer_spec = layers
        self.head_spec = None if heads is None else [int(h) for h in heads]
        self.dtype = dtype
        self.device = device
        self.include_prompt = include_prompt
        self.layers: list[int] = []
        self.heads: list[int] = []
        self.windows: list[int | None] = []
        self._reset()

    def _reset(self) -> None:
        self.rows: dict[int, Tensor] = {}
        self.query_indices: dict[int, list[int]] = {}
        self.token_ids: list[int] = []
        self._step: int | None = None
        self._n_new = 0
        self._buf: dict[int, Tensor] = {}
        self._rerecord = False

    # ------------------------------------------------------------------ observer
    def fwd_hooks(self, model: TempoModel) -> list[tuple[str, Any]]:
        """Read-only ``hook_pattern`` hooks for the chosen layers (resolves layers/heads)."""
        n_heads = model.cfg.n_heads
        self.layers = resolve_layers(self.layer_spec, model.cfg.n_layers)
        windows = layer_windows(model)
        self.windows = [windows[layer] for layer in self.layers]
        heads = list(range(n_heads)) if self.head_spec is None else self.head_spec
        bad = [h for h in heads if not 0 <= h < n_heads]
        if bad or not heads or len(set(heads)) != len(heads):
            raise ValueError(f"heads must be distinct indices in [0, {n_heads}), got {heads}")
        self.heads = heads
        return [(hook_name(layer, "pattern"), self._hook_pattern) for layer in self.layers]

    def begin_step(self, step: int, query_indices: list[int], state: SequenceState) -> None:
        """Start recording the rows of ``query_indices`` (step ``-1`` starts a generation)."""
        if step < 0:
            self._reset()
        self.token_ids = list(state.token_ids)
        if step < 0 and not self.include_prompt:
            return
        self._step, self._n_new = step, len(query_indices)
        self.query_indices[step] = [int(i) for i in query_indices]
        self._buf = {}

    def abort_step(self) -> None:
        """The step's (or re-record's) forward failed: discard what it recorded."""
        if self._step is not None:
            self.query_indices.pop(self._step, None)
        self._step, self._rerecord = None, False
        self._buf = {}

    def end_step(self) -> None:
        """Stack the step's rows into ``[layer, head_index, q_new, key_pos]`` and store them."""
        step = self._step
        self._step = None
        if step is None:
            return
        if len(self._buf) != len(self.layers):
            raise RuntimeError(
                f"step {step}: recorded {len(self._buf)} of {len(self.layers)} layers "
                "(were the recorder's hooks attached?)"
            )
        rows = torch.stack([self._buf[layer] for layer in self.layers])
        self._buf = {}
        self._store(step, rows)

    def begin_rerecord(self) -> None:
        """Record the next forward's rows over the steps already stored (hard pruning).

        After a hard prune the tokens appended since the pruned one are recomputed
        (:meth:`~tempo_lens.generation.batch_forward.BatchForward.rebuild`); :meth:`end_rerecord`
        then replaces the stored rows of every step whose queries that forward covered,
        so later judgements read the recomputed attention.
        """
        self._rerecord, self._buf = True, {}

    def end_rerecord(self) -> None:
        """Replace the covered steps' rows with those of the forward since :meth:`begin_rerecord`."""
        buf, self._rerecord, self._buf = self._buf, False, {}
        if len(buf) != len(self.layers):
            raise RuntimeError(f"re-recorded {len(buf)} of {len(self.layers)} layers")
        full = torch.stack([buf[layer] for layer in self.layers])  # layer head q n
        first = full.shape[3] - full.shape[2]  # physical index of the first query
        for step, rows in list(self.rows.items()):
            q = self.query_indices[step]
            if min(q) >= first:
                self._store(step, full[:, :, [i - first for i in q], : rows.shape[-1]])

    def _store(self, step: int, rows: Tensor) -> None:
        """Keep one step's stacked rows (subclasses convert or spool them)."""
        self.rows[step] = rows

    # ------------------------------------------------------------------ hooks
    def _keep(self, x: Tensor) -> Tensor:
        """A detached copy of ``x`` in the stored dtype and device."""
        device = x.device if self.device is None else self.device
        return x.detach().to(device=device, dtype=self.dtype, copy=True)

    def _hook_pattern(self, pattern: Tensor, hook: Any) -> None:
        if self._step is None and not self._rerecord:
            return
        layer = layer_of(str(hook.name))
        assert layer is not None
        heads = slice(None) if self.heads == list(range(pattern.shape[1])) else self.heads
        new = pattern.shape[2] if self._rerecord else self._n_new
        self._buf[layer] = self._keep(pattern[0, heads, -new:, :])

    # ------------------------------------------------------------------ access
    def votes(
        self, first_step: int, last_step: int, keys: list[int]
    ) -> Float[Tensor, "layer head_index query key"]:
        """Attention from the queries of steps ``first_step..last_step`` to ``keys``.

        Args:
            first_step: First recorded step whose queries are used.
            last_step: Last recorded step whose queries are used (inclusive).
            keys: Physical indices of the keys (e.g. the members of an earlier set).

        Returns:
            ``[layer, head_index, query, key]``: queries of all the steps concatenated in
            physical order, keys in the given order.
        """
        return gather_votes(self.rows.__getitem__, range(first_step, last_step + 1), keys)

    def forget_before(self, step: int) -> None:
        """Drop the rows of every step before ``step`` (bounded memory for pruning)."""
        for s in [s for s in self.rows if s < step]:
            del self.rows[s]
            del self.query_indices[s]
