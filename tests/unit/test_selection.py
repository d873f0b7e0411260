"""Threshold selection and the mixture readout, with hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tempo_lens.selection import (
    Selection,
    mixture_distribution,
    probabilities,
    select,
    select_from_probs,
)


def logits_of(probs: list[float]) -> torch.Tensor:
    """float64 logits whose softmax is exactly ``probs`` (for dyadic probabilities)."""
    return torch.tensor([math.log(p) for p in probs], dtype=torch.float64)


def test_inclusive_threshold_edge() -> None:
    # softmax(log [0.5, 0.25, 0.25]) is exactly [0.5, 0.25, 0.25] in float64.
    logits = logits_of([0.5, 0.25, 0.25])
    assert probabilities(logits).tolist() == [0.5, 0.25, 0.25]
    sel = select(logits, 0.25, max_parallel=None)
    # p == tau is selected: all three tokens, 0 first, then the tie 1, 2 by id.
    assert sel.token_ids == (0, 1, 2)
    assert sel.probs == (0.5, 0.25, 0.25)
    assert not sel.fell_back and not sel.capped
    assert sel.n_qualifying == 3
    # Just above 0.25, the tied tokens drop out.
    assert select(logits, 0.2500001, max_parallel=None).token_ids == (0,)


def test_threshold_one_selects_a_certain_token() -> None:
    logits = torch.tensor([0.0, -math.inf, -math.inf], dtype=torch.float64)  # p = [1, 0, 0]
    sel = select(logits, 1.0, max_parallel=None)
    assert sel.token_ids == (0,) and sel.probs == (1.0,) and not sel.fell_back


def test_order_is_probability_descending() -> None:
    # p = [0.125, 0.5, 0.375] -> order 1 (0.5), 2 (0.375), 0 (0.125).
    sel = select(logits_of([0.125, 0.5, 0.375]), 0.1, max_parallel=None)
    assert sel.token_ids == (1, 2, 0)
    # log(0.125) is not exact in float64: p_0 comes out as 0.12500000000000003.
    assert sel.probs == pytest.approx((0.5, 0.375, 0.125), abs=1e-15)
    assert sel.top_token == 1 and sel.size == 3


def test_ties_broken_by_token_id_ascending() -> None:
    # Uniform over 4 tokens: p = 0.25 each (exp(0) = 1, sum 4, exactly 0.25).
    logits = torch.zeros(4, dtype=torch.float64)
    assert select(logits, 0.25, max_parallel=None).token_ids == (0, 1, 2, 3)
    # With the tie reversed in position, ids still come out ascending.
    logits = logits_of([0.125, 0.25, 0.125, 0.5])
    sel = select(logits, 0.1, max_parallel=None)
    assert sel.token_ids == (3, 1, 0, 2)


def test_fallback_to_top1() -> None:
    # Uniform over 4: p = 0.25 < 0.3, nothing qualifies -> top-1 with lowest id.
    sel = select(torch.zeros(4, dtype=torch.float64), 0.3, max_parallel=None)
    assert sel.fell_back
    assert sel.token_ids == (0,) and sel.probs == (0.25,)
    assert sel.n_qualifying == 0 and sel.candidates == () and not sel.capped
    # p = [0.125, 0.5, 0.375] with tau 0.9 -> fallback to token 1.
    sel = select(logits_of([0.125, 0.5, 0.375]), 0.9, max_parallel=None)
    assert sel.fell_back and sel.token_ids == (1,)


def test_cap_cuts_members_and_keeps_candidates() -> None:
    # p = [0.25, 0.125, 0.5, 0.125]; tau = 0.1 -> 4 qualify: 2, 0, then the tie 1, 3.
    sel = select(logits_of([0.25, 0.125, 0.5, 0.125]), 0.1, max_parallel=2)
    assert sel.token_ids == (2, 0)
    assert sel.probs == pytest.approx((0.5, 0.25), abs=1e-15)
    assert sel.capped and sel.n_qualifying == 4
    assert [t for t, _ in sel.candidates] == [2, 0, 1, 3]
    assert [p for _, p in sel.candidates] == pytest.approx([0.5, 0.25, 0.125, 0.125], abs=1e-15)
    # A cap that does not bind is not reported as capping.
    sel = select(logits_of([0.25, 0.125, 0.5, 0.125]), 0.25, max_parallel=2)
    assert sel.token_ids == (2, 0) and not sel.capped
    # max_parallel=1 is greedy.
    assert select(logits_of([0.25, 0.75]), 0.1, max_parallel=1).token_ids == (1,)


def test_no_temperature_and_float32_input() -> None:
    # Logit scale matters (no temperature is applied): [2, 0] -> p0 = e^2/(e^2+1) = 0.8808.
    sel = select(torch.tensor([2.0, 0.0]), 0.15, max_parallel=None)
    assert sel.token_ids == (0,)
    assert sel.probs[0] == pytest.approx(math.exp(2) / (math.exp(2) + 1), abs=1e-7)
    # [1, 0] -> p1 = 1/(e+1) = 0.2689 >= 0.15, so both qualify.
    assert select(torch.tensor([1.0, 0.0]), 0.15, max_parallel=None).token_ids == (0, 1)


def test_select_from_probs_matches_select() -> None:
    p = torch.tensor([0.125, 0.5, 0.375], dtype=torch.float64)
    assert select_from_probs(p, 0.2, max_parallel=None) == select(
        logits_of([0.125, 0.5, 0.375]), 0.2, max_parallel=None
    )


@pytest.mark.parametrize("tau", [0.0, -0.1, 1.5, math.nan])
def test_bad_threshold(tau: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        select(torch.zeros(3), tau, max_parallel=None)


@pytest.mark.parametrize("cap", [0, -1])
def test_bad_max_parallel(cap: int) -> None:
    with pytest.raises(ValueError, match="max_parallel"):
        select(torch.zeros(3), 0.5, max_parallel=cap)


def test_bad_logits() -> None:
    with pytest.raises(ValueError, match="NaN"):
        select(torch.tensor([0.0, math.nan]), 0.5, max_parallel=None)
    with pytest.raises(ValueError, match="-inf"):
        select(torch.full((3,), -math.inf), 0.5, max_parallel=None)


def test_selection_validates() -> None:
    with pytest.raises(ValueError):
        Selection(
            token_ids=(),
            probs=(),
            threshold=0.5,
            fell_back=False,
            capped=False,
            n_qualifying=0,
            candidates=(),
        )


def test_mixture_math() -> None:
    probs = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.25, 0.75]], dtype=torch.float64)
    # weights [0.6, 0.2] renormalise to [0.75, 0.25]:
    # [0.75*0.5, 0.75*0.5 + 0.25*0.25, 0.25*0.75] = [0.375, 0.4375, 0.1875]
    mix = mixture_distribution(probs, [0.6, 0.2])
    assert mix.tolist() == pytest.approx([0.375, 0.4375, 0.1875], abs=1e-15)
    assert float(mix.sum()) == pytest.approx(1.0)
    # A tensor of weights works too; zero weight ignores a row.
    mix = mixture_distribution(probs, torch.tensor([0.0, 3.0]))
    assert mix.tolist() == [0.0, 0.25, 0.75]
    # The mixture can be thresholded like any distribution: 0.4375 >= 0.4 > 0.375.
    assert select_from_probs(
        mixture_distribution(probs, [0.6, 0.2]), 0.4, max_parallel=None
    ).token_ids == (1,)


@pytest.mark.parametrize(
    ("weights", "match"),
    [([1.0], "2 distributions"), ([-1.0, 2.0], "non-negative"), ([0.0, 0.0], "positive sum")],
)
def test_mixture_validation(weights: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        mixture_distribution(torch.full((2, 3), 1 / 3, dtype=torch.float64), weights)


@settings(max_examples=60, deadline=None)
@given(
    logits=st.lists(st.floats(-8, 8), min_size=1, max_size=12),
    tau=st.floats(0.001, 1.0),
    cap=st.one_of(st.none(), st.integers(1, 5)),
)
def test_selection_properties(logits: list[float], tau: float, cap: int | None) -> None:
    x = torch.tensor(logits, dtype=torch.float64)
    sel = select(x, tau, max_parallel=cap)
    p = probabilities(x)
    # Sorted descending, ties by id ascending.
    keys = [(-q, t) for t, q in zip(sel.token_ids, sel.probs, strict=True)]
    assert keys == sorted(keys)
    assert sel.probs == tuple(p[list(sel.token_ids)].tolist())
    if sel.fell_back:
        assert sel.size == 1 and sel.probs[0] == float(p.max()) and float(p.max()) < tau
    else:
        assert all(q >= tau for q in sel.probs)
        # Every qualifying token is a candidate; the selection is a prefix of them.
        assert sel.n_qualifying == int((p >= tau).sum()) == len(sel.candidates)
        assert tuple(t for t, _ in sel.candidates[: sel.size]) == sel.token_ids
    assert cap is None or sel.size <= cap
    assert sel.capped == (sel.size < sel.n_qualifying)
