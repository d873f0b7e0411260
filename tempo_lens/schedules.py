"""Threshold schedules: how ``tau`` moves from ``tau0`` to ``tau_final`` (pure maths).

Dynamic thresholding lets the selection threshold follow a schedule over *progress*
``t = step / max_steps``, clamped to ``[0, 1]`` (step 0 is ``t = 0``; the last step of a
``max_steps`` run is ``t = (max_steps - 1) / max_steps``). Every kind starts at ``tau0``
(``t = 0``) and ends at ``tau_final`` (``t = 1``); with ``a = tau0`` and ``b = tau_final``:

* ``"constant"``: ``tau(t) = a`` (``tau_final`` must equal ``tau0``);
* ``"linear"``: ``tau(t) = (1 - t)·a + t·b``;
* ``"exponential"`` (geometric interpolation): ``tau(t) = a·(b / a)**t``;
* ``"relu"`` (hinge): flat at ``a`` until ``t = activation``, then linear to ``b`` at
  ``t = 1``: ``tau(t) = a + (b - a)·max(0, t - activation) / (1 - activation)``;
* ``"bezier"``: ``tau(t) = a + (b - a)·B(t)`` where ``B`` is the 1-D cubic Bezier with
  end points 0 and 1 and shape control values ``c1``, ``c2``::

      B(t) = 3(1 - t)²t·c1 + 3(1 - t)t²·c2 + t³

  ``c1`` shapes the start, ``c2`` the end. ``c1 = 1/3, c2 = 2/3`` gives ``B(t) = t``
  (linear); the default ``c1 = 0, c2 = 1`` gives smoothstep ``3t² - 2t³`` (flat at both
  ends, symmetric ease-in-out). ``c1, c2`` are restricted to ``[0, 1]`` so that
  ``B(t) ∈ [0, 1]`` (convex hull) and ``tau`` stays between ``tau0`` and ``tau_final``.

Every kind therefore stays between ``tau0`` and ``tau_final`` (results are clamped to
that interval to absorb float rounding), so a valid schedule always yields
``tau ∈ (0, 1]``.

Examples:
    >>> s = ThresholdSchedule(kind="linear", tau0=0.1, tau_final=0.3)
    >>> round(s.at(0.25), 10)
    0.15
    >>> s.at_step(10, 10)
    0.3
    >>> ThresholdSchedule.parse("bezier:0.2,0.9", 0.1, 0.3).describe()
    'bezier(0.1->0.3, c1=0.2, c2=0.9)'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, cast

from tempo_lens._numbers import RealLike, as_real, normalise_fields

__all__ = ["SCHEDULE_KINDS", "ThresholdSchedule", "check_threshold"]

SCHEDULE_KINDS = ("constant", "linear", "exponential", "relu", "bezier")
"""The schedule kinds accepted by :class:`ThresholdSchedule`."""

ScheduleKind = Literal["constant", "linear", "exponential", "relu", "bezier"]


def check_threshold(value: RealLike, name: str = "threshold") -> None:
    """The one check of a selection threshold: a real number ``tau`` in ``(0, 1]``.

    Used by :class:`~tempo_lens.TempoConfig`, :class:`ThresholdSchedule` and
    :func:`tempo_lens.select`.

    Args:
        value: The threshold.
        name: Its name in the error message.

    Raises:
        ValueError: ``value`` is not a real number in ``(0, 1]`` (booleans are refused;
            NumPy/torch scalars are accepted).
    """
    x = as_real(value)  # NumPy/torch scalars are numbers too
    if not isinstance(x, float) or not 0.0 < x <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")


def _check_unit(name: str, value: float, *, closed_top: bool) -> None:
    ok = 0.0 <= value <= 1.0 if closed_top else 0.0 <= value < 1.0
    if isinstance(value, bool) or not ok:
        interval = "[0, 1]" if closed_top else "[0, 1)"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class ThresholdSchedule:
    """A selection threshold as a function of generation progress.

    Attributes:
        kind: One of ``"constant"``, ``"linear"``, ``"exponential"``, ``"relu"``,
            ``"bezier"`` (formulas in the module docstring).
        tau0: Threshold at ``t = 0``, in ``(0, 1]``.
        tau_final: Threshold at ``t = 1``, in ``(0, 1]``; ``None`` (default) means
            ``tau0`` and is replaced by it at construction.
        activation: ``"relu"`` only: progress in ``[0, 1)`` where the ramp starts.
        c1: ``"bezier"`` only: first shape control value, in ``[0, 1]``.
        c2: ``"bezier"`` only: second shape control value, in ``[0, 1]``.
    """

    kind: ScheduleKind = "constant"
    tau0: RealLike
    tau_final: RealLike | None = None
    activation: RealLike = 0.5
    c1: RealLike = 0.0
    c2: RealLike = 1.0

    def __post_init__(self) -> None:
        normalise_fields(self, reals=("tau0", "tau_final", "activation", "c1", "c2"))
        for name in ("tau0", "tau_final", "activation", "c1", "c2"):
            value = getattr(self, name)
            if not isinstance(value, float) and not (name == "tau_final" and value is None):
                raise ValueError(f"{name} must be a number, got {value!r}")
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"schedule kind must be one of {SCHEDULE_KINDS}, got {self.kind!r}")
        check_threshold(self.tau0, "tau0")
        if self.tau_final is None:
            object.__setattr__(self, "tau_final", self.tau0)
        check_threshold(self._end, "tau_final")
        if self.kind == "constant" and self._end != self.tau0:
            raise ValueError(
                f"a constant schedule cannot have tau_final={self._end} != tau0={self.tau0}"
            )
        _check_unit("activation", self.activation, closed_top=False)
        _check_unit("c1", self.c1, closed_top=True)
        _check_unit("c2", self.c2, closed_top=True)

    @property
    def _end(self) -> float:
        return float(cast(float, self.tau_final))

    @staticmethod
    def bezier_curve(t: float, c1: float, c2: float) -> float:
        """``B(t) = 3(1-t)²t·c1 + 3(1-t)t²·c2 + t³`` (end points 0 and 1)."""
        u = 1.0 - t
        return 3 * u * u * t * c1 + 3 * u * t * t * c2 + t**3

    def at(self, t: float) -> float:
        """Threshold at progress ``t`` (clamped to ``[0, 1]``).

        Raises:
            ValueError: If ``t`` is NaN.
        """
        if math.isnan(t):
            raise ValueError("progress t must not be NaN")
        t = min(max(float(t), 0.0), 1.0)
        a, b = self.tau0, self._end
        if self.kind == "constant" or t == 0.0:
            return a
        if t == 1.0:
            return b
        if self.kind == "linear":
            value = (1.0 - t) * a + t * b
        elif self.kind == "exponential":
            value = a * (b / a) ** t
        elif self.kind == "relu":
            ramp = max(0.0, t - self.activation) / (1.0 - self.activation)
            value = a + (b - a) * ramp
        else:  # bezier
            value = a + (b - a) * self.bezier_curve(t, self.c1, self.c2)
        return min(max(value, min(a, b)), max(a, b))

    def at_step(self, step: int, max_steps: int) -> float:
        """Threshold at ``step`` of a run of ``max_steps`` steps (``t = step / max_steps``).

        Raises:
            ValueError: If ``max_steps < 1`` or ``step < 0``.
        """
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        return self.at(step / max_steps)

    def describe(self) -> str:
        """Short human-readable form, e.g. ``"relu(0.1->0.3, activation=0.5)"``."""
        if self.kind == "constant":
            return f"constant({self.tau0:g})"
        span = f"{self.tau0:g}->{self._end:g}"
        if self.kind == "relu":
            return f"relu({span}, activation={self.activation:g})"
        if self.kind == "bezier":
            return f"bezier({span}, c1={self.c1:g}, c2={self.c2:g})"
        return f"{self.kind}({span})"

    @classmethod
    def parse(cls, spec: str, tau0: float, tau_final: float | None = None) -> ThresholdSchedule:
        """Build a schedule from a CLI spec.

        Specs: ``"constant"``, ``"linear"``, ``"exponential"``, ``"relu"`` or
        ``"relu:ACTIVATION"``, ``"bezier"`` or ``"bezier:C1,C2"``.

        Args:
            spec: The spec string (case-insensitive, surrounding spaces ignored).
            tau0: Threshold at ``t = 0``.
            tau_final: Threshold at ``t = 1`` (``None``: ``tau0``).

        Raises:
            ValueError: With a one-line message on an unknown kind or bad parameters.
        """
        kind, sep, arg = spec.strip().lower().partition(":")
        kind, arg = kind.strip(), arg.strip()
        if kind not in SCHEDULE_KINDS:
            raise ValueError(
                f"unknown schedule {spec!r}; expected one of {', '.join(SCHEDULE_KINDS)}"
            )
        if sep and not arg:
            raise ValueError(f"schedule {spec!r}: empty parameter list after ':'")
        try:
            values = [float(p) for p in arg.split(",")] if sep else []
        except ValueError:
            raise ValueError(f"schedule {spec!r}: parameters must be numbers") from None
        n_params = {"relu": (0, 1), "bezier": (0, 2)}.get(kind, (0,))
        if len(values) not in n_params:
            usage = {"relu": "'relu' or 'relu:ACTIVATION'", "bezier": "'bezier' or 'bezier:C1,C2'"}
            hint = f"expected {usage[kind]}" if kind in usage else f"{kind!r} takes no parameters"
            raise ValueError(f"schedule {spec!r}: {hint}")
        extra: dict[str, float] = {}
        if kind == "relu" and values:
            extra["activation"] = values[0]
        elif kind == "bezier" and values:
            extra["c1"], extra["c2"] = values
        return cls(kind=cast(ScheduleKind, kind), tau0=tau0, tau_final=tau_final, **extra)
