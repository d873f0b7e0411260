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
:class:`~tempo_lens.backends.UnsupportedAttentionError` instead of computing silently.

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

from collections.abc import Iterator
from contextlib import contextmanager

from tempo_lens.backends import add_permanent_hooks, hook_functions, remove_hooks
from tempo_lens.hooks.tempo_hooks import (
    HookConflictError,
    HookFn,
    StateMismatchError,
    TempoHooks,
    TempoModel,
    _tempo_owner,
)
from tempo_lens.state import SequenceState

__all__ = [
    "HookConflictError",
    "HookFn",
    "StateMismatchError",
    "TempoHooks",
    "TempoModel",
    "attach",
    "tempo_fwd_hooks",
]


def tempo_fwd_hooks(
    model: TempoModel,
    state: SequenceState,
    *,
    rotate: bool = True,
    mask: bool = True,
    isolate_layers: object = None,
    isolate_heads: object = None,
) -> list[tuple[str, HookFn]]:
    """The TEMPO hooks as a ``fwd_hooks`` list for ``model.run_with_hooks``.

    Arguments as for :func:`attach`.
    """
    hooks = TempoHooks(
        model,
        state,
        rotate=rotate,
        mask=mask,
        isolate_layers=isolate_layers,
        isolate_heads=isolate_heads,
    )
    return hooks.fwd_hooks()


@contextmanager
def attach(
    model: TempoModel,
    state: SequenceState,
    *,
    rotate: bool = True,
    mask: bool = True,
    isolate_layers: object = None,
    isolate_heads: object = None,
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
        isolate_layers: Partial isolation (research question 8.2): siblings are isolated
            only at these layers and see earlier siblings elsewhere. ``None``/``"all"``,
            ``"none"`` (visible mode), ``"early"``/``"middle"``/``"late"`` (thirds of the
            layers), or indices (``"0,3,5"``, a tuple). See :mod:`tempo_lens.isolation`.
        isolate_heads: Partial isolation by query head (``None`` = every head), combined
            with ``isolate_layers``.

    Yields:
        The :class:`TempoHooks` (e.g. for :meth:`TempoHooks.viewing`).

    Raises:
        ValueError: A bad ``isolate_layers`` / ``isolate_heads`` (out of range, unknown
            name), or either given for a state with ``isolate=False``.
        HookConflictError: TEMPO hooks are already registered on ``model`` (a second
            ``attach``, or ``tempo_fwd_hooks`` added with ``add_hook``); a forward inside
            the block that brings a second set (``run_with_hooks(fwd_hooks=
            tempo_fwd_hooks(...))``, ``generate``) raises it too. On exit, if TEMPO hooks
            were removed inside the block (``reset_hooks(including_permanent=True)``,
            ``remove_all_hook_fns(including_permanent=True)``): forwards after the removal
            ran without TEMPO.
    """
    hooks = TempoHooks(
        model,
        state,
        rotate=rotate,
        mask=mask,
        isolate_layers=isolate_layers,
        isolate_heads=isolate_heads,
    )
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
