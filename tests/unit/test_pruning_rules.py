"""Pure parts of retroactive pruning: layers, member scores, rules, pre-append filter."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tempo_lens.pruning import (
    AbsoluteRule,
    ProbabilityRatioRule,
    PruningConfig,
    RelativeRule,
    decide,
    prefilter,
    resolve_layers,
    score_members,
)

# ---------------------------------------------------------------- layers


def test_layer_thirds_n30() -> None:
    # n // 3 = 10, 2n // 3 = 20.
    assert resolve_layers("early", 30) == list(range(0, 10))
    assert resolve_layers("middle", 30) == list(range(10, 20))
    assert resolve_layers("late", 30) == list(range(20, 30))
    assert resolve_layers("all", 30) == list(range(30))


def test_layer_thirds_n2() -> None:
    # n // 3 = 0, 2n // 3 = 1: early is empty (error), middle = [0], late = [1].
    with pytest.raises(ValueError, match="empty"):
        resolve_layers("early", 2)
    assert resolve_layers("middle", 2) == [0]
    assert resolve_layers("late", 2) == [1]
    assert resolve_layers("ALL", 2) == [0, 1]


def test_layer_lists_and_strings() -> None:
    assert resolve_layers("0,3,5", 6) == [0, 3, 5]
    assert resolve_layers(" 5, 0,3,3 ", 6) == [0, 3, 5]
    assert resolve_layers([4, 1, 4], 6) == [1, 4]
    assert resolve_layers((2,), 6) == [2]


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("first", "one of"),
        ("0,x", "one of"),
        ([0, 6], "out of range"),
        ("7", "out of range"),
        ([-1], ">= 0"),
        ([], "non-empty"),
        ([True], "ints"),
    ],
)
def test_layer_errors(spec: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        resolve_layers(spec, 6)  # type: ignore[arg-type]


def test_layer_float_rejected() -> None:
    # Under the jaxtyping/beartype import hook the annotation rejects it first.
    with pytest.raises((ValueError, TypeError)):
        resolve_layers([1.0], 6)  # type: ignore[list-item]


# ---------------------------------------------------------------- scores


def _attention() -> torch.Tensor:
    """[layer=2, head=2, query=2, key=4]; members are keys 1 and 2."""
    att = torch.zeros(2, 2, 2, 4, dtype=torch.float64)
    # key 1 gets 0.1, 0.3 (layer 0 heads) and 0.5, 0.7 (layer 1 heads) from query 0,
    # and half as much from query 1.
    att[0, 0, 0, 1], att[0, 1, 0, 1], att[1, 0, 0, 1], att[1, 1, 0, 1] = 0.1, 0.3, 0.5, 0.7
    att[:, :, 1, 1] = att[:, :, 0, 1] / 2
    # key 2 gets 0.2 everywhere.
    att[:, :, :, 2] = 0.2
    return att


def test_score_mean_mean() -> None:
    # key 1: query 0 mean over 4 (layer, head) = (0.1+0.3+0.5+0.7)/4 = 0.4; query 1 = 0.2;
    # mean over queries = 0.3.  key 2: 0.2.
    s = score_members(_attention(), [1, 2], head_agg="mean", query_agg="mean")
    assert s.tolist() == pytest.approx([0.3, 0.2], abs=1e-15)


def test_score_max_sum_combinations() -> None:
    att = _attention()
    # max over heads per query: key 1 -> 0.7, 0.35; sum over queries -> 1.05.  key 2 -> 0.4.
    s = score_members(att, [1, 2], head_agg="max", query_agg="sum")
    assert s.tolist() == pytest.approx([1.05, 0.4], abs=1e-15)
    # sum over heads: key 1 -> 1.6, 0.8; max over queries -> 1.6.  key 2 -> 0.8.
    s = score_members(att, [2, 1], head_agg="sum", query_agg="max")
    assert s.tolist() == pytest.approx([0.8, 1.6], abs=1e-15)  # member_keys order kept


def test_score_only_reads_member_columns() -> None:
    att = _attention()
    att[..., 0] = 0.9  # a non-member key must not matter
    s = score_members(att, [1, 2], head_agg="mean", query_agg="mean")
    assert s.tolist() == pytest.approx([0.3, 0.2], abs=1e-15)


@pytest.mark.parametrize("keys", [[], [1, 1], [4], [-1]])
def test_score_bad_keys(keys: list[int]) -> None:
    with pytest.raises(ValueError, match="member_keys"):
        score_members(_attention(), keys, head_agg="mean", query_agg="mean")


def test_score_bad_aggregation() -> None:
    # Under the jaxtyping/beartype import hook the Literal annotation rejects it first.
    with pytest.raises((ValueError, TypeError)):
        score_members(_attention(), [1], head_agg="median", query_agg="mean")  # type: ignore[arg-type]


# ---------------------------------------------------------------- rules


def test_relative_rule() -> None:
    # best = 0.4; cutoff = 0.5 * 0.4 = 0.2; 0.2 kept (inclusive), 0.1 pruned.
    assert decide([0.4, 0.2, 0.1], RelativeRule(ratio=0.5)) == [False, False, True]
    assert decide(torch.tensor([0.1, 0.4, 0.19]), RelativeRule(ratio=0.5)) == [True, False, True]
    assert RelativeRule(ratio=0.5).describe() == "relative(r=0.5)"


def test_absolute_rule_never_prunes_best() -> None:
    # Nobody reaches 0.5, but the best (0.3, rank 1) survives.
    assert decide([0.1, 0.3, 0.2], AbsoluteRule(threshold=0.5)) == [True, False, True]
    assert decide([0.6, 0.5, 0.49], AbsoluteRule(threshold=0.5)) == [False, False, True]
    assert AbsoluteRule(threshold=0.05).describe() == "absolute(t=0.05)"


def test_ties_lowest_rank_wins() -> None:
    # ratio 1 keeps only members equal to the best; ties on the best are all kept.
    assert decide([0.3, 0.3, 0.1], RelativeRule(ratio=1.0)) == [False, False, True]
    # Absolute rule with every score below threshold: only the lowest-rank best survives.
    assert decide([0.2, 0.3, 0.3], AbsoluteRule(threshold=0.9)) == [True, False, True]
    assert decide([0.0, 0.0], AbsoluteRule(threshold=0.1)) == [False, True]


def test_singleton_never_prunes() -> None:
    assert decide([0.0], AbsoluteRule(threshold=1.0)) == [False]
    assert decide([0.0], RelativeRule(ratio=1.0)) == [False]


def test_decide_errors() -> None:
    with pytest.raises(ValueError):
        decide([], RelativeRule(ratio=0.5))
    with pytest.raises(ValueError, match="NaN"):
        decide([0.1, math.nan], RelativeRule(ratio=0.5))


@pytest.mark.parametrize("ratio", [-0.1, 1.01, math.nan])
def test_rule_validation(ratio: float) -> None:
    with pytest.raises(ValueError, match="ratio"):
        RelativeRule(ratio=ratio)
    with pytest.raises(ValueError, match="ratio"):
        ProbabilityRatioRule(ratio=ratio)


@pytest.mark.parametrize("threshold", [-0.1, math.inf, math.nan])
def test_absolute_validation(threshold: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        AbsoluteRule(threshold=threshold)


@settings(max_examples=100, deadline=None)
@given(
    scores=st.lists(st.floats(0.0, 2.0), min_size=1, max_size=8),
    ratio=st.floats(0.0, 1.0),
    threshold=st.floats(0.0, 2.0),
)
def test_best_always_survives(scores: list[float], ratio: float, threshold: float) -> None:
    best = scores.index(max(scores))  # first maximum = lowest rank
    for rule in (RelativeRule(ratio=ratio), AbsoluteRule(threshold=threshold)):
        prune = decide(scores, rule)
        assert len(prune) == len(scores) and not prune[best]
        # Pruned members score strictly below every kept member of the same cutoff.
        cutoff = ratio * max(scores) if isinstance(rule, RelativeRule) else threshold
        assert all(
            p == (i != best and s < cutoff)
            for i, (s, p) in enumerate(zip(scores, prune, strict=True))
        )


# ---------------------------------------------------------------- pre-append filter


def test_prefilter() -> None:
    # p_top = 0.5, ratio 0.5 -> cutoff 0.25: 0.3 and 0.25 kept (inclusive), 0.2 dropped.
    kept_ids, kept_probs, dropped = prefilter(
        [7, 3, 9, 4], [0.5, 0.3, 0.25, 0.2], ProbabilityRatioRule(ratio=0.5)
    )
    assert kept_ids == [7, 3, 9]
    assert kept_probs == [0.5, 0.3, 0.25]
    assert dropped == [(4, 0.2)]
    # The top candidate is always kept, even with ratio 1 and ties.
    assert prefilter([1, 2], [0.4, 0.4], ProbabilityRatioRule(ratio=1.0))[0] == [1, 2]
    assert prefilter([5], [0.01], ProbabilityRatioRule(ratio=1.0)) == ([5], [0.01], [])
    assert ProbabilityRatioRule(ratio=0.25).describe() == "prob_ratio(r=0.25)"
    with pytest.raises(ValueError):
        prefilter([1, 2], [0.5], ProbabilityRatioRule(ratio=0.5))


# ---------------------------------------------------------------- config


def test_pruning_config() -> None:
    cfg = PruningConfig(rule=RelativeRule(ratio=0.5))
    assert (cfg.lookahead, cfg.layers, cfg.head_agg, cfg.query_agg) == (1, "all", "mean", "mean")
    assert cfg.layers_for(4) == [0, 1, 2, 3]
    assert cfg.describe() == "relative(r=0.5), lookahead=1, layers=all, heads=mean, queries=mean"
    cfg = PruningConfig(
        rule=AbsoluteRule(threshold=0.1), lookahead=3, layers=[5, 1], head_agg="max"
    )
    assert cfg.layers == (5, 1) and cfg.layers_for(6) == [1, 5]
    hash(cfg)  # frozen and hashable
    with pytest.raises(ValueError, match="out of range"):
        cfg.layers_for(3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lookahead": 0}, "lookahead"),
        ({"layers": "outer"}, "layers"),
        ({"layers": "0,-2"}, ">= 0"),
    ],
)
def test_pruning_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PruningConfig(rule=RelativeRule(ratio=0.5), **kwargs)


def test_parse_rule() -> None:
    from tempo_lens.pruning import parse_rule

    assert parse_rule("none") is None and parse_rule("") is None
    assert parse_rule("relative:0.5") == RelativeRule(ratio=0.5)
    assert parse_rule("absolute:0.02") == AbsoluteRule(threshold=0.02)
    for bad in ("relative", "relative:x", "sometimes:3", "absolute:nan"):
        with pytest.raises(ValueError, match="relative:R"):
            parse_rule(bad)
