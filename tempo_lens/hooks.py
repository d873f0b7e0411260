"""The TEMPO mechanism as TransformerLens hook points.

Three interventions on a stock ``HookedTransformer``, nothing else:

=============================================  ==========================================
hook point                                      what the hook does
=============================================  ==========================================
``blocks.{l}.attn.hook_rot_q`` / ``hook_rot_k``  re-rotate q/k by ``logical - physical``
``blocks.{l}.attn.hook_attn_scores``             ``-inf`` where a query may not see a key
=============================================  ==========================================

Sliding-window (local) layers keep keys within ``window`` *logical* positions of the
query (see :mod:`tempo_lens.masks`); :func:`attach` switches the backend's physical
window off for its duration. If a forward arrives with keys masked that the logical
window keeps (hooks attached without :func:`attach`), the mask hook raises
:class:`~tempo_lens._tl.UnsupportedAttentionError` instead of computing silently.

All hooks read one :class:`~tempo_lens.state.SequenceState`. A forward must cover the
state's tokens: either the whole sequence (no KV cache) or its last ``q`` tokens with a KV
cache holding the first ``n - q``. Anything else (wrong length, a state changed under a
stale KV cache) raises :class:`StateMismatchError` instead of silently computing.

Several independent sequences can share one batch (:func:`tempo_lens.generate_batch`):
one state per row and a :class:`~tempo_lens.layout.BatchLayout` mapping columns to each
row's physical indices; positions (``[batch, pos]``) and masks (``[batch, 1, q, k]``) are
then per row.

Per-forward work (cos/sin tables, the mask) is memoised on the states' versions and the
shapes, and shared by all layers; applying a rotation costs two products and a sum per
rotated element (:func:`tempo_lens.rope.apply_rotation`).

Examples:
    >>> from tempo_lens import SequenceState, attach, make_tiny_model
    >>> model = make_tiny_model()
    >>> state = SequenceState.from_sets([1, 2, 3], [[4, 5], [6]], isolate=True)
    >>> with attach(model, state):
    ...     logits, cache = model.run_with_cache(state.tokens_tensor())
    >>> float(cache["pattern", 0][0, :, 4, 3].abs().max())  # sibling attention
    0.0
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.hook_points import HookPoint

from tempo_lens import _bridge
from tempo_lens._tl import (
    UnsupportedAttentionError,
    add_permanent_hooks,
    attention_windows,
    check_rotary,
    hook_functions,
    hook_name,
    layer_of,
    physical_windows_disabled,
    remove_hooks,
    rotary_inv_freq,
)
from tempo_lens.layout import PAD, BatchLayout
from tempo_lens.rope import apply_rotation, rotation_tables
from tempo_lens.state import SequenceState

__all__ = [
    "HookConflictError",
    "StateMismatchError",
    "TempoHooks",
    "attach",
    "tempo_fwd_hooks",
]

HookFn = Callable[[Tensor, HookPoint], Tensor | None]
TempoModel = HookedTransformer | Any
"""A rotary ``HookedTransformer``, or a ``TransformerBridge`` around a rotary HF model."""


class StateMismatchError(RuntimeError):
    """A forward pass does not match the sequence state the hooks were given."""


class HookConflictError(RuntimeError):
    """TEMPO hooks are active twice on one model, or were removed while attached."""


def _tempo_owner(fn: Any) -> TempoHooks | None:
    owner = getattr(fn, "__self__", None)
    return owner if isinstance(owner, TempoHooks) else None


def _check_single(hook: HookPoint) -> None:
    """Raise if more than one set of TEMPO hooks is registered on ``hook``.

    Two sets would re-rotate q/k twice (or mask twice): ``attach`` nested in ``attach``,
    ``run_with_hooks(fwd_hooks=tempo_fwd_hooks(...))`` or ``generate`` inside ``attach``.
    """
    owners = [fn for fn in hook_functions(hook) if _tempo_owner(fn) is not None]
    if len(owners) > 1:
        raise HookConflictError(
            f"{hook.name}: {len(owners)} sets of TEMPO hooks are active on this model (attach "
            "inside attach, tempo_fwd_hooks or generate inside attach?); the re-rotation would "
            "be applied twice. Use one attach() per model at a time."
        )


class TempoHooks:
    """Hook functions implementing shared positions, isolation and pruning.

    Args:
        model: A rotary ``HookedTransformer``.
        state: The sequence state all hooks read, or one state per batch row (then
            ``layout`` says which token of which row sits in each column).
        rotate: Apply the position hooks (``False`` leaves RoPE at physical positions —
            an ablation, used by tests to show the position oracle fails without it).
        mask: Apply the isolation/pruning mask hook (``False`` for the same ablation).
        layout: The :class:`~tempo_lens.layout.BatchLayout` of a batch of states
            (required for several states). Forwards must then pass
            ``attention_mask=layout.attention_mask(...)`` so that TransformerLens rotates
            each real token to its physical index in its row.

    Attributes:
        states: The sequence states (one per batch row).
        views: Per row, ``(view_step, view_from)`` while :meth:`viewing` is active: queries
            at physical index ``>= view_from`` see the sequence as of at least
            ``view_step`` (the readout forward after a pruning event).
    """

    def __init__(
        self,
        model: TempoModel,
        state: SequenceState | Sequence[SequenceState],
        *,
        rotate: bool = True,
        mask: bool = True,
        layout: BatchLayout | None = None,
    ) -> None:
        self.model = model
        self.states = [state] if isinstance(state, SequenceState) else list(state)
        if layout is None and len(self.states) != 1:
            raise ValueError(f"{len(self.states)} states need a BatchLayout")
        if layout is not None and layout.n_rows != len(self.states):
            raise ValueError(f"layout has {layout.n_rows} rows for {len(self.states)} states")
        self.layout = layout
        self.rotate = rotate
        self.mask = mask
        self.views: dict[int, tuple[int, int]] = {}
        self.bridge = _bridge.is_bridge(model)
        if self.bridge:  # TransformerBridge: keys are cached after hook_rot_k (rotated)
            _bridge.check_bridge(model)
            freqs = _bridge.rotary_inv_freqs(model)
            self.rotary_dim, self.adjacent_pairs = _bridge.rotary_layout(model)
            self.windows = _bridge.attention_windows(model)
        else:  # HookedTransformer: hook_rot_k sees every key, re-rotated from position 0
            check_rotary(model)
            freqs = [rotary_inv_freq(model, layer) for layer in range(model.cfg.n_layers)]
            self.rotary_dim = int(model.cfg.rotary_dim or model.cfg.d_head)
            self.adjacent_pairs = bool(model.cfg.rotary_adjacent_pairs)
            self.windows = attention_windows(model)
        # Layers whose RoPE frequencies are identical share one set of tables.
        self._freq_group: list[int] = []
        self._inv_freqs: list[Tensor] = []
        for f in freqs:
            for g, known in enumerate(self._inv_freqs):
                if torch.equal(known, f):
                    self._freq_group.append(g)
                    break
            else:
                self._freq_group.append(len(self._inv_freqs))
                self._inv_freqs.append(f)
        self._memo: dict[tuple[Any, ...], Any] = {}
        self._memo_version: tuple[int, ...] = ()
        self._single: dict[int, tuple[int, int]] = {}  # hook point -> hook list checked

    @property
    def state(self) -> SequenceState:
        """The sequence state (single-sequence hooks)."""
        if len(self.states) != 1:
            raise AttributeError("batched hooks have several states: use .states")
        return self.states[0]

    # ------------------------------------------------------------------ public
    def fwd_hooks(self) -> list[tuple[str, HookFn]]:
        """``(hook_name, hook_fn)`` pairs for ``model.hooks`` / ``run_with_hooks``."""
        hooks: list[tuple[str, HookFn]] = []
        for layer in range(self.model.cfg.n_layers):
            if self.rotate:
                hooks.append((hook_name(layer, "rot_q"), self._hook_rot_q))
                hooks.append((hook_name(layer, "rot_k"), self._hook_rot_k))
            hooks.append((hook_name(layer, "attn_scores"), self._hook_scores))
        return hooks

    @contextmanager
    def backend_masks_replaced(self) -> Iterator[None]:
        """Switch the backend's physical sliding-window masks off within the block.

        Only when :attr:`mask` is on; the mask hook then applies the logical window.
        """
        if not self.mask:
            yield
            return
        off = _bridge.physical_windows_disabled if self.bridge else physical_windows_disabled
        with off(self.model):
            yield

    @contextmanager
    def viewing(
        self, step: int, from_index: int = 0, *, rows: Mapping[int, tuple[int, int]] | None = None
    ) -> Iterator[None]:
        """Let later queries see the sequence as of at least ``step`` within the block.

        Queries at physical index ``>= from_index`` are affected, earlier ones are not.

        Args:
            step: The viewing step (every row, unless ``rows`` is given).
            from_index: First physical index it applies to.
            rows: Per batch row ``(step, from_index)``; rows not named are unaffected.
        """
        old = self.views
        self.views = (
            dict(rows)
            if rows is not None
            else dict.fromkeys(range(len(self.states)), (step, from_index))
        )
        try:
            yield
        finally:
            self.views = old

    # ------------------------------------------------------------------ helpers
    def _check_single(self, hook: HookPoint) -> None:
        """:func:`_check_single`, re-run only when the hook point's hook list changed."""
        hooks = getattr(hook, "fwd_hooks", None)
        key = (id(hooks), len(hooks) if hooks is not None else 0)
        if self._single.get(id(hook)) != key:
            _check_single(hook)
            self._single[id(hook)] = key

    def _cached(self, key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
        version = tuple(s.version for s in self.states)
        if self.layout is not None:
            version += (self.layout.version,)
        if self._memo_version != version:
            self._memo.clear()
            self._memo_version = version
        if key not in self._memo:
            self._memo[key] = build()
        return self._memo[key]

    def _layer(self, hook: HookPoint) -> int:
        layer = layer_of(hook.name or "")
        if layer is None:
            raise StateMismatchError(f"TEMPO hook attached to {hook.name!r}, not a block's hook")
        return layer

    def _n_keys(self) -> int:
        return self.layout.n_columns if self.layout is not None else len(self.states[0])

    def _columns(self) -> Tensor:
        """``[rows, pos]`` physical index per column (``PAD`` at pad slots)."""
        if self.layout is not None:
            return self.layout.tensor()
        return torch.arange(len(self.states[0]))[None]

    def _deltas(self) -> Tensor:
        """``[rows, pos]`` float64 ``logical - physical`` per column (0 at pad slots)."""

        def build() -> Tensor:
            if self.layout is None:
                return self.states[0].position_deltas()[None]
            cols = self._columns()
            out = torch.zeros(cols.shape, dtype=torch.float64)
            for r, st in enumerate(self.states):
                real = cols[r] != PAD
                out[r, real] = st.position_deltas()[cols[r, real]]
            return out

        return self._cached(("deltas",), build)

    def _tables(
        self, layer: int, start: int, stop: int, x: Tensor
    ) -> tuple[int, Tensor, Tensor] | None:
        """``(first, cos, signed_sin)`` for columns ``[start, stop)``; None if all Δ = 0.

        ``first`` is the offset (within the slice) of the first column with a non-zero Δ in
        any row: columns before it need no rotation.
        """
        group = self._freq_group[layer]

        def build() -> tuple[int, Tensor, Tensor] | None:
            delta = self._deltas()[:, start:stop]
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

        return self._cached(("rot", group, start, stop, x.device, x.dtype), build)

    def _apply(self, x: Tensor, layer: int, start: int, stop: int) -> Tensor:
        tables = self._tables(layer, start, stop, x)
        if tables is None:
            return x
        first, cos, sin = tables
        if first == 0:
            return apply_rotation(x, cos, sin, adjacent_pairs=self.adjacent_pairs)
        rotated = apply_rotation(x[:, first:], cos, sin, adjacent_pairs=self.adjacent_pairs)
        return torch.cat([x[:, :first], rotated], dim=1)

    def _check(self, x: Tensor, n_keys: int, what: str) -> int:
        n = self._n_keys()
        if n_keys != n:
            raise StateMismatchError(
                f"{what}: the forward has {n_keys} key positions but the sequence state has {n} "
                "tokens — run the model on the state's tokens (state.tokens_tensor()), or on its "
                "last tokens with a KV cache holding the rest"
            )
        if self.layout is not None and x.shape[0] != self.layout.n_rows:
            raise StateMismatchError(
                f"{what}: batch of {x.shape[0]} rows but the layout has {self.layout.n_rows}"
            )
        return n

    # ------------------------------------------------------------------ hooks
    def _hook_rot_q(self, q: Tensor, hook: HookPoint) -> Tensor:
        self._check_single(hook)
        n = self._n_keys()
        q_len = q.shape[1]
        if q_len > n:
            raise StateMismatchError(
                f"{hook.name}: {q_len} query positions but the sequence state has {n} tokens"
            )
        return self._apply(q, self._layer(hook), n - q_len, n)

    def _hook_rot_k(self, k: Tensor, hook: HookPoint) -> Tensor:
        self._check_single(hook)
        if self.bridge:  # only the new keys; the cache holds the earlier ones, rotated
            return self._hook_rot_q(k, hook)
        n = self._check(k, k.shape[1], str(hook.name))
        return self._apply(k, self._layer(hook), 0, n)

    def _hook_scores(self, scores: Tensor, hook: HookPoint) -> Tensor:
        self._check_single(hook)
        q_len, k_len = scores.shape[-2], scores.shape[-1]
        n = self._check(scores, k_len, str(hook.name))
        start = n - q_len
        if start > 0:
            self._check_stale(start, str(hook.name))
        if not self.mask:
            return scores
        window = self.windows[self._layer(hook)]
        views = tuple(sorted(self.views.items()))
        bias, hidden = self._cached(
            ("mask", start, n, views, window, scores.device, scores.dtype),
            lambda: self._build_bias(start, n, window, scores),
        )
        floor = torch.finfo(scores.dtype).min / 2  # -inf, or the dtype minimum some use
        if hidden is not None and bool(((scores <= floor) & hidden).any()):
            raise UnsupportedAttentionError(
                f"{hook.name}: the backend masked keys by physical distance >= {window}, but "
                "TEMPO's sliding window is by logical distance and keeps them — attach the "
                "hooks with tempo_lens.attach() (or TempoHooks.backend_masks_replaced())"
            )
        if bias is None:
            return scores
        # adding 0 / -inf is exact and several times faster than a broadcast masked_fill
        return scores + bias

    def _build_bias(
        self, start: int, n: int, window: int | None, scores: Tensor
    ) -> tuple[Tensor | None, Tensor | None]:
        """``(bias, hidden)``, both ``[rows, 1, q, n]``.

        ``bias``: ``0 / -inf`` to add to the scores (``None`` if nothing is masked);
        ``hidden``: for a local layer, the keys the logical window keeps beyond the
        physical one (``None`` if none).
        """
        blocked, hidden = self._build_block(start, n, window)
        bias = None
        if blocked is not None:
            zeros = torch.zeros(blocked.shape, dtype=scores.dtype)
            bias = zeros.masked_fill(blocked, float("-inf")).to(scores.device)
        return bias, (hidden.to(scores.device) if hidden is not None else None)

    def _check_stale(self, start: int, what: str) -> None:
        for r, st in enumerate(self.states):
            stale = st.stale_from
            if stale is None:
                continue
            cached = start if self.layout is None else self.layout.n_real_before(r, start)
            if stale < cached:
                raise StateMismatchError(
                    f"{what}: the state was pruned retroactively (rows from physical index "
                    f"{stale} changed) but the forward reuses {cached} cached positions — "
                    "rebuild the KV cache with a full forward, then call state.clear_stale()"
                )

    def _build_block(
        self, start: int, n: int, window: int | None
    ) -> tuple[Tensor | None, Tensor | None]:
        """``(blocked, hidden)`` key masks over columns, each ``[rows, 1, q, n]``.

        ``blocked``: True where a query column may not see a key column; ``hidden``: for a
        local layer, where the logical window keeps a key at column distance ``>= window``
        (each ``None`` when all False).
        """
        cols = self._columns()
        q_cols, k_cols = torch.arange(start, n)[:, None], torch.arange(n)[None, :]
        causal = k_cols <= q_cols
        shape = (cols.shape[0], 1, n - start, n)
        blocked = torch.zeros(shape, dtype=torch.bool)
        kept = torch.zeros(shape, dtype=torch.bool)
        for r, st in enumerate(self.states):
            q_phys, k_phys = cols[r, start:n], cols[r, :n]
            real_q, real_k = q_phys != PAD, k_phys != PAD
            q = q_phys[real_q]
            allowed = st.visibility(q, window=window)
            view = self.views.get(r)
            if view is not None:
                viewed = q >= view[1]
                allowed[viewed] = st.visibility(q[viewed], view_step=view[0], window=window)
            by_col = allowed[:, k_phys.clamp(min=0)] & real_k[None, :]
            blocked[r, 0, real_q] = causal[real_q] & ~by_col
            blocked[r, 0, ~real_q] = causal[~real_q] & ~real_k[None, :]
            kept[r, 0, real_q] = by_col
        hidden = None
        if window is not None:
            beyond = kept & (k_cols <= q_cols - window)
            hidden = beyond if bool(beyond.any()) else None
        return (blocked if bool(blocked.any()) else None), hidden


def tempo_fwd_hooks(
    model: TempoModel, state: SequenceState, *, rotate: bool = True, mask: bool = True
) -> list[tuple[str, HookFn]]:
    """The TEMPO hooks as a ``fwd_hooks`` list for ``model.run_with_hooks``."""
    return TempoHooks(model, state, rotate=rotate, mask=mask).fwd_hooks()


@contextmanager
def attach(
    model: TempoModel,
    state: SequenceState,
    *,
    rotate: bool = True,
    mask: bool = True,
) -> Iterator[TempoHooks]:
    """Attach the TEMPO hooks to ``model`` for the duration of the block.

    Inside the block every TransformerLens tool (``run_with_cache``, ``run_with_hooks``,
    ``ActivationCache`` methods, ``transformer_lens.patching``, user hooks) runs on the
    TEMPO sequence. Hooks added inside the block see re-rotated q/k and masked scores.

    The hooks are registered as TransformerLens *permanent* hooks for the duration of the
    block, so ``model.reset_hooks()`` (which keeps permanent hooks) inside the block does
    not remove them; they are removed when the block exits.

    Args:
        model: A rotary ``HookedTransformer``.
        state: The sequence state.
        rotate: Apply the position hooks.
        mask: Apply the isolation/pruning mask hook.

    Yields:
        The :class:`TempoHooks` (e.g. for :meth:`TempoHooks.viewing`).

    Raises:
        HookConflictError: TEMPO hooks are already registered on ``model`` (a second
            ``attach``, or ``tempo_fwd_hooks`` added with ``add_hook``); a forward inside
            the block that brings a second set (``run_with_hooks(fwd_hooks=
            tempo_fwd_hooks(...))``, ``generate``) raises it too. On exit, if TEMPO hooks
            were removed inside the block (``reset_hooks(including_permanent=True)``,
            ``remove_all_hook_fns(including_permanent=True)``): forwards after the removal
            ran without TEMPO.
    """
    hooks = TempoHooks(model, state, rotate=rotate, mask=mask)
    for name, hp in model.hook_dict.items():
        if any(_tempo_owner(fn) is not None for fn in hook_functions(hp)):
            raise HookConflictError(
                f"{name}: TEMPO hooks are already attached to this model; attach() cannot be "
                "nested (the re-rotation would be applied twice)"
            )
    ok = False
    with hooks.backend_masks_replaced():
        added = add_permanent_hooks(model, hooks.fwd_hooks())
        try:
            yield hooks
            ok = True
        finally:
            missing = remove_hooks(added)
    if ok and missing:
        raise HookConflictError(
            f"{missing} of {len(added)} TEMPO hooks were removed while attach() was open "
            "(reset_hooks(including_permanent=True) or remove_all_hook_fns?): forwards after "
            "the removal ran without TEMPO"
        )
