"""Attention capture inside TEMPO generation, indexed through the sequence state.

:class:`AttentionCapture` is a :class:`~tempo_lens.generation.StepObserver`. At every step
it keeps, for the chosen layers and heads, the attention rows of the queries appended at
that step (the new members of the step's set; step ``-1`` is the prompt) to *all* keys
that existed then. Rows are read from ``blocks.{l}.attn.hook_pattern``: in KV-cache mode
the pattern is ``[batch, head, q_new, n_keys]``, without a cache it is ``[batch, head, n,
n]`` and the new queries are its last ``q_new`` rows; both give the same rows.

Because tempo_lens feeds every token to the model exactly once (physical index == KV-cache
index), row ``r`` of step ``s`` is the query at physical index ``state.set_indices[s][r]``
and column ``j`` is the key at physical index ``j``. :class:`AttentionData` pairs the rows
with the final :class:`~tempo_lens.SequenceState` (``trace.to_state()``), so every row and
column maps to a token: physical index, step, logical position, set, pruned step.

Memory is bounded by what is asked for (layers x heads x queries x keys per step), can be
halved with ``float16=True``, and with ``spool_dir`` each step is written to
``step_XXXXX.npz`` on disk at the end of the step and read back lazily.

Examples:
    >>> from tempo_lens import TempoConfig, generate, make_tiny_model
    >>> model = make_tiny_model()
    >>> cap = AttentionCapture(layers=[0], heads=[0, 1])
    >>> trace = generate(model, [1, 2, 3], TempoConfig(max_steps=3), observers=[cap])
    >>> data = cap.result(trace)
    >>> data.full_matrix().shape == (len(trace.tokens), len(trace.tokens))
    True
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from tempo_lens._numbers import LayersLike
from tempo_lens.backends import TempoModel, is_attention_shaped
from tempo_lens.hooks.recorder import AttentionRecorder
from tempo_lens.io import atomic_write
from tempo_lens.state import SequenceState
from tempo_lens.trace import Trace

__all__ = ["AttentionCapture", "AttentionData"]
"""Hook-name suffixes whose tensors are ``[batch, head, query_pos, key_pos]``."""

AGGS = ("mean", "max", "sum")


def _reduce(x: np.ndarray, axis: tuple[int, ...], agg: str) -> np.ndarray:
    if agg not in AGGS:
        raise ValueError(f"agg must be one of {AGGS}, got {agg!r}")
    return getattr(x, agg)(axis=axis)


def _spool_path(spool_dir: Path, step: int) -> Path:
    return spool_dir / ("prompt.npz" if step < 0 else f"step_{step:05d}.npz")


class AttentionCapture(AttentionRecorder):
    """Record attention rows (and optionally other hooks) during :func:`tempo_lens.generate`.

    The :class:`~tempo_lens.hooks.recorder.AttentionRecorder` (the same recorder retroactive
    pruning uses), storing each step's rows as a NumPy array on the CPU (or spooled to
    disk) and pairing them with the trace in :meth:`result`.

    Args:
        layers: Layers to keep: ``None``/``"all"``, a group (``"early"``, ``"middle"``,
            ``"late"``), ``"0,3,5"`` or a list of ints.
        heads: Query heads to keep (``None`` = all).
        hook_names: Extra hooks to store per step. A name containing ``{layer}`` is expanded
            over the captured layers (``"blocks.{layer}.attn.hook_attn_scores"``), else taken
            literally. Attention-shaped hooks (``hook_pattern``, ``hook_attn_scores``) keep
            ``[head, q_new, key]`` for the chosen heads; any other hook keeps the last
            ``q_new`` positions of batch 0 (``[q_new, ...]``).
        float16: Store float16 instead of float32 (masked entries stay exactly 0; values
            below ~6e-8 underflow to 0; absolute error <= ~5e-4 near 1).
        spool_dir: Write each step to ``spool_dir/step_XXXXX.npz`` and keep nothing in memory.
        include_prompt: Also keep the prompt forward's rows (step ``-1``).
    """

    rows: dict[int, np.ndarray]  # type: ignore[assignment]

    def __init__(
        self,
        *,
        layers: LayersLike | None = None,
        heads: Sequence[int] | None = None,
        hook_names: Sequence[str] = (),
        float16: bool = False,
        spool_dir: str | os.PathLike[str] | None = None,
        include_prompt: bool = True,
    ) -> None:
        self.hook_templates = list(hook_names)
        self.spool_dir = Path(spool_dir) if spool_dir is not None else None
        self.hook_names: list[str] = []
        super().__init__(
            layers="all" if layers is None else layers,
            heads=heads,
            dtype=torch.float16 if float16 else torch.float32,
            device="cpu",
            include_prompt=include_prompt,
        )

    def _reset(self) -> None:
        super()._reset()
        self.extra: dict[int, dict[str, np.ndarray]] = {}
        self.nbytes = 0
        self._extra_buf: dict[str, Tensor] = {}

    # ------------------------------------------------------------------ observer
    def fwd_hooks(self, model: TempoModel) -> list[tuple[str, Any]]:
        """The capture hooks (read-only) for the chosen layers and extra hook names."""
        hooks = super().fwd_hooks(model)
        names = []
        for t in self.hook_templates:
            names += [t.format(layer=layer) for layer in self.layers] if "{layer}" in t else [t]
        known = set(model.hook_dict)
        missing = [n for n in names if n not in known]
        if missing:
            raise ValueError(f"unknown hook names: {missing[:3]}")
        self.hook_names = names
        return hooks + [(n, self._hook_extra(n)) for n in names]

    def begin_step(self, step: int, query_indices: list[int], state: SequenceState) -> None:
        """Start recording the rows of ``query_indices`` (a new generation at step -1)."""
        super().begin_step(step, query_indices, state)
        self._extra_buf = {}

    def abort_step(self) -> None:
        """The step's forward failed: discard what it captured (nothing is written)."""
        super().abort_step()
        self._extra_buf = {}

    def _store(self, step: int, rows: Tensor) -> None:
        """Keep the step's rows ``[layer, head, q, key]`` as NumPy (or spool them)."""
        array = rows.numpy()
        extra = {k: v.numpy() for k, v in self._extra_buf.items()}
        self._extra_buf = {}
        self.nbytes += array.nbytes + sum(v.nbytes for v in extra.values())
        if self.spool_dir is None:
            self.rows[step], self.extra[step] = array, extra
            return
        arrays = {"pattern": array, **{f"hook:{k}": v for k, v in extra.items()}}

        def write(p: Path) -> None:
            with open(p, "wb") as f:
                np.savez(f, **arrays)  # type: ignore[arg-type]

        atomic_write(_spool_path(self.spool_dir, step), write)

    def _hook_extra(self, name: str) -> Any:
        """A hook storing its activation under ``name``, the name it was asked for.

        A bridge's alias such as ``hook_k`` fires under its canonical name (``k.hook_out``).
        """

        def hook(x: Tensor, hook: Any) -> None:
            if self._step is None:
                return
            if is_attention_shaped(name):
                rows = x[0, self.heads, -self._n_new :, :]
            else:
                rows = x[0, -self._n_new :]
            self._extra_buf[name] = self._keep(rows)

        return hook

    # ------------------------------------------------------------------ result
    def result(self, trace: Trace) -> AttentionData:
        """The captured rows paired with ``trace`` (checked to be the same generation).

        Each row was captured when its query was appended, so the state's visibility is
        that of that moment: hard prunes count as soft ones (``state.hard_pruned`` empty).
        The trace may end with tokens appended after the last forward (the tree decoders'
        last token, chosen from the previous forward's logits).

        Raises:
            ValueError: The trace's tokens or sets are not those captured.
        """
        state = trace.to_state()
        state.hard_pruned = set()
        seen = state.token_ids[: len(self.token_ids)]  # a last set may need no forward
        if self.token_ids and self.token_ids != seen:
            raise ValueError("the trace does not match the captured generation (token ids differ)")
        for s, q in self.query_indices.items():
            expected = list(range(state.prompt_length)) if s < 0 else state.set_indices[s]
            if q != expected:
                raise ValueError(f"step {s}: captured queries {q} but the trace has {expected}")
        return AttentionData(
            state=state,
            rows=self.rows if self.spool_dir is None else _Spool(self.spool_dir),
            query_indices=dict(self.query_indices),
            layers=list(self.layers),
            heads=list(self.heads),
            texts=list(trace.texts),
            trace=trace,
            extra=self.extra if self.spool_dir is None else None,
            windows=list(self.windows),
        )


class _Spool(Mapping):
    """Lazy ``step -> rows`` mapping over a spool directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _steps(self) -> list[int]:
        out = [-1] if (self.directory / "prompt.npz").exists() else []
        return out + sorted(int(p.stem[5:]) for p in self.directory.glob("step_*.npz"))

    def load(self, step: int) -> dict[str, np.ndarray]:
        path = _spool_path(self.directory, step)
        if not path.exists():
            raise KeyError(step)
        with np.load(path) as z:
            return {k: z[k] for k in z.files}

    def __getitem__(self, step: int) -> np.ndarray:
        return self.load(step)["pattern"]

    def __iter__(self):
        return iter(self._steps())

    def __len__(self) -> int:
        return len(self._steps())


class AttentionData:
    """Captured attention rows of one TEMPO sequence, indexed by the sequence state.

    Args:
        state: The final :class:`~tempo_lens.SequenceState` (``trace.to_state()``).
        rows: ``step -> [layer, head, q, n_keys(step)]`` arrays; ``n_keys(step)`` is the
            sequence length after the step was appended (1 + its last query index).
        query_indices: ``step -> physical indices`` of its queries (default: step -1 is the
            prompt, step ``s`` is ``state.set_indices[s]``).
        layers: Model layer ids of axis 0. heads: Model head ids of axis 1.
        texts: Token text per physical index (default ``<id>``).
        trace: The generation's :class:`~tempo_lens.trace.Trace`, if any.
        extra: ``step -> {hook_name: array}`` for extra hooks (spooled: read from disk).
        windows: Sliding window (logical positions) of each layer of axis 0, ``None`` for
            full attention (default: all full). Analyses count a key as visible to a
            query of a local layer only within the window (:meth:`visible`).
    """

    def __init__(
        self,
        *,
        state: SequenceState,
        rows: Mapping[int, np.ndarray],
        layers: Sequence[int],
        heads: Sequence[int],
        query_indices: Mapping[int, list[int]] | None = None,
        texts: Sequence[str] | None = None,
        trace: Trace | None = None,
        extra: Mapping[int, dict[str, np.ndarray]] | None = None,
        windows: Sequence[int | None] | None = None,
    ) -> None:
        self.state = state
        self._rows = rows
        self.layers = [int(x) for x in layers]
        self.windows = list(windows) if windows is not None else [None] * len(self.layers)
        if len(self.windows) != len(self.layers):
            raise ValueError(f"{len(self.windows)} windows for {len(self.layers)} layers")
        self.heads = [int(x) for x in heads]
        self.texts = list(texts) if texts is not None else [f"<{t}>" for t in state.token_ids]
        self.trace = trace
        self._extra = extra
        self.query_map = {
            s: list(query_indices[s])
            if query_indices and s in query_indices
            else self._default_q(s)
            for s in rows
        }

    def _default_q(self, step: int) -> list[int]:
        if step < 0:
            return list(range(self.state.prompt_length))
        return list(self.state.set_indices[step])

    @classmethod
    def from_full(
        cls,
        state: SequenceState,
        pattern: Float[np.ndarray, "layer head query key"] | Float[Tensor, "layer head query key"],
        *,
        layers: Sequence[int] | None = None,
        heads: Sequence[int] | None = None,
        texts: Sequence[str] | None = None,
        include_prompt: bool = True,
    ) -> AttentionData:
        """Split a full ``[layer, head, n, n]`` pattern into per-step rows.

        The pattern is e.g. ``run_with_cache`` on the final state; the rows are those a
        capture during generation would have recorded.
        """
        if isinstance(pattern, Tensor):
            pattern = pattern.detach().cpu().float().numpy()
        n = len(state)
        if pattern.shape[-2:] != (n, n):
            raise ValueError(f"pattern must end in [{n}, {n}], got {pattern.shape}")
        steps = ([-1] if include_prompt else []) + list(range(state.n_steps))
        rows, qmap = {}, {}
        for s in steps:
            q = list(range(state.prompt_length)) if s < 0 else state.set_indices[s]
            rows[s] = np.ascontiguousarray(pattern[:, :, q, : q[-1] + 1])
            qmap[s] = q
        return cls(
            state=state,
            rows=rows,
            query_indices=qmap,
            layers=layers if layers is not None else range(pattern.shape[0]),
            heads=heads if heads is not None else range(pattern.shape[1]),
            texts=texts,
        )

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.state)

    @property
    def steps(self) -> list[int]:
        """Captured steps in order (``-1`` = the prompt forward)."""
        return sorted(self.query_map)

    def query_indices(self, step: int) -> list[int]:
        """Physical indices of the queries (rows) of a captured step."""
        return self.query_map[step]

    def rows(self, step: int) -> Float[np.ndarray, "layer head query key"]:
        """``[layer, head, q, n_keys]`` rows of one step as float32."""
        return self.stored_rows(step).astype(np.float32, copy=False)

    def visible(self, query_indices: Sequence[int], n_keys: int) -> np.ndarray:
        """``[layer, q, n_keys]`` bool: which keys each query may see in each layer.

        The final state's visibility (isolation, pruning), restricted to each local
        layer's window by logical distance.
        """
        by_window = {
            w: self.state.visibility(query_indices, window=w).numpy()[:, :n_keys]
            for w in set(self.windows)
        }
        return np.stack([by_window[w] for w in self.windows])

    def stored_rows(self, step: int) -> np.ndarray:
        """The rows of one step in their stored dtype (float16 or float32)."""
        if step not in self.query_map:
            raise KeyError(f"step {step} was not captured (captured: {self.steps})")
        return np.asarray(self._rows[step])

    def extra(self, step: int) -> dict[str, np.ndarray]:
        """The extra hook tensors captured at a step."""
        if isinstance(self._rows, _Spool):
            d = self._rows.load(step)
            return {k[5:]: v for k, v in d.items() if k.startswith("hook:")}
        return dict((self._extra or {}).get(step, {}))

    def _pick(self, value: int | None, ids: list[int], what: str) -> Any:
        if value is None:
            return slice(None)
        if value not in ids:
            raise ValueError(f"{what} {value} was not captured (captured: {ids})")
        return [ids.index(value)]

    def select(
        self,
        x: Float[np.ndarray, "layer head *rest"],
        layer: int | None,
        head: int | None,
        agg: str,
    ) -> np.ndarray:
        """Pick a layer/head (model ids) or aggregate (``mean``/``max``/``sum``) over them."""
        li, hi = self._pick(layer, self.layers, "layer"), self._pick(head, self.heads, "head")
        return _reduce(x[li][:, hi], (0, 1), agg)

    def step_matrix(
        self, step: int, layer: int | None = None, head: int | None = None, agg: str = "mean"
    ) -> Float[np.ndarray, "query key"]:
        """``[q, n_keys]`` attention of a step's queries: one layer/head, or aggregated."""
        return self.select(self.rows(step), layer, head, agg)

    def full_tensor(
        self, layers: Sequence[int] | None = None, start: int = 0
    ) -> Float[np.ndarray, "layer head query key"]:
        """``[layer, head, n - start, n - start]``: captured rows placed at their physical index.

        Rows of uncaptured queries and keys after a query's step are 0. The result is
        float32 and holds ``len(layers) * heads * (n - start)**2`` values, so a long run
        densified over every layer is large (30 layers x 9 heads x 1000**2 tokens is 1 GB):
        ask for the layers and the tail you need.

        Args:
            layers: Model layer ids to densify (default: every captured layer), in order.
            start: First physical index kept on both axes (queries and keys ``start:``).

        Raises:
            ValueError: A layer was not captured, or ``start`` is not in ``[0, n]``.
        """
        n = len(self)
        if not 0 <= start <= n:
            raise ValueError(f"start must be in [0, {n}], got {start}")
        ids = self.layers if layers is None else [int(x) for x in layers]
        missing = [x for x in ids if x not in self.layers]
        if missing:
            raise ValueError(f"layers {missing} were not captured (captured: {self.layers})")
        li = [self.layers.index(x) for x in ids]
        m = n - start
        out = np.zeros((len(li), len(self.heads), m, m), dtype=np.float32)
        for s in self.steps:
            kept = [(k, i - start) for k, i in enumerate(self.query_map[s]) if i >= start]
            if not kept:
                continue
            rows, q = zip(*kept, strict=True)
            r = self.stored_rows(s)[li][:, :, list(rows), start:]
            out[:, :, list(q), : r.shape[-1]] = r
        return out

    def full_matrix(
        self, layer: int | None = None, head: int | None = None, agg: str = "mean"
    ) -> Float[np.ndarray, "query key"]:
        """``[n, n]`` query-by-key matrix (lower-triangular), one layer/head or aggregated.

        Equal to ``select(full_tensor(), layer, head, agg)`` but reduced step by step, so
        it never holds the ``[layer, head, n, n]`` tensor (memory ``n**2`` floats plus one
        step's rows).

        Raises:
            ValueError: Unknown ``agg``, or a layer/head that was not captured.
        """
        n = len(self)
        out = np.zeros((n, n), dtype=np.float32)
        for s in self.steps:
            m = self.select(self.rows(s), layer, head, agg)
            out[self.query_map[s], : m.shape[-1]] = m
        return out
