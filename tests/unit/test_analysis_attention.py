"""Analyses on hand-built attention whose every number is known in advance.

The sequence (one layer, one head, isolated)::

    physical   0    1  | 2    3  | 4  | 5
    step      -1   -1  | 0    0  | 1  | 2
    logical    0    1  | 2    2  | 3  | 4

Rows (visible keys only; row i is the query at physical index i)::

    0: [1]
    1: [.5 .5]
    2: [.2 .3 .5 0 ]            member 0 of set 0 (cannot see 3)
    3: [.1 .1 0  .8]            member 1 of set 0 (cannot see 2)
    4: [.1 .2 .3 .1 .3]
    5: [.3 .1 .2 .2 .1 .1]

Received attention (receivers = queries of later steps that can see the key):
token 1 <- rows 2,3,4,5 = .3 .1 .2 .1 -> .175; token 2 <- rows 4,5 = .3 .2 -> .25;
token 3 <- .1 .2 -> .15; token 4 <- row 5 = .1; token 5: none. Sink (0) excluded.
parallel mean .2; non-parallel (tokens 1, 4) .1375; ratio 1.4545...;
vs generated singletons (token 4) ratio 2. Set totals: set 0 <- rows 4,5: .4, .4 -> .4;
set 1 <- row 5: .1; set ratio 4.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon as scipy_js

from tempo_lens import SequenceState
from tempo_lens.analysis import (
    attention_entropy,
    entropy,
    head_specialisation,
    isolation_check,
    jensen_shannon,
    load_attention,
    received_attention,
    save_attention,
    seed_json,
    sibling_attention,
    sibling_divergence,
    top_context,
)
from tempo_lens.hooks.capture import AttentionData

ROWS = [
    [1.0],
    [0.5, 0.5],
    [0.2, 0.3, 0.5, 0.0],
    [0.1, 0.1, 0.0, 0.8],
    [0.1, 0.2, 0.3, 0.1, 0.3],
    [0.3, 0.1, 0.2, 0.2, 0.1, 0.1],
]


def make_data(rows=ROWS, *, isolate: bool = True, prune: int | None = None) -> AttentionData:
    st = SequenceState.from_sets([7, 8], [[10, 11], [12], [13]], isolate=isolate)
    if prune is not None:
        st.prune(prune, at_step=1)
    n = len(st)
    full = np.zeros((1, 1, n, n), dtype=np.float32)
    for i, r in enumerate(rows):
        full[0, 0, i, : len(r)] = r
    return AttentionData.from_full(st, full, texts=["a", "b", "x", "y", "z", "w"])


def test_rows_are_placed_by_physical_index() -> None:
    data = make_data()
    assert data.steps == [-1, 0, 1, 2]
    assert data.query_indices(0) == [2, 3]
    assert data.step_matrix(0).shape == (2, 4)
    np.testing.assert_allclose(data.step_matrix(1)[0], ROWS[4])
    full = data.full_matrix()
    assert full.shape == (6, 6)
    assert np.all(np.triu(full, 1) == 0)
    np.testing.assert_allclose(full[3], [0.1, 0.1, 0.0, 0.8, 0, 0])
    with pytest.raises(ValueError, match="layer 3 was not captured"):
        data.step_matrix(0, layer=3)


def test_received_attention_exact_numbers() -> None:
    res = received_attention(make_data())
    tok = res.tokens.set_index("index")
    np.testing.assert_allclose(tok["received"].iloc[1:5], [0.175, 0.25, 0.15, 0.1], atol=1e-7)
    assert math.isnan(tok.at[5, "received"])
    assert list(tok["n_receivers"]) == [4, 4, 2, 2, 1, 0]
    assert (
        list(tok["group"])
        == ["sink", "non_parallel", "parallel", "parallel"] + ["non_parallel"] * 2
    )
    assert res.parallel_mean == pytest.approx(0.2)
    assert res.non_parallel_mean == pytest.approx(0.1375)
    assert res.ratio == pytest.approx(0.2 / 0.1375)
    assert res.ratio_generated == pytest.approx(2.0)
    assert (res.n_parallel, res.n_non_parallel, res.n_non_parallel_generated) == (2, 2, 1)
    np.testing.assert_allclose(res.sets["total"], [0.4, 0.1, np.nan], atol=1e-7)
    assert res.set_ratio == pytest.approx(4.0)
    assert res.per_head_ratio.shape == (1, 1)
    assert res.per_head_ratio[0, 0] == pytest.approx(res.ratio)


def test_received_attention_with_sink() -> None:
    res = received_attention(make_data(), include_sink=True)
    # token 0 <- rows 2..5 = .2 .1 .1 .3 -> .175
    assert res.non_parallel_mean == pytest.approx((0.175 + 0.175 + 0.1) / 3)


def test_pruned_token_counts_only_receivers_that_see_it() -> None:
    rows = [*ROWS[:5], [0.3, 0.1, 0.2, 0.0, 0.2, 0.2]]  # key 3 pruned at step 1: row 5 blind
    res = received_attention(make_data(rows, prune=3))
    tok = res.tokens.set_index("index")
    assert tok.at[3, "n_receivers"] == 1
    assert tok.at[3, "received"] == pytest.approx(0.1)
    assert tok.at[3, "pruned_at_step"] == 1
    excluded = received_attention(make_data(rows, prune=3), include_pruned=False)
    assert excluded.n_parallel == 1


def test_isolation_and_sibling_matrix() -> None:
    data = make_data()
    (m,) = sibling_attention(data)
    np.testing.assert_allclose(m.matrix, [[0.5, 0.0], [0.0, 0.8]])
    chk = isolation_check(data)
    assert chk.max_sibling_attention == 0.0 and chk.consistent is True and chk.n_sets == 1
    visible = [*ROWS[:3], [0.1, 0.1, 0.3, 0.5], *ROWS[4:]]
    chk = isolation_check(make_data(visible, isolate=False))
    assert chk.max_sibling_attention == pytest.approx(0.3)
    assert chk.where is not None and (chk.where["query"], chk.where["key"]) == (3, 2)
    assert chk.consistent is True
    # a sibling leak in an isolated sequence is reported as inconsistent
    leaky = isolation_check(make_data(visible, isolate=True))
    assert leaky.consistent is False


def test_top_context() -> None:
    df = top_context(make_data(), k=2)
    first = df[df["member"] == 2]
    assert list(first["key"]) == [1, 0]
    np.testing.assert_allclose(first["attention"], [0.3, 0.2])
    with_self = top_context(make_data(), k=1, exclude_self=False)
    assert list(with_self["key"]) == [2, 3]


def test_jensen_shannon_known_values() -> None:
    assert jensen_shannon(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.0
    assert jensen_shannon(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)
    p, q = np.array([0.4, 0.6]), np.array([0.5, 0.5])
    assert jensen_shannon(p, q) == pytest.approx(scipy_js(p, q, base=2) ** 2)
    div = sibling_divergence(make_data())
    # members 2, 3 over context keys 0, 1: [.2, .3] -> [.4, .6]; [.1, .1] -> [.5, .5]
    assert div["jsd_bits"].iloc[0] == pytest.approx(jensen_shannon(p, q))


def test_entropy_of_uniform_is_log_n() -> None:
    assert entropy(np.full(4, 0.25)) == pytest.approx(math.log(4))
    assert entropy(np.full(8, 0.125), unit="bits") == pytest.approx(3.0)
    assert entropy(np.array([1.0, 0.0, 0.0])) == 0.0
    uniform = [[1.0 / (i + 1)] * (i + 1) for i in range(6)]
    uniform[2] = [1 / 3, 1 / 3, 1 / 3, 0.0]  # isolated: 3 visible keys
    uniform[3] = [1 / 3, 1 / 3, 0.0, 1 / 3]
    res = attention_entropy(make_data(uniform))
    expected = np.mean([math.log(3), math.log(3), math.log(5), math.log(6)])
    assert res.per_head[0, 0] == pytest.approx(expected)
    np.testing.assert_allclose(res.per_query["normalised"], 1.0)
    assert list(res.per_query["n_visible"]) == [3, 3, 5, 6]


def test_head_specialisation_window() -> None:
    df = head_specialisation(make_data(), window=1)
    # local (|logical distance| <= 1): row2 .8, row3 .9, row4 .7, row5 .2
    assert df["local_fraction"].iloc[0] == pytest.approx(0.65)
    assert df["distant_fraction"].iloc[0] == pytest.approx(0.35)


def test_export_round_trip_and_seed_shape(tmp_path) -> None:
    data = make_data()
    save_attention(data, tmp_path)
    back = load_attention(tmp_path)
    assert back.steps == data.steps and back.texts == data.texts
    np.testing.assert_array_equal(back.full_tensor(), data.full_tensor())
    assert back.state.token_ids == data.state.token_ids
    seed = seed_json(data)
    assert set(seed) >= {"position_map", "steps"}
    step0 = seed["steps"][0]
    assert step0["logical_step"] == 0 and step0["physical_positions"] == [2, 3]
    assert step0["tokens"] == ["x", "y"] and step0["token_ids"] == [10, 11]
    np.testing.assert_allclose(step0["attention_matrix"], [ROWS[2], ROWS[3]])
    assert seed["position_map"]["3"] == 2.0
