"""The pre-registered decision rules of the findings (docs/findings.md), on synthetic CIs.

Every rule is shown to give each of its verdicts, so no claim is decided before the data.
"""

from __future__ import annotations

import math

import pytest

from tempo_lens.experiments import findings_rules as rules

NAN = (math.nan, math.nan)


@pytest.mark.parametrize(
    ("ci", "want"),
    [
        ((0.45, 0.55), "supported"),
        ((0.4, 0.6), "supported"),  # bounds inclusive
        ((0.61, 0.9), "refuted"),
        ((0.1, 0.39), "refuted"),
        ((0.5, 0.7), "inconclusive"),
        ((0.3, 0.7), "inconclusive"),
        (NAN, "inconclusive"),
    ],
)
def test_interval(ci, want) -> None:
    assert rules.interval(ci, 0.4, 0.6, n=50) == want


def test_too_few_prompts_is_insufficient() -> None:
    assert rules.interval((0.45, 0.55), 0.4, 0.6, n=rules.MIN_PROMPTS - 1) == "insufficient"
    assert rules.interval((0.45, 0.55), 0.4, 0.6, n=rules.MIN_PROMPTS) == "supported"
    assert rules.direction((-0.5, -0.2), sign=-1, margin=0.05, n=3) == "insufficient"
    assert rules.roles([(0.1, 0.2), (0.3, 0.4)], n=3) == "insufficient"
    assert rules.composite(["supported", "insufficient"]) == "insufficient"
    assert rules.composite(["refuted", "insufficient"]) == "refuted"


@pytest.mark.parametrize(
    ("ci", "sign", "want"),
    [
        ((-0.4, -0.1), -1, "supported"),
        ((0.1, 0.4), -1, "refuted"),  # the other side
        ((-0.03, 0.04), -1, "refuted"),  # negligible
        ((-0.04, -0.01), -1, "refuted"),  # excludes 0 but inside the margin: negligible wins
        ((-0.3, 0.2), -1, "inconclusive"),
        ((0.1, 0.4), 1, "supported"),
        ((-0.4, -0.1), 1, "refuted"),
        ((-0.01, 0.3), 1, "inconclusive"),
        (NAN, 1, "inconclusive"),
    ],
)
def test_direction(ci, sign, want) -> None:
    assert rules.direction(ci, sign=sign, margin=0.05, n=50) == want


def test_exact_and_composite() -> None:
    assert rules.exact(10, 10) == "supported"
    assert rules.exact(9, 10) == "refuted"
    assert rules.exact(0, 0) == "inconclusive"
    assert rules.composite(["supported", "supported"]) == "supported"
    assert rules.composite(["supported", "refuted"]) == "refuted"
    assert rules.composite(["supported", "inconclusive"]) == "inconclusive"


def test_head_range_each_way() -> None:
    assert rules.head_range((0.35, 0.45), (1.0, 1.4), 50) == "supported"
    assert rules.head_range((0.6, 0.7), (1.0, 1.4), 50) == "refuted"
    assert rules.head_range((0.35, 0.45), (1.6, 2.0), 50) == "refuted"
    assert rules.head_range((0.25, 0.45), (1.0, 1.4), 50) == "inconclusive"


def test_roles_each_way() -> None:
    assert rules.roles([(0.1, 0.2), (0.3, 0.4), (0.06, 0.1)], 50) == "supported"
    assert rules.roles([(0.1, 0.2), (0.3, 0.4), (0.0, 0.04)], 50) == "refuted"
    assert rules.roles([(0.1, 0.2), (0.3, 0.4), (0.02, 0.08)], 50) == "inconclusive"


def test_specialised_each_way() -> None:
    assert rules.specialised(14, 270) == "supported"
    assert rules.specialised(0, 270) == "refuted"
    assert rules.specialised(3, 270) == "inconclusive"


def test_bad_rule_arguments() -> None:
    with pytest.raises(ValueError, match="a <= b"):
        rules.interval((0.1, 0.2), 0.6, 0.4)
    with pytest.raises(ValueError, match="sign"):
        rules.direction((0.1, 0.2), sign=0, margin=0.1)
