"""tempo_lens.analysis.stats primitives against scipy / scikit-learn reference values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from tempo_lens.analysis.stats import auc, bootstrap_ci, cohens_kappa, estimate, rank_correlation

RNG = np.random.default_rng(7)


@pytest.mark.parametrize("seed", range(5))
def test_auc_equals_sklearn(seed) -> None:
    rng = np.random.default_rng(seed)
    scores = np.round(rng.normal(size=40), 1)  # rounding makes ties
    labels = rng.random(40) < 0.4
    assert auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_auc_edge_cases() -> None:
    assert math.isnan(auc([0.1, 0.2], [True, True]))
    assert auc([np.nan, 1.0, 0.0], [True, True, False]) == 1.0  # NaN dropped
    with pytest.raises(ValueError, match="shape"):
        auc([1.0], [True, False])


@pytest.mark.parametrize("seed", range(5))
def test_kappa_equals_sklearn(seed) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 3, 50)
    b = np.where(rng.random(50) < 0.6, a, rng.integers(0, 3, 50))
    assert cohens_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)
    ab, bb = a > 0, b > 0
    assert cohens_kappa(ab, bb) == pytest.approx(cohen_kappa_score(ab, bb), abs=1e-12)


def test_kappa_undefined() -> None:
    assert math.isnan(cohens_kappa([], []))
    assert math.isnan(cohens_kappa([1, 1], [1, 1]))  # chance agreement 1


@pytest.mark.parametrize("method", ["spearman", "kendall"])
def test_rank_correlation_equals_scipy(method) -> None:
    x, y = RNG.normal(size=30), RNG.normal(size=30)
    y[:10] += x[:10]
    ref = sps.spearmanr(x, y) if method == "spearman" else sps.kendalltau(x, y)
    r, p = rank_correlation(x, y, method)
    assert (r, p) == pytest.approx((ref.statistic, ref.pvalue), abs=1e-12)
    assert all(math.isnan(v) for v in rank_correlation([1, 2, 3], [5, 5, 5]))


def test_estimate_direction_from_ci() -> None:
    above = estimate([1.1, 1.2, 1.3, 1.25, 1.15], null=1.0)
    assert above.direction == "above" and above.ci[0] > 1.0 and above.n == 5
    assert above.ci == bootstrap_ci([1.1, 1.2, 1.3, 1.25, 1.15])
    assert estimate([-3.0, -2.0, -2.5], null=0.0).direction == "below"
    assert estimate([-1.0, 1.0, -0.5, 0.5], null=0.0).direction == "inconclusive"
    few = estimate([1.0, 2.0, math.nan], min_n=3)
    assert few.direction == "insufficient" and few.n == 2
    assert above.verdict("higher", "lower") == "higher"
    assert estimate([-3.0, -2.0, -2.5]).verdict("higher", "lower") == "lower"
    assert few.verdict("higher", "lower") == "insufficient"


def test_bootstrap_ci_matches_scipy_percentile() -> None:
    x = RNG.normal(size=25)
    lo, hi = bootstrap_ci(x, n_boot=20_000, seed=1)
    ref = sps.bootstrap((x,), np.mean, n_resamples=20_000, method="percentile", random_state=1)
    assert lo == pytest.approx(ref.confidence_interval.low, abs=0.02)
    assert hi == pytest.approx(ref.confidence_interval.high, abs=0.02)
