"""Generation configuration: one frozen, validated, JSON-round-trippable dataclass.

Examples:
    >>> from tempo_lens.pruning import PruningConfig, RelativeRule
    >>> cfg = TempoConfig(selection_threshold=0.1, max_steps=20,
    ...                   prune=PruningConfig(rule=RelativeRule(ratio=0.5)))
    >>> TempoConfig.from_dict(cfg.to_dict()) == cfg
    True
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from tempo_lens._numbers import BoolLike, IntLike, LayersLike, RealLike, normalise_fields
from tempo_lens.isolation import normalise_spec
from tempo_lens.positions import PositionScheme
from tempo_lens.pruning import (
    AbsoluteRule,
    ProbabilityRatioRule,
    PruningConfig,
    RelativeRule,
)
from tempo_lens.schedules import ThresholdSchedule, check_threshold

__all__ = ["READOUTS", "TempoConfig"]

Readout = Literal["last", "top", "mixture"]

# ``positions`` holds a PositionScheme after construction; at run time (annotation
# checks in the tests) it also admits the string form that is coerced.
if TYPE_CHECKING:
    PositionsLike = PositionScheme
else:
    PositionsLike = PositionScheme | str
READOUTS: tuple[str, ...] = ("last", "top", "mixture")


@dataclass(frozen=True, kw_only=True)
class TempoConfig:
    """How TEMPO generates.

    Attributes:
        selection_threshold: ``tau``: every token with ``p >= tau`` joins the step's set
            (inclusive; top-1 fallback when none does). In ``(0, 1]``. With a schedule this
            is ``tau0``.
        max_steps: Maximum number of steps (parallel sets), ``>= 1``.
        min_steps: EOS is suppressed before this many steps.
        max_parallel: Cap on the members of one set (default 8; ``None`` = no cap, written
            ``0`` on the command line).
        isolate: Members of a set cannot attend to each other (else: earlier siblings).
        isolate_layers: Partial isolation: with ``isolate``, siblings are isolated only at
            these layers and see earlier siblings elsewhere: ``all`` (default), ``none``,
            ``early`` / ``middle`` / ``late`` (thirds of the layers) or indices ``0,3,5``.
        isolate_heads: Partial isolation by query head: with ``isolate``, only these
            heads (``all`` default, ``none``, or indices ``0,2``) of the isolated layers
            hide siblings.
        positions: Logical position scheme (shared / member offset / distinct): a
            :class:`~tempo_lens.positions.PositionScheme`, or its kind as a string
            (``"shared"`` or ``"distinct"``, coerced at construction).
        readout: Which distribution the next step selects from after a set: ``"last"``
            (logits of the last member appended — the original TEMPO), ``"top"`` (the most
            probable surviving member), ``"mixture"`` (selection-probability-weighted mixture
            of the surviving members' next-token distributions; the default, because it is
            the one-step marginal over the alternatives and does not depend on the order in
            which members were appended).
        schedule: Threshold schedule; ``None`` keeps ``selection_threshold`` constant.
        prune: Retroactive pruning; ``None`` disables it.
        prefilter: Pre-append pruning of candidates by probability ratio; ``None`` disables.
        stop_at_eos: Stop when the top member of a step is the EOS token (EOS is then not
            appended; with ``False`` it is appended as the top member). EOS is never
            appended as a non-top member, whatever ``stop_at_eos``, ``min_steps`` and
            ``max_parallel`` are (it is dropped and recorded in ``StepRecord.prefiltered``).
        use_kv_cache: Incremental forwards with the TransformerLens KV cache (identical
            traces either way; the cache is faster).
        fast_weights: Store the weights in the layouts the forward reads, so no per-forward
            copies are made (bit-identical logits, ~4x faster decode steps on CPU; see
            :mod:`tempo_lens.backends.fast`). ``generate`` switches the model's layout persistently
            to what this flag says (``False`` restores the stock layout).
    """

    selection_threshold: RealLike = 0.1
    max_steps: IntLike = 20
    min_steps: IntLike = 0
    max_parallel: IntLike | None = 8
    isolate: BoolLike = True
    isolate_layers: LayersLike | None = None
    isolate_heads: LayersLike | None = None
    positions: PositionsLike = field(default_factory=PositionScheme)
    readout: Readout = "mixture"
    schedule: ThresholdSchedule | None = None
    prune: PruningConfig | None = None
    prefilter: ProbabilityRatioRule | None = None
    stop_at_eos: BoolLike = True
    use_kv_cache: BoolLike = True
    fast_weights: BoolLike = True

    def __post_init__(self) -> None:
        pos: Any = self.positions
        if isinstance(pos, str):
            if pos not in ("shared", "distinct"):
                raise ValueError(
                    f"positions must be a PositionScheme, 'shared' or 'distinct', got {pos!r}"
                )
            object.__setattr__(self, "positions", PositionScheme(kind=pos))  # type: ignore[arg-type]
        elif not isinstance(pos, PositionScheme):
            raise ValueError(f"positions must be a PositionScheme or its kind, got {pos!r}")
        for name, kind in (
            ("schedule", ThresholdSchedule),
            ("prune", PruningConfig),
            ("prefilter", ProbabilityRatioRule),
        ):
            value = getattr(self, name)
            if value is not None and not isinstance(value, kind):
                raise ValueError(f"{name} must be a {kind.__name__} or None, got {value!r}")
        normalise_fields(
            self,
            reals=("selection_threshold",),
            ints=("max_steps", "min_steps", "max_parallel"),
            bools=("isolate", "stop_at_eos", "use_kv_cache", "fast_weights"),
        )
        for name, groups in (("isolate_layers", True), ("isolate_heads", False)):
            spec = normalise_spec(getattr(self, name), name, groups=groups)
            object.__setattr__(self, name, spec)
            if spec is not None and not self.isolate:
                raise ValueError(f"{name}={spec!r} restricts isolation, but isolate=False")
        tau = self.selection_threshold
        check_threshold(tau, "selection_threshold")
        if (
            isinstance(self.max_steps, bool)
            or not isinstance(self.max_steps, int)
            or self.max_steps < 1
        ):
            raise ValueError(f"max_steps must be an int >= 1, got {self.max_steps!r}")
        ms = self.min_steps
        if isinstance(ms, bool) or not isinstance(ms, int) or not 0 <= ms <= self.max_steps:
            raise ValueError(f"min_steps must be an int in [0, max_steps], got {self.min_steps!r}")
        mp = self.max_parallel
        if mp is not None and (isinstance(mp, bool) or not isinstance(mp, int) or mp < 1):
            raise ValueError(f"max_parallel must be an int >= 1 or None, got {mp!r}")
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {self.readout!r}")
        if self.schedule is not None and self.schedule.tau0 != tau:
            raise ValueError(
                f"schedule.tau0={self.schedule.tau0} differs from selection_threshold={tau}"
            )

    def threshold_at(self, step: int) -> float:
        """The threshold used at ``step`` (progress ``t = step / max_steps``)."""
        if self.schedule is None:
            return float(self.selection_threshold)
        return self.schedule.at_step(step, self.max_steps)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (rules carry a ``"type"`` tag).

        Options added later are written only when set (``isolate_layers``,
        ``isolate_heads``, ``prune.mode="hard"``), so traces of the earlier settings keep
        their earlier form; :meth:`from_dict` reads either.
        """
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name in ("isolate_layers", "isolate_heads") and v is None:
                continue
            if dataclasses.is_dataclass(v):
                d = dataclasses.asdict(v)  # type: ignore[arg-type]
                if isinstance(v, PruningConfig):
                    d["rule"] = {"type": type(v.rule).__name__, **dataclasses.asdict(v.rule)}
                    if isinstance(v.layers, tuple):
                        d["layers"] = list(v.layers)
                    if v.mode == "soft":
                        del d["mode"]
                d["type"] = type(v).__name__
                v = d
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TempoConfig:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        kinds: dict[str, type] = {
            "PositionScheme": PositionScheme,
            "ThresholdSchedule": ThresholdSchedule,
            "ProbabilityRatioRule": ProbabilityRatioRule,
            "RelativeRule": RelativeRule,
            "AbsoluteRule": AbsoluteRule,
        }
        for key, value in list(data.items()):
            if isinstance(value, dict) and "type" in value:
                value = dict(value)
                kind = value.pop("type")
                if kind == "PruningConfig":
                    rule = dict(value.pop("rule"))
                    value["rule"] = kinds[rule.pop("type")](**rule)
                    if isinstance(value.get("layers"), list):
                        value["layers"] = tuple(value["layers"])
                    data[key] = PruningConfig(**value)
                else:
                    data[key] = kinds[kind](**value)
        return cls(**data)
