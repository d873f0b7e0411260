"""tempo_lens: TEMPO (Threshold-Enabled Multipath Parallel Output) for TransformerLens.

TEMPO appends every token whose probability passes a threshold to ONE sequence; members of
a parallel set share one logical RoPE position, may be isolated from each other, and can
be pruned retroactively. tempo_lens implements this as hook points on a stock
``HookedTransformer`` so the whole TransformerLens toolbox works on TEMPO sequences.

Importing ``tempo_lens`` imports no model library: the public names below are loaded on
first use (PEP 562 ``__getattr__``), so importing a module of the model-free vocabulary
(``tempo_lens.positions``, ``tempo_lens.state``, ...) never imports TransformerLens.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "AbsoluteRule": "tempo_lens.pruning",
    "attach": "tempo_lens.hooks",
    "AttentionCapture": "tempo_lens.hooks.capture",
    "AttentionData": "tempo_lens.hooks.capture",
    "AttentionRecorder": "tempo_lens.hooks.recorder",
    "beam_search": "tempo_lens.generation.baselines",
    "DEFAULT_MODEL": "tempo_lens.models",
    "disable_fast_path": "tempo_lens.backends.fast",
    "enable_fast_path": "tempo_lens.backends.fast",
    "fast_path_status": "tempo_lens.backends.fast",
    "fast_weights": "tempo_lens.backends.fast",
    "generate": "tempo_lens.generation",
    "generate_batch": "tempo_lens.generation",
    "greedy": "tempo_lens.generation.baselines",
    "HookConflictError": "tempo_lens.hooks",
    "load_model": "tempo_lens.models",
    "logical_positions": "tempo_lens.positions",
    "make_tiny_model": "tempo_lens.models",
    "NotRotaryError": "tempo_lens.backends",
    "PositionScheme": "tempo_lens.positions",
    "ProbabilityRatioRule": "tempo_lens.pruning",
    "PruningConfig": "tempo_lens.pruning",
    "RelativeRule": "tempo_lens.pruning",
    "sample": "tempo_lens.generation.baselines",
    "select": "tempo_lens.selection",
    "Selection": "tempo_lens.selection",
    "SequenceState": "tempo_lens.state",
    "StateMismatchError": "tempo_lens.hooks",
    "StepObserver": "tempo_lens.generation",
    "tempo_fwd_hooks": "tempo_lens.hooks",
    "TempoConfig": "tempo_lens.config",
    "TempoHooks": "tempo_lens.hooks",
    "ThresholdSchedule": "tempo_lens.schedules",
    "TokenInfo": "tempo_lens.state",
    "Trace": "tempo_lens.trace",
    "tree_beam_search": "tempo_lens.generation.trees",
    "tree_speculative": "tempo_lens.generation.trees",
    "TreeBeamResult": "tempo_lens.generation.trees",
    "TreeSpecResult": "tempo_lens.generation.trees",
    "UnsupportedAttentionError": "tempo_lens.backends",
    "verify": "tempo_lens.analysis.verify",
    "VerifyReport": "tempo_lens.analysis.verify",
}
"""Public name -> the module that defines it."""

__all__ = [
    "disable_fast_path",
    "enable_fast_path",
    "fast_path_status",
    "fast_weights",
    "AttentionCapture",
    "AttentionRecorder",
    "AttentionData",
    "AbsoluteRule",
    "ProbabilityRatioRule",
    "PruningConfig",
    "RelativeRule",
    "Selection",
    "StepObserver",
    "TempoConfig",
    "ThresholdSchedule",
    "Trace",
    "beam_search",
    "tree_beam_search",
    "tree_speculative",
    "TreeBeamResult",
    "TreeSpecResult",
    "generate",
    "generate_batch",
    "verify",
    "VerifyReport",
    "greedy",
    "sample",
    "select",
    "DEFAULT_MODEL",
    "NotRotaryError",
    "PositionScheme",
    "SequenceState",
    "HookConflictError",
    "StateMismatchError",
    "TempoHooks",
    "TokenInfo",
    "UnsupportedAttentionError",
    "__version__",
    "attach",
    "load_model",
    "logical_positions",
    "make_tiny_model",
    "tempo_fwd_hooks",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tempo_lens' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # static analysers see the eager imports
    from tempo_lens.backends import NotRotaryError, UnsupportedAttentionError
    from tempo_lens.backends.fast import (
        disable_fast_path,
        enable_fast_path,
        fast_path_status,
        fast_weights,
    )
    from tempo_lens.config import TempoConfig
    from tempo_lens.generation import StepObserver, generate, generate_batch
    from tempo_lens.generation.baselines import beam_search, greedy, sample
    from tempo_lens.generation.trees import (
        TreeBeamResult,
        TreeSpecResult,
        tree_beam_search,
        tree_speculative,
    )
    from tempo_lens.hooks import (
        HookConflictError,
        StateMismatchError,
        TempoHooks,
        attach,
        tempo_fwd_hooks,
    )
    from tempo_lens.hooks.capture import AttentionCapture, AttentionData
    from tempo_lens.hooks.recorder import AttentionRecorder
    from tempo_lens.models import DEFAULT_MODEL, load_model, make_tiny_model
    from tempo_lens.positions import PositionScheme, logical_positions
    from tempo_lens.pruning import AbsoluteRule, ProbabilityRatioRule, PruningConfig, RelativeRule
    from tempo_lens.schedules import ThresholdSchedule
    from tempo_lens.selection import Selection, select
    from tempo_lens.state import SequenceState, TokenInfo
    from tempo_lens.trace import Trace
