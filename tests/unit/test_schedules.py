"""Threshold schedules, with hand-computed values."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tempo_lens.schedules import SCHEDULE_KINDS, ThresholdSchedule


def test_constant() -> None:
    s = ThresholdSchedule(tau0=0.2)
    assert s.kind == "constant" and s.tau_final == 0.2
    assert [s.at(t) for t in (0.0, 0.5, 1.0)] == [0.2, 0.2, 0.2]
    assert s.describe() == "constant(0.2)"


def test_linear() -> None:
    s = ThresholdSchedule(kind="linear", tau0=0.1, tau_final=0.3)
    # 0.1 + (0.3 - 0.1) * 0.25 = 0.15
    assert s.at(0.25) == pytest.approx(0.15, abs=1e-15)
    assert s.at(0.5) == pytest.approx(0.2, abs=1e-15)
    assert s.at(0.0) == 0.1 and s.at(1.0) == 0.3
    # Progress is clamped to [0, 1].
    assert s.at(-3.0) == 0.1 and s.at(7.0) == 0.3
    # at_step: t = step / max_steps = 5 / 20 = 0.25.
    assert s.at_step(5, 20) == pytest.approx(0.15, abs=1e-15)
    assert s.describe() == "linear(0.1->0.3)"


def test_linear_decreasing() -> None:
    s = ThresholdSchedule(kind="linear", tau0=0.5, tau_final=0.1)
    # 0.5 + (0.1 - 0.5) * 0.75 = 0.2
    assert s.at(0.75) == pytest.approx(0.2, abs=1e-15)


def test_exponential_is_geometric() -> None:
    s = ThresholdSchedule(kind="exponential", tau0=0.1, tau_final=0.4)
    # 0.1 * (0.4 / 0.1) ** 0.5 = 0.1 * 2 = 0.2 (geometric mean), not the arithmetic 0.25.
    assert s.at(0.5) == pytest.approx(0.2, abs=1e-15)
    # 0.1 * 4 ** 0.25 = 0.1 * sqrt(2) = 0.14142...
    assert s.at(0.25) == pytest.approx(0.1 * math.sqrt(2), abs=1e-15)
    assert s.at(1.0) == 0.4


def test_relu_hinge() -> None:
    s = ThresholdSchedule(kind="relu", tau0=0.1, tau_final=0.3, activation=0.5)
    # Flat until t = 0.5 ...
    assert s.at(0.2) == 0.1 and s.at(0.5) == 0.1
    # ... then linear: t = 0.75 -> ramp (0.75 - 0.5) / 0.5 = 0.5 -> 0.1 + 0.2 * 0.5 = 0.2
    assert s.at(0.75) == pytest.approx(0.2, abs=1e-15)
    assert s.at(1.0) == 0.3
    assert s.describe() == "relu(0.1->0.3, activation=0.5)"
    # activation = 0 is plain linear.
    lin = ThresholdSchedule(kind="linear", tau0=0.1, tau_final=0.3)
    r0 = ThresholdSchedule(kind="relu", tau0=0.1, tau_final=0.3, activation=0.0)
    assert r0.at(0.3) == pytest.approx(lin.at(0.3), abs=1e-15)


def test_bezier_worked_numbers() -> None:
    s = ThresholdSchedule(kind="bezier", tau0=0.1, tau_final=0.3, c1=0.2, c2=0.9)
    # B(0.5) = 3*.25*.5*.2 + 3*.5*.25*.9 + .125 = 0.075 + 0.3375 + 0.125 = 0.5375
    assert ThresholdSchedule.bezier_curve(0.5, 0.2, 0.9) == pytest.approx(0.5375, abs=1e-15)
    # tau = 0.1 + 0.2 * 0.5375 = 0.2075
    assert s.at(0.5) == pytest.approx(0.2075, abs=1e-15)
    # B(0.25) = 3*(.75^2)*.25*.2 + 3*.75*(.25^2)*.9 + .25^3
    #         = 0.084375 + 0.1265625 + 0.015625 = 0.2265625 -> tau = 0.1453125
    assert s.at(0.25) == pytest.approx(0.1453125, abs=1e-15)
    assert s.at(0.0) == 0.1 and s.at(1.0) == 0.3
    assert s.describe() == "bezier(0.1->0.3, c1=0.2, c2=0.9)"


def test_bezier_defaults_and_linear_special_case() -> None:
    # Default c1=0, c2=1: smoothstep 3t^2 - 2t^3; at t=0.25: 0.1875 - 0.03125 = 0.15625.
    s = ThresholdSchedule(kind="bezier", tau0=0.1, tau_final=0.5)
    assert (s.c1, s.c2) == (0.0, 1.0)
    assert s.at(0.25) == pytest.approx(0.1 + 0.4 * 0.15625, abs=1e-15)
    assert s.at(0.5) == pytest.approx(0.3, abs=1e-15)  # symmetric: B(0.5) = 0.5
    # c1 = 1/3, c2 = 2/3 reduces to B(t) = t.
    for t in (0.1, 0.37, 0.8):
        assert ThresholdSchedule.bezier_curve(t, 1 / 3, 2 / 3) == pytest.approx(t, abs=1e-15)


def test_at_step_validation() -> None:
    s = ThresholdSchedule(kind="linear", tau0=0.1, tau_final=0.3)
    with pytest.raises(ValueError, match="max_steps"):
        s.at_step(0, 0)
    with pytest.raises(ValueError, match="step"):
        s.at_step(-1, 10)
    with pytest.raises(ValueError, match="NaN"):
        s.at(math.nan)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tau0": 0.0}, "tau0"),
        ({"tau0": 1.2}, "tau0"),
        ({"kind": "linear", "tau0": 0.1, "tau_final": 0.0}, "tau_final"),
        ({"kind": "linear", "tau0": 0.1, "tau_final": math.nan}, "tau_final"),
        ({"tau0": 0.1, "tau_final": 0.2}, "constant"),
        ({"kind": "relu", "tau0": 0.1, "activation": 1.0}, "activation"),
        ({"kind": "relu", "tau0": 0.1, "activation": -0.1}, "activation"),
        ({"kind": "bezier", "tau0": 0.1, "c1": 1.5}, "c1"),
        ({"kind": "bezier", "tau0": 0.1, "c2": -0.5}, "c2"),
    ],
)
def test_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ThresholdSchedule(**kwargs)


def test_unknown_kind() -> None:
    # Under the jaxtyping/beartype import hook the Literal annotation rejects it first.
    with pytest.raises((ValueError, TypeError)):
        ThresholdSchedule(kind="quadratic", tau0=0.1)  # type: ignore[arg-type]


def test_parse() -> None:
    assert ThresholdSchedule.parse("constant", 0.2, None) == ThresholdSchedule(tau0=0.2)
    assert ThresholdSchedule.parse(" Linear ", 0.1, 0.3).kind == "linear"
    assert ThresholdSchedule.parse("exponential", 0.1, 0.3).kind == "exponential"
    relu = ThresholdSchedule.parse("relu:0.25", 0.1, 0.3)
    assert (relu.kind, relu.activation) == ("relu", 0.25)
    assert ThresholdSchedule.parse("relu", 0.1, 0.3).activation == 0.5
    bez = ThresholdSchedule.parse("bezier:0.2,0.9", 0.1, 0.3)
    assert (bez.c1, bez.c2) == (0.2, 0.9)
    assert ThresholdSchedule.parse("bezier", 0.1, 0.3).describe() == "bezier(0.1->0.3, c1=0, c2=1)"


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("cosine", "unknown schedule"),
        ("linear:0.5", "takes no parameters"),
        ("relu:abc", "must be numbers"),
        ("relu:0.1,0.2", "relu:ACTIVATION"),
        ("bezier:0.2", "bezier:C1,C2"),
        ("bezier:", "empty parameter"),
        ("relu:1.5", "activation"),
    ],
)
def test_parse_errors_are_one_line(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as err:
        ThresholdSchedule.parse(spec, 0.1, 0.3)
    assert "\n" not in str(err.value)


taus = st.floats(0.01, 1.0)


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(SCHEDULE_KINDS),
    tau0=taus,
    tau_final=taus,
    activation=st.floats(0.0, 0.99),
    c1=st.floats(0.0, 1.0),
    c2=st.floats(0.0, 1.0),
    t=st.floats(-0.5, 1.5),
)
def test_schedule_stays_between_endpoints(
    kind: str, tau0: float, tau_final: float, activation: float, c1: float, c2: float, t: float
) -> None:
    end = tau0 if kind == "constant" else tau_final
    s = ThresholdSchedule(kind=kind, tau0=tau0, tau_final=end, activation=activation, c1=c1, c2=c2)  # type: ignore[arg-type]
    value = s.at(t)
    assert min(tau0, end) <= value <= max(tau0, end)
    assert 0.0 < value <= 1.0
    assert s.at(0.0) == tau0 and s.at(1.0) == end


@settings(max_examples=100, deadline=None)
@given(
    kind=st.sampled_from(["linear", "exponential", "relu"]),
    tau0=taus,
    tau_final=taus,
    t1=st.floats(0.0, 1.0),
    t2=st.floats(0.0, 1.0),
)
def test_monotone_kinds_are_monotone(
    kind: str, tau0: float, tau_final: float, t1: float, t2: float
) -> None:
    s = ThresholdSchedule(kind=kind, tau0=tau0, tau_final=tau_final)  # type: ignore[arg-type]
    lo, hi = sorted((t1, t2))
    sign = 1 if tau_final >= tau0 else -1
    assert sign * (s.at(hi) - s.at(lo)) >= -1e-12
