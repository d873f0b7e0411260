"""Property and worked-number tests for positions, masks and re-rotation (no model)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tempo_lens import PositionScheme, SequenceState, logical_positions
from tempo_lens.masks import ALIVE, visibility
from tempo_lens.rope import delta_cos_sin, rerotate

sizes = st.lists(st.integers(1, 5), min_size=0, max_size=8)


@given(L=st.integers(1, 10), set_sizes=sizes)
def test_shared_positions_are_compacted(L, set_sizes) -> None:
    pos = logical_positions(L, set_sizes, PositionScheme())
    assert pos[:L] == [float(i) for i in range(L)]
    i = L
    for step, k in enumerate(set_sizes):
        assert pos[i : i + k] == [float(L + step)] * k
        i += k
    assert len(pos) == L + sum(set_sizes)


@given(L=st.integers(1, 10), set_sizes=sizes, delta=st.floats(0, 1))
def test_member_offset_positions(L, set_sizes, delta) -> None:
    pos = logical_positions(L, set_sizes, PositionScheme(member_offset=delta))
    i = L
    for step, k in enumerate(set_sizes):
        for r in range(k):
            assert math.isclose(pos[i + r], L + step + r * delta)
        i += k


@given(L=st.integers(1, 10), set_sizes=sizes)
def test_distinct_positions_are_physical(L, set_sizes) -> None:
    pos = logical_positions(L, set_sizes, PositionScheme(kind="distinct"))
    assert pos == [float(i) for i in range(len(pos))]


@settings(max_examples=60)
@given(
    L=st.integers(1, 6),
    set_sizes=st.lists(st.integers(1, 4), min_size=1, max_size=6),
    isolate=st.booleans(),
    prune_seed=st.integers(0, 10_000),
)
def test_mask_properties(L, set_sizes, isolate, prune_seed) -> None:
    state = SequenceState.from_sets(list(range(L)), [[0] * k for k in set_sizes], isolate=isolate)
    rng = torch.Generator().manual_seed(prune_seed)
    for i in range(L, len(state)):
        if torch.rand(1, generator=rng).item() < 0.3:
            state.prune(i, at_step=state.steps[i] + int(torch.randint(0, 3, (1,), generator=rng)))
    m = state.visibility()
    n = len(state)
    assert m.diagonal().all()  # every token sees itself (no empty softmax rows)
    assert not torch.triu(m, diagonal=1).any()  # causal
    for i in range(n):
        for j in range(i):
            si, sj = state.steps[i], state.steps[j]
            siblings = si >= 0 and si == sj
            pruned_before = state.pruned_at[j] is not None and si > state.pruned_at[j]
            expected = not (isolate and siblings) and not pruned_before
            assert bool(m[i, j]) == expected


def test_view_step_hides_tokens_pruned_at_that_step() -> None:
    steps = torch.tensor([-1, 0, 0, 1])
    pruned = torch.tensor([ALIVE, ALIVE, 1, ALIVE])
    q = torch.tensor([3])
    assert visibility(steps, pruned, q, isolate=True)[0].tolist() == [True, True, True, True]
    assert visibility(steps, pruned, q, isolate=True, view_step=2)[0].tolist() == [
        True,
        True,
        False,
        True,
    ]


@given(a=st.floats(-50, 50), b=st.floats(-50, 50), adjacent=st.booleans())
def test_rerotation_composes(a, b, adjacent) -> None:
    inv = 1.0 / (10000 ** (torch.arange(0, 8, 2, dtype=torch.float64) / 8))
    x = torch.randn(1, 1, 2, 8, generator=torch.Generator().manual_seed(1))

    def rot(v, d):
        c, s = delta_cos_sin(torch.tensor([d]), inv, adjacent_pairs=adjacent)
        return rerotate(v, c, s, rotary_dim=8, adjacent_pairs=adjacent)

    assert torch.allclose(rot(rot(x, a), b), rot(x, a + b), atol=1e-4)
    assert torch.allclose(rot(rot(x, a), -a), x, atol=1e-4)
    assert torch.allclose(rot(x, a).norm(), x.norm(), atol=1e-4)  # rotations keep norms


def test_partial_rotary_passes_tail_through() -> None:
    inv = torch.tensor([1.0, 0.1], dtype=torch.float64)
    x = torch.arange(8.0).reshape(1, 1, 1, 8)
    c, s = delta_cos_sin(torch.tensor([-3.0]), inv, adjacent_pairs=False)
    y = rerotate(x, c, s, rotary_dim=4, adjacent_pairs=False)
    assert torch.equal(y[..., 4:], x[..., 4:]) and not torch.equal(y[..., :4], x[..., :4])
    # worked numbers: pair (x0, x2) = (0, 2) rotated by -3 rad
    assert math.isclose(y[0, 0, 0, 0].item(), -2 * math.sin(-3.0), rel_tol=1e-6)


def test_state_validation() -> None:
    with pytest.raises(ValueError, match="at least one"):
        SequenceState([])
    st_ = SequenceState.from_sets([1, 2], [[3, 4]])
    with pytest.raises(ValueError, match="prompt"):
        st_.prune(0, at_step=0)
    with pytest.raises(IndexError):
        st_.prune(9, at_step=0)
    st_.prune(3, at_step=0)
    with pytest.raises(ValueError, match="already"):
        st_.prune(3, at_step=1)
    with pytest.raises(ValueError, match="finite"):
        st_.append_set([5], positions=[float("nan")])
    with pytest.raises(ValueError):
        PositionScheme(member_offset=-1.0)
    assert st_.alive_indices() == [0, 1, 2]
    assert st_.alive_indices(as_of_step=0) == [0, 1, 2, 3]


def test_window_is_by_logical_distance() -> None:
    """Window 2 on [p0 p1 p2 | a b | c]: logical 0 1 2 3 3 4."""
    st = SequenceState.from_sets([0, 1, 2], [[3, 4], [5]], isolate=True)
    allowed = st.visibility(window=2).int()
    assert allowed.tolist() == [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [0, 1, 1, 0, 0, 0],
        [0, 0, 1, 1, 0, 0],
        [0, 0, 1, 0, 1, 0],  # b (physical 4) still sees p2: logical distance 1
        [0, 0, 0, 1, 1, 1],  # c sees both members: logical distance 1, physical 2 and 1
    ]
    assert torch.equal(st.visibility(window=10**6), st.visibility())
    with pytest.raises(ValueError, match="window"):
        visibility(st.steps_tensor(), st.pruned_tensor(), torch.arange(6), isolate=True, window=2)
