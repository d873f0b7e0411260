"""``stats.cross_fitted_best``: held-out selection of the best cell (R10, R11)."""

from __future__ import annotations

import numpy as np
import pytest

from tempo_lens.analysis.stats import cross_fitted_best


def test_each_fold_is_measured_at_the_cell_the_other_fold_chose() -> None:
    # fold 0 prefers cell 2, fold 1 prefers cell 0: each is measured at the other's choice
    x = np.array(
        [
            [5.0, 0.0, 1.0],
            [7.0, 0.0, 1.0],
            [0.0, 0.0, 3.0],
            [0.0, np.nan, 5.0],
        ]
    )
    r = cross_fitted_best(x, ["a", "a", "b", "b"], min_n=1, n_boot=200)
    assert r.chosen == {"a": 2, "b": 0}
    np.testing.assert_array_equal(r.values, [1.0, 1.0, 0.0, 0.0])
    assert r.estimate.mean == pytest.approx(0.5)
    assert r.in_sample_max == pytest.approx(3.0)  # cell 0: (5 + 7 + 0 + 0) / 4


def test_missing_values_are_left_out_of_the_means_and_dropped_at_the_chosen_cell() -> None:
    x = np.array([[np.nan, 1.0], [9.0, 2.0], [4.0, 0.0], [np.inf, 0.0]])
    r = cross_fitted_best(x, [0, 0, 1, 1], min_n=1, n_boot=200)
    assert r.chosen == {0: 0, 1: 0}  # fold 0 sees cell 0 = 4 (inf is missing), fold 1 sees 9
    assert np.isnan(r.values[0]) and np.isnan(r.values[3])
    assert (r.estimate.n, r.estimate.n_dropped) == (2, 2)


def test_on_null_cells_the_held_out_ci_covers_the_null_and_the_in_sample_max_is_biased() -> None:
    """270 null cells (SmolLM2's heads), 48 prompts in two folds: about 95 % coverage."""
    rng = np.random.default_rng(0)
    folds = np.repeat([0, 1], 24)
    covered, maxima = 0, []
    reps = 200
    for _ in range(reps):
        x = rng.normal(size=(48, 270))
        r = cross_fitted_best(x, folds, n_boot=999, seed=1)
        lo, hi = r.estimate.ci
        covered += lo <= 0.0 <= hi
        maxima.append(r.in_sample_max)
    assert 0.90 <= covered / reps <= 0.99
    assert np.mean(maxima) > 0.3  # E[max of 270 means of 48 N(0,1)] is about 0.39


def test_a_real_best_cell_is_found_in_both_folds() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(scale=0.2, size=(48, 30))
    x[:, 17] += 0.5
    r = cross_fitted_best(x, np.repeat([0, 1], 24))
    assert r.chosen == {0: 17, 1: 17}
    assert r.estimate.direction == "above" and r.estimate.mean == pytest.approx(0.5, abs=0.1)


@pytest.mark.parametrize(
    ("values", "folds", "match"),
    [
        (np.zeros(4), [0, 0, 1, 1], "2-D"),
        (np.zeros((4, 2)), [0, 0, 1], "one label per unit"),
        (np.zeros((4, 2)), [0, 0, 0, 0], "at least two folds"),
        (np.array([[1.0, 1.0], [np.nan, np.nan]]), [0, 1], "fold 0: the other folds"),
        (np.zeros((4, 0)), [0, 0, 1, 1], "no cells"),
        (np.zeros((4, 2)), [0.0, float("nan"), 1.0, 1.0], r"missing label .* \[1\]"),
        (np.zeros((4, 2)), [0, None, 1, 1], "missing label"),
    ],
)
def test_bad_input_is_named(values: np.ndarray, folds: list[int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cross_fitted_best(values, folds)


def test_labels_of_different_types_are_different_folds() -> None:
    x = np.arange(8.0).reshape(4, 2)
    assert set(cross_fitted_best(x, [0, 0, "0", "0"], min_n=1, n_boot=99).chosen) == {0, "0"}
