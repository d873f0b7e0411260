"""Pieces shared by the experiments.

Default prompts, the generation settings, the per-run metrics of a generation, and number
formatting.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, overload

from tempo_lens.analysis.quality import clean_text_nll, trace_diversity
from tempo_lens.analysis.stats import repetition_score
from tempo_lens.config import Readout, TempoConfig
from tempo_lens.pruning import PruningConfig, parse_rule
from tempo_lens.runner import RunConfig, Unit, encode

if TYPE_CHECKING:
    from tempo_lens.hooks.capture import AttentionData
    from tempo_lens.trace import Trace

__all__ = [
    "PROMPTS",
    "GenerationConfig",
    "ReplayConfig",
    "StatsConfig",
    "UnprunedConfig",
    "fmt",
    "fmt_ci",
    "fmt_estimate",
    "generate_units",
    "run_metrics",
]

PROMPTS = (  # default prompts of the experiments (each takes the first few)
    "The cat sat on the",
    "Once upon a time, there was a",
    "The capital of France is",
    "To make a cup of tea, first",
    "The best way to learn a language is",
    "In the morning, the old man",
)


T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class StatsConfig(RunConfig):
    """The run settings plus the fewest prompts an experiment's summary judges on.

    Attributes:
        min_prompts: Fewest prompts before a trend or difference is claimed (fewer:
            insufficient).
    """

    min_prompts: int = 10

    def __post_init__(self) -> None:
        if self.min_prompts < 1:
            raise ValueError(f"min_prompts must be >= 1, got {self.min_prompts}")


@dataclass(frozen=True, kw_only=True)
class GenerationConfig(StatsConfig):
    """TEMPO generation settings shared by the experiments.

    Attributes:
        selection_threshold: tau in (0, 1]: every token with p >= tau joins the set.
        max_steps: Steps per generation (>= 1).
        max_parallel: Cap on members per set (0 = no cap).
        readout: Next-step distribution after a set: last | top | mixture.
        prune: Retroactive pruning: none | relative:R | absolute:A.
    """

    selection_threshold: float = 0.1
    max_steps: int = 16
    max_parallel: int = 8
    readout: Readout = "mixture"
    prune: str = "none"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_parallel < 0:
            raise ValueError(f"max_parallel must be >= 0, got {self.max_parallel}")
        self.tempo_config()  # validates tau, steps, readout, prune

    def tempo_config(self, **overrides: Any) -> TempoConfig:
        """The :class:`TempoConfig` of these settings (``overrides`` win)."""
        rule = parse_rule(self.prune)
        kw: dict[str, Any] = {
            "selection_threshold": self.selection_threshold,
            "max_steps": self.max_steps,
            "max_parallel": self.max_parallel or None,
            "readout": self.readout,
            "prune": None if rule is None else PruningConfig(rule=rule),
        }
        kw.update(overrides)
        return TempoConfig(**kw)


@dataclass(frozen=True, kw_only=True)
class UnprunedConfig(GenerationConfig):
    """Generation settings of an experiment that replays its trace teacher-forced.

    A pruned trace cannot be replayed token for token (:class:`~tempo_lens.analysis.
    teacher_forced.Replay`), so these experiments generate without pruning and refuse a
    ``prune`` other than ``none`` instead of ignoring it.
    """

    UNPRUNED_BECAUSE: ClassVar[str] = (
        "this experiment replays its trace teacher-forced, which needs it unpruned"
    )
    """Why ``prune`` must be none (the error's words; a subclass may state its own reason)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if parse_rule(self.prune) is not None:
            raise ValueError(f"prune must be none: {self.UNPRUNED_BECAUSE} (got {self.prune!r})")


@dataclass(frozen=True, kw_only=True)
class ReplayConfig(UnprunedConfig):
    """:class:`UnprunedConfig` of an experiment that batches interventions on the replay.

    Attributes:
        max_rows: Most interventions per batched forward (each is one batch row: a copy of
            the sequence through the layers after the intervened one). A memory budget
            only: the results do not depend on it, and a resume may change it.
    """

    max_rows: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {self.max_rows}")

    def row_chunks(self, items: Sequence[T]) -> list[Sequence[T]]:
        """``items`` in consecutive chunks of at most ``max_rows`` (one forward each)."""
        return [items[i : i + self.max_rows] for i in range(0, len(items), self.max_rows)]


@overload
def generate_units(
    model: Any,
    units: Sequence[Unit],
    config_of: Callable[[Unit], TempoConfig],
    *,
    capture: Literal[True],
    hook_names: Sequence[str] | None = None,
) -> list[tuple[Trace, AttentionData]]: ...
@overload
def generate_units(
    model: Any,
    units: Sequence[Unit],
    config_of: Callable[[Unit], TempoConfig],
    *,
    capture: Literal[False] = ...,
    hook_names: None = None,
) -> list[tuple[Trace, None]]: ...
def generate_units(
    model: Any,
    units: Sequence[Unit],
    config_of: Callable[[Unit], TempoConfig],
    *,
    capture: bool = False,
    hook_names: Sequence[str] | None = None,
) -> list[tuple[Trace, AttentionData]] | list[tuple[Trace, None]]:
    """Each unit's TEMPO generation: one :func:`~tempo_lens.generate_batch` per distinct config.

    Every row equals :func:`~tempo_lens.generate` of its prompt alone (tokens, indices and
    decisions exactly, probabilities to float rounding, ~1e-7), so an experiment's
    ``run_unit`` is its ``run_batch`` of one unit.

    Args:
        model: The model.
        units: The units (their prompts are encoded with :func:`~tempo_lens.runner.encode`).
        config_of: The :class:`TempoConfig` of a unit.
        capture: Capture each row's attention (an :class:`~tempo_lens.AttentionCapture` per
            row).
        hook_names: With ``capture``, the hooks each capture records besides the
            patterns (``AttentionCapture(hook_names=...)``).

    Returns:
        ``(trace, attention data or None)`` per unit, in order.
    """
    from tempo_lens.generation import generate_batch
    from tempo_lens.hooks.capture import AttentionCapture

    prompts = [encode(model, u.prompt) for u in units]
    configs = [config_of(u) for u in units]
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(configs):
        groups.setdefault(json.dumps(c.to_dict(), sort_keys=True), []).append(i)
    out: dict[int, tuple[Trace, AttentionData | None]] = {}
    for rows in groups.values():
        caps = [[AttentionCapture(hook_names=hook_names or ())] for _ in rows] if capture else None
        traces = generate_batch(model, [prompts[i] for i in rows], configs[rows[0]], observers=caps)
        for k, (i, trace) in enumerate(zip(rows, traces, strict=True)):
            out[i] = (trace, caps[k][0].result(trace) if caps else None)
    return [out[i] for i in range(len(units))]  # type: ignore[return-value]


def run_metrics(model: Any, trace: Any) -> dict[str, Any]:
    """The per-run columns the experiments share, for one generation's trace.

    ``steps, parallel_steps, mean_width, max_width, pruned`` (:meth:`Trace.summary`),
    ``clean_nll, clean_perplexity`` (the clean text under the plain model,
    :func:`~tempo_lens.analysis.quality.clean_text_nll`), the diversity columns of
    :func:`~tempo_lens.analysis.quality.trace_diversity`, ``repetition`` (3-grams of the
    clean ids), ``stop_reason``, ``clean_ids`` (space-separated), ``clean_text``,
    ``bracket_text``.
    """
    summ, q = trace.summary(), clean_text_nll(model, trace)
    return {
        "steps": summ["total_steps"],
        "parallel_steps": summ["parallel_steps"],
        "mean_width": summ["average_parallel_width"],
        "max_width": summ["max_parallel_width"],
        "pruned": summ["pruned"],
        "clean_nll": q.mean_nll,
        "clean_perplexity": q.perplexity,
        **trace_diversity(trace),
        "repetition": repetition_score(trace.clean_ids()),
        "stop_reason": trace.stop_reason,
        "clean_ids": " ".join(map(str, trace.clean_ids())),
        "clean_text": trace.clean_text(),
        "bracket_text": trace.bracket_text(),
    }


def fmt(x: float | None) -> str:
    """``x`` to 3 significant digits; ``nan`` for None / non-finite."""
    return "nan" if x is None or not math.isfinite(x) else f"{x:.3g}"


def fmt_ci(ci: Sequence[float | None]) -> str:
    """``[low, high]`` with :func:`fmt`."""
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def fmt_estimate(e: Any) -> str:
    """``mean [low, high] (n=N, direction)`` of an :class:`~tempo_lens.analysis.Estimate`."""
    return f"{fmt(e.mean)} {fmt_ci(e.ci)} (n={e.n}, {e.direction})"
