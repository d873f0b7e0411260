"""Hand-worked values for mechanism behaviours no other unit test pinned down.

Each test here kills surviving mutants of the mechanism run in ``docs/mutation.md``
(state bookkeeping, masks, layout, rotation tables, selection, pruning, schedules): the
expected values are worked out by hand in the comments, not computed by the code under
test.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np
import pytest
import torch
from jaxtyping import TypeCheckError

from tempo_lens import PositionScheme, SequenceState
from tempo_lens.layout import PAD, BatchLayout
from tempo_lens.masks import ALIVE, visibility
from tempo_lens.pruning import (
    AbsoluteRule,
    ProbabilityRatioRule,
    PruningConfig,
    RelativeRule,
    resolve_layers,
    score_members,
)
from tempo_lens.rope import apply_rotation, delta_cos_sin, rerotate, rotation_tables
from tempo_lens.schedules import ThresholdSchedule
from tempo_lens.selection import (
    mixture_distribution,
    probabilities,
    select,
    select_from_probs,
)


def refuses(call: Callable[[], object], match: str) -> None:
    """``call`` raises the function's own ValueError (``match``), or, under the jaxtyping
    import hook of the normal test runs, the annotation rejects the shape first."""
    with pytest.raises((ValueError, TypeCheckError)) as info:
        call()
    if info.type is ValueError:
        assert re.search(match, str(info.value)), str(info.value)


# ---------------------------------------------------------------- state


def five() -> SequenceState:
    """Prompt [10, 11] (0, 1), set 0 = [20, 21] (2, 3), set 1 = [30] (4)."""
    return SequenceState.from_sets([10, 11], [[20, 21], [30]])


def rows(mask: torch.Tensor) -> list[list[int]]:
    return mask.int().tolist()


def test_state_defaults_isolated_and_keeps_its_scheme() -> None:
    assert SequenceState([1]).isolate is True
    assert five().isolate is True
    offset = PositionScheme(member_offset=0.5)
    # shared position L + step = 2, member i at 2 + 0.5 i
    assert SequenceState.from_sets([1, 2], [[5, 6]], positions=offset).logical == [0, 1, 2, 2.5]
    direct = SequenceState([1, 2], positions=offset)
    direct.append_set([5, 6])
    assert direct.logical == [0, 1, 2, 2.5]
    distinct = SequenceState([1, 2], positions=PositionScheme(kind="distinct"))
    distinct.append_set([5, 6])  # logical == physical
    assert distinct.logical == [0, 1, 2, 3]


def test_state_visibility_arguments_by_hand() -> None:
    st = five()
    assert rows(st.visibility()) == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 0, 1, 0],  # isolated: 3 does not see its sibling 2
        [1, 1, 1, 1, 1],
    ]
    assert rows(st.visibility([3, 4])) == [[1, 1, 0, 1, 0], [1, 1, 1, 1, 1]]
    assert rows(st.visibility([3], isolate=False)) == [[1, 1, 1, 1, 0]]  # partial isolation
    # logical [0, 1, 2, 2, 3]; window 2 keeps keys with distance < 2
    assert rows(st.visibility([4], window=2)) == [[0, 0, 1, 1, 1]]
    assert rows(st.visibility([3, 4], window=1)) == [[0, 0, 0, 1, 0], [0, 0, 0, 0, 1]]
    st.prune(3, at_step=0)
    assert rows(st.visibility([2, 3, 4])) == [[1, 1, 1, 0, 0], [1, 1, 0, 1, 0], [1, 1, 1, 0, 1]]
    # viewing step 1: queries 2 and 3 see the sequence as of step 1, where 3 is pruned
    assert rows(st.visibility([2, 3], view_step=1)) == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]]


def test_hard_pruned_token_is_seen_only_by_itself() -> None:
    st = five()
    st.prune(2, at_step=1, hard=True)
    assert st.hard_pruned == {2}
    assert rows(st.visibility([2, 4])) == [[1, 1, 1, 0, 0], [1, 1, 0, 1, 1]]
    steps, pruned = st.steps_tensor(), st.pruned_tensor()
    hard = torch.tensor([False, False, True, False, False])
    assert pruned.tolist() == [ALIVE, ALIVE, 1, ALIVE, ALIVE]
    got = visibility(steps, pruned, torch.tensor([2, 4]), isolate=True, hard=hard)
    assert rows(got) == [[1, 1, 1, 0, 0], [1, 1, 0, 1, 1]]


def test_window_must_be_positive() -> None:
    steps = torch.tensor([-1, -1, 0])
    with pytest.raises(ValueError, match="must be > 0"):
        visibility(
            steps,
            torch.full((3,), ALIVE),
            torch.arange(3),
            isolate=True,
            logical=torch.tensor([0.0, 1.0, 2.0]),
            window=0,
        )


def test_prune_marks_the_first_stale_token() -> None:
    st = five()
    st.append_set([40])  # index 5, step 2
    st.prune(2, at_step=0)  # soft at step 0: only tokens of later steps saw it -> 4
    assert st.stale_from == 4
    st.clear_stale()
    assert st.stale_from is None
    st.prune(3, at_step=1, hard=True)  # hard: every later index -> 4
    assert st.stale_from == 4
    st.clear_stale()
    st.prune(4, at_step=1, hard=True)  # hard at 4 -> 5
    assert st.stale_from == 5
    st.clear_stale()
    other = five()
    other.append_set([40])
    other.prune(2, at_step=1, hard=True)  # -> 3
    other.prune(4, at_step=1)  # soft at step 1 -> 5; the smaller one stays
    assert other.stale_from == 3
    with pytest.raises(IndexError, match="no token at physical index 6"):
        other.prune(6, at_step=2)


def test_state_version_changes_at_every_mutation() -> None:
    st = SequenceState([1])
    seen = [st.version]
    st.append_set([2, 3])
    seen.append(st.version)
    st.append_set([4])
    seen.append(st.version)
    st.prune(1, at_step=1)
    seen.append(st.version)
    st.prune(2, at_step=1, hard=True)
    seen.append(st.version)
    st.clear_stale()
    st.set_logical_positions([0.0, 1.0, 1.0, 2.0])
    seen.append(st.version)
    assert len(set(seen)) == len(seen)
    assert st.stale_from == 0  # new positions: every cached key is stale


def test_state_round_trip_keeps_scheme_hard_prunes_and_moved_prompt() -> None:
    st = SequenceState.from_sets(
        [1, 2], [[5, 6], [7]], positions=PositionScheme(member_offset=0.25)
    )
    st.prune(3, at_step=1, hard=True)
    st.prune(2, at_step=1)
    data = st.to_dict()
    assert data["positions"] == {"kind": "shared", "member_offset": 0.25}
    assert data["hard_pruned"] == [3]
    back = SequenceState.from_dict(data)
    assert back == st and back.hard_pruned == {3} and back.scheme == st.scheme
    assert rows(back.visibility()) == rows(st.visibility())
    assert "hard_pruned" not in SequenceState([1]).to_dict()  # format unchanged without
    moved = SequenceState.from_sets([1, 2], [[5]])
    moved.set_logical_positions([3.0, 4.0, 5.0])
    assert SequenceState.from_dict(moved.to_dict()).logical == [3.0, 4.0, 5.0]
    dup = st.copy()
    assert dup.hard_pruned == {3}
    dup.prune(4, at_step=1, hard=True)
    assert st.hard_pruned == {3}  # independent copy


# ---------------------------------------------------------------- layout


def test_layout_one_row_and_fresh_tensor_after_each_append() -> None:
    lay = BatchLayout(1)
    lay.append([[0, 1]])
    assert lay.tensor().tolist() == [[0, 1]]
    assert lay.attention_mask().tolist() == [[1, 1]]  # default: every column
    lay.append([[2]])
    assert lay.tensor().tolist() == [[0, 1, 2]]
    two = BatchLayout(2)
    two.append([[0, 1, 2], [0]])
    assert two.tensor().tolist() == [[0, 1, 2], [0, PAD, PAD]]
    assert two.tensor().tolist() == [[0, 1, 2], [0, PAD, PAD]]  # memoised
    two.append([[3], [1, 2]])
    assert two.tensor().tolist() == [[0, 1, 2, 3, PAD], [0, PAD, PAD, 1, 2]]
    assert two.attention_mask().tolist() == [[1, 1, 1, 1, 0], [1, 0, 0, 1, 1]]
    assert [two.n_real_before(1, c) for c in range(6)] == [0, 1, 1, 1, 2, 3]


# ---------------------------------------------------------------- rotation


def test_rotation_tables_dtype_and_shape() -> None:
    inv = torch.tensor([1.0, 0.01], dtype=torch.float64)
    delta = torch.tensor([0.0, 1.0, 2.5], dtype=torch.float64)
    c32, s32 = delta_cos_sin(delta, inv, adjacent_pairs=False, dtype=torch.float32)
    assert c32.dtype == s32.dtype == torch.float32
    cos, sin = rotation_tables(delta, inv, adjacent_pairs=False, dtype=torch.float64)
    assert cos.shape == sin.shape == (3, 1, 4)  # [pos, 1, rotary_dim] for a 1-D delta
    # float64 all the way: cos(2.5 * 0.01) to the last bit; sin signed -, -, +, +
    assert cos[2, 0, 1].item() == math.cos(2.5 * 0.01)
    assert sin[2, 0].tolist() == [-math.sin(2.5), -math.sin(0.025), math.sin(2.5), math.sin(0.025)]


@pytest.mark.parametrize("adjacent", [False, True])
def test_partial_rotation_keeps_the_tail_when_pos_equals_rotary_dim(adjacent) -> None:
    # rotary_dim 4 == pos == heads: the tail (features 4..7) must pass through unchanged
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 4, 8, generator=g)
    inv = torch.tensor([1.0, 0.1], dtype=torch.float64)
    delta = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    c, s = delta_cos_sin(delta, inv, adjacent_pairs=adjacent, dtype=torch.float64)
    out = rerotate(x, c, s, rotary_dim=4, adjacent_pairs=adjacent)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.equal(out[..., 4:], x[..., 4:])
    tables = rotation_tables(delta[None], inv, adjacent_pairs=adjacent, dtype=torch.float32)
    applied = apply_rotation(x, *tables, adjacent_pairs=adjacent)
    assert applied.shape == x.shape and torch.equal(applied[..., 4:], x[..., 4:])
    # position 0 has delta 0: nothing rotates
    assert torch.equal(out[:, 0], x[:, 0]) and torch.equal(applied[:, 0], x[:, 0])


# ---------------------------------------------------------------- selection


def test_probabilities_and_mixtures_are_float64() -> None:
    logits = torch.tensor([0.0, math.log(3.0)], dtype=torch.float32)
    p = probabilities(logits)
    assert p.dtype == torch.float64
    mix = mixture_distribution(torch.tensor([[0.25, 0.75]], dtype=torch.float32), [2.0])
    assert mix.dtype == torch.float64 and mix.tolist() == [0.25, 0.75]  # k = 1: itself
    refuses(lambda: mixture_distribution(torch.tensor([0.5, 0.5]), [1.0, 1.0]), r"\[k, d_vocab\]")


def test_selection_compares_in_float64_and_records_tau() -> None:
    # float32(0.7) = 0.69999998..., below tau = 0.7 in float64 (above float32(0.7)'s tau)
    probs = torch.tensor([0.7, 0.3], dtype=torch.float32)
    sel = select_from_probs(probs, 0.7, max_parallel=None)
    assert sel.fell_back and sel.n_qualifying == 0 and sel.token_ids == (0,)
    assert select_from_probs(probs, 0.25, max_parallel=None).threshold == 0.25


def test_many_ties_are_kept_in_id_order() -> None:
    p = torch.full((5000,), 1 / 5000, dtype=torch.float64)
    sel = select_from_probs(p, 1 / 5000, max_parallel=10)
    assert sel.token_ids == tuple(range(10)) and sel.n_qualifying == 5000


@pytest.mark.parametrize("cap", [True, 0])
def test_max_parallel_errors_name_it(cap) -> None:
    with pytest.raises(ValueError, match="max_parallel"):
        select(torch.zeros(4), 0.1, max_parallel=cap)
    with pytest.raises(ValueError, match="max_parallel"):
        select_from_probs(torch.full((4,), 0.25), 0.1, max_parallel=cap)


def test_non_finite_logits_and_bad_probs_each_alone() -> None:
    with pytest.raises(ValueError, match="NaN or \\+inf"):
        probabilities(torch.tensor([0.0, math.nan]))
    with pytest.raises(ValueError, match="NaN or \\+inf"):
        probabilities(torch.tensor([0.0, math.inf]))
    with pytest.raises(ValueError, match="whole vocabulary"):  # one of two rows all -inf
        probabilities(torch.tensor([[0.0, 1.0], [-math.inf, -math.inf]]))
    with pytest.raises(ValueError, match="NaN or negative"):
        select_from_probs(torch.tensor([0.5, math.nan]), 0.1, max_parallel=None)
    refuses(lambda: select_from_probs(torch.full((2, 2), 0.25), 0.1, max_parallel=None), "1-D")


# ---------------------------------------------------------------- pruning


def test_score_members_single_query_key_zero_single_member() -> None:
    # [layer 1, head 2, query 1, key 3]; heads 0.2/0.4 on key 0 -> mean 0.3, max 0.4
    att = torch.tensor([[[[0.2, 0.3, 0.5]], [[0.4, 0.1, 0.5]]]], dtype=torch.float32)
    mean = score_members(att, [0], head_agg="mean", query_agg="sum")
    assert mean.dtype == torch.float64 and mean.tolist() == pytest.approx([0.3], abs=1e-7)
    both = score_members(att, [0, 1], head_agg="max", query_agg="mean")
    assert both.tolist() == pytest.approx([0.4, 0.3], abs=1e-7)
    refuses(lambda: score_members(att[0], [0], head_agg="mean", query_agg="mean"), "must be \\[")


def test_one_layer_model_and_hard_mode_config() -> None:
    assert resolve_layers("all", 1) == [0]
    config = PruningConfig(rule=RelativeRule(ratio=0.5), layers=[0, 2], mode="hard")
    assert config.describe() == (
        "relative(r=0.5), lookahead=1, layers=0,2, heads=mean, queries=mean, hard"
    )
    with pytest.raises(ValueError, match="lookahead"):
        PruningConfig(rule=RelativeRule(ratio=0.5), lookahead=True)


@pytest.mark.parametrize(
    ("make", "field", "want"),
    [
        (lambda: RelativeRule(ratio=np.float32(0.5)), "ratio", 0.5),
        (lambda: AbsoluteRule(threshold=np.float32(0.25)), "threshold", 0.25),
        (lambda: ProbabilityRatioRule(ratio=np.float32(0.5)), "ratio", 0.5),
        (
            lambda: PruningConfig(rule=RelativeRule(ratio=0.5), lookahead=np.int64(2)),
            "lookahead",
            2,
        ),
        (lambda: PositionScheme(member_offset=np.float32(0.5)), "member_offset", 0.5),
        (lambda: ThresholdSchedule(kind="linear", tau0=np.float32(0.25)), "tau0", 0.25),
    ],
)
def test_numpy_scalars_become_python_numbers(make, field, want) -> None:
    value = getattr(make(), field)
    assert type(value) is type(want) and value == want


def test_distinct_scheme_refuses_an_offset() -> None:
    with pytest.raises(ValueError, match="only applies to kind='shared'"):
        PositionScheme(kind="distinct", member_offset=0.5)


# ---------------------------------------------------------------- schedules


def test_schedule_edges() -> None:
    bez = ThresholdSchedule(kind="bezier", tau0=0.1, tau_final=0.3, c1=1.0, c2=1.0)
    assert bez.at(0.0) == 0.1 and bez.at(1.0) == 0.3
    lin = ThresholdSchedule(kind="linear", tau0=0.1, tau_final=0.3)
    assert lin.at_step(0, 1) == 0.1 and lin.at_step(1, 1) == 0.3
    for kind in ("linear", "exponential", "relu", "bezier"):
        s = ThresholdSchedule(kind=kind, tau0=0.1, tau_final=0.3)
        assert s.at(1.5) == s.at(1.0) == 0.3
    refuses(lambda: ThresholdSchedule(kind="linear", tau0=None), "tau0 must be a number")
