"""The :class:`TempoHooks` object: TEMPO's hook functions over one or several states.

The public entry points are in :mod:`tempo_lens.hooks` (:func:`~tempo_lens.hooks.attach`,
:func:`~tempo_lens.hooks.tempo_fwd_hooks`), which re-exports everything here. The
position maths is in :mod:`tempo_lens.hooks.rotation`, the masks in
:mod:`tempo_lens.hooks.masks`; this module checks each forward against the state, memoises
the per-forward work on the states' versions and dispatches per layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from tempo_lens.backends import (
    TempoModel,
    UnsupportedAttentionError,
    hook_functions,
    hook_name,
    layer_of,
    physical_windows_disabled,
)
from tempo_lens.hooks.masks import additive_bias, layer_masks, stale_cache_message
from tempo_lens.hooks.rotation import Rerotation, Tables, column_deltas, physical_columns
from tempo_lens.isolation import LayerIsolation, isolation_plan
from tempo_lens.layout import BatchLayout
from tempo_lens.state import SequenceState

__all__ = ["HookConflictError", "HookFn", "StateMismatchError", "TempoHooks", "TempoModel"]

if TYPE_CHECKING:
    from transformer_lens.hook_points import HookPoint
else:  # not imported at run time, so that importing tempo_lens (and --help) stays light
    HookPoint = Any

HookFn = Callable[[Tensor, HookPoint], Tensor | None]
"""A TransformerLens forward hook: ``(activation, hook_point) -> replacement or None``."""


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
        isolate_layers: Partial isolation: isolate siblings only at these layers
            (``None``/``"all"``, ``"none"``, ``"early"``/``"middle"``/``"late"``, or
            indices; see :mod:`tempo_lens.isolation`). Needs isolated states.
        isolate_heads: Partial isolation: only these query heads isolate (``None`` = all).

    Raises:
        ValueError: A bad layout, a bad isolation spec (naming the value), or partial
            isolation asked for states that are not isolated.

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
        isolate_layers: object = None,
        isolate_heads: object = None,
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
        self.rotation = Rerotation(model)
        self.bridge = self.rotation.bridge
        self.windows = self.rotation.windows
        self.isolation: list[LayerIsolation] | None = None
        """Per layer, which heads isolate siblings (``None``: the states' own flags)."""
        if isolate_layers is not None or isolate_heads is not None:
            if not all(st.isolate for st in self.states):
                raise ValueError(
                    "isolate_layers / isolate_heads restrict isolation, but the sequence "
                    "state is not isolated (isolate=False)"
                )
            cfg = model.cfg
            plan = isolation_plan(
                isolate_layers, isolate_heads, n_layers=cfg.n_layers, n_heads=cfg.n_heads
            )
            self.isolation = None if all(p is True for p in plan) else plan
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
        with physical_windows_disabled(self.model):
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

    def _tables(self, layer: int, start: int, stop: int, x: Tensor) -> Tables | None:
        """Memoised :meth:`Rerotation.tables` for columns ``[start, stop)`` of a layer."""
        group = self.rotation.groups[layer]

        def build() -> Tables | None:
            deltas = self._cached(("deltas",), lambda: column_deltas(self.states, self.layout))
            return self.rotation.tables(group, deltas[:, start:stop], x)

        return self._cached(("rot", group, start, stop, x.device, x.dtype), build)

    def _apply(self, x: Tensor, layer: int, start: int, stop: int) -> Tensor:
        return self.rotation.apply(x, self._tables(layer, start, stop, x))

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
            stale = stale_cache_message(self.states, self.layout, start, str(hook.name))
            if stale is not None:
                raise StateMismatchError(stale)
        if not self.mask:
            return scores
        layer = self._layer(hook)
        window = self.windows[layer]
        iso = None if self.isolation is None else self.isolation[layer]
        views = tuple(sorted(self.views.items()))
        bias, hidden = self._cached(
            ("mask", start, n, views, window, iso, scores.device, scores.dtype),
            lambda: self._build_bias(start, n, window, iso, scores),
        )
        floor = torch.finfo(scores.dtype).min / 2  # -inf, or the dtype minimum some use
        if hidden is not None and bool(((scores <= floor) & hidden).any()):
            raise UnsupportedAttentionError(
                f"{hook.name}: the backend masked keys by physical distance >= {window}, but "
                "TEMPO's sliding window is by logical distance and keeps them — attach the "
                "hooks with tempo_lens.attach() (or TempoHooks.backend_masks_replaced())"
            )
        return scores if bias is None else scores + bias

    def _build_bias(
        self, start: int, n: int, window: int | None, iso: LayerIsolation | None, scores: Tensor
    ) -> tuple[Tensor | None, Tensor | None]:
        """``(bias, hidden)``, ``[rows, 1 or heads, q, n]`` (see :func:`layer_masks`)."""
        cols = physical_columns(self.states, self.layout)
        blocked, hidden = layer_masks(
            self.states,
            cols,
            self.views,
            start,
            n,
            window,
            isolation=iso,
            n_heads=scores.shape[1],
        )
        bias = additive_bias(blocked, scores.dtype, scores.device)
        return bias, (hidden.to(scores.device) if hidden is not None else None)
