"""tempo_lens: TEMPO (Threshold-Enabled Multipath Parallel Output) for TransformerLens.

TEMPO appends every token whose probability passes a threshold to ONE sequence; members of
a parallel set share one logical RoPE position, may be isolated from each other, and can
be pruned retroactively. tempo_lens implements this as hook points on a stock
``HookedTransformer`` so the whole TransformerLens toolbox works on TEMPO sequences.
"""

from tempo_lens._tl import NotRotaryError, UnsupportedAttentionError
from tempo_lens.baselines import beam_search, greedy, sample
from tempo_lens.capture import AttentionCapture, AttentionData
from tempo_lens.config import TempoConfig
from tempo_lens.fast import disable_fast_path, enable_fast_path, fast_path_status, fast_weights
from tempo_lens.generation import StepObserver, generate, generate_batch
from tempo_lens.hooks import (
    HookConflictError,
    StateMismatchError,
    TempoHooks,
    attach,
    tempo_fwd_hooks,
)
from tempo_lens.models import DEFAULT_MODEL, load_model, make_tiny_model
from tempo_lens.positions import PositionScheme, logical_positions
from tempo_lens.pruning import (
    AbsoluteRule,
    ProbabilityRatioRule,
    PruningConfig,
    RelativeRule,
)
from tempo_lens.recorder import AttentionRecorder
from tempo_lens.schedules import ThresholdSchedule
from tempo_lens.selection import Selection, select
from tempo_lens.state import SequenceState, TokenInfo
from tempo_lens.trace import Trace

__version__ = "0.1.0"

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
    "generate",
    "generate_batch",
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
