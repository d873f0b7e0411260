"""The TEMPO mechanism as TransformerLens hook points, and what acts through hooks.

* :mod:`~tempo_lens.hooks.attach` — :func:`attach`, :func:`tempo_fwd_hooks`: positions at
  ``hook_rot_q``/``hook_rot_k``, masks at ``hook_attn_scores``;
* :mod:`~tempo_lens.hooks.tempo_hooks` — the :class:`TempoHooks` object behind them, with
  :mod:`~tempo_lens.hooks.rotation` (re-rotation) and :mod:`~tempo_lens.hooks.masks`
  (visibility as an additive bias);
* :mod:`~tempo_lens.hooks.recorder` — the one ``hook_pattern`` recorder (pruning votes,
  capture);
* :mod:`~tempo_lens.hooks.capture` — attention capture during generation;
* :mod:`~tempo_lens.hooks.interventions` — attention bias, head ablation, path patching,
  teacher-forced steps as hook factories.
"""

from tempo_lens.hooks.attach import (
    HookConflictError,
    HookFn,
    StateMismatchError,
    TempoHooks,
    attach,
    tempo_fwd_hooks,
)

__all__ = [
    "HookConflictError",
    "HookFn",
    "StateMismatchError",
    "TempoHooks",
    "attach",
    "tempo_fwd_hooks",
]
