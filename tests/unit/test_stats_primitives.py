"""tempo_lens.analysis.stats primitives against scipy / scikit-learn reference values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from tempo_lens.analysis.stats import (
    auc,
    bootstrap_ci,
    bootstrap_t_ci,
    cohens_kappa,
    estimate,
    rank_correlation,
)

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
    above = estimate([1.1, 1.2, 1.3, 1.25, 1.15], null=1.0, min_n=5)
    assert above.direction == "above" and above.ci[0] > 1.0 and above.n == 5
    assert above.ci == bootstrap_t_ci([1.1, 1.2, 1.3, 1.25, 1.15])
    assert estimate([-3.0, -2.0, -2.5, -2.2], null=0.0, min_n=3).direction == "below"
    assert estimate([-1.0, 1.0, -0.5, 0.5], null=0.0, min_n=3).direction == "inconclusive"
    few = estimate([1.0, 2.0, math.nan], min_n=3)
    assert few.direction == "insufficient" and few.n == 2
    assert estimate([1.1, 1.2, 1.3, 1.25, 1.15], null=1.0).direction == "insufficient"  # MIN_N
    assert above.verdict("higher", "lower") == "higher"
    assert estimate([-3.0, -2.0, -2.5, -2.2], min_n=3).verdict("higher", "lower") == "lower"
    assert few.verdict("higher", "lower") == "insufficient"


def test_bootstrap_t_ci_matches_a_studentized_scipy_bootstrap() -> None:
    """The bootstrap-t interval equals one built on scipy.stats.bootstrap's resamples of the
    studentized mean (percentile interval of t*, then ``mean - t* se``), up to Monte Carlo
    error; it is wider than the t interval on a skewed sample's long side."""
    x = np.random.default_rng(7).exponential(1.0, 30)
    m, se = x.mean(), x.std(ddof=1) / np.sqrt(len(x))

    def t_stat(s: np.ndarray, axis: int = -1) -> np.ndarray:
        return (s.mean(axis) - m) / (s.std(axis, ddof=1) / np.sqrt(s.shape[axis]))

    ref = sps.bootstrap(
        (x,), t_stat, n_resamples=20_000, method="percentile", vectorized=True, rng=2
    ).confidence_interval
    lo, hi = bootstrap_t_ci(x, n_boot=20_000, seed=1)
    assert lo == pytest.approx(m - ref.high * se, rel=0.02)
    assert hi == pytest.approx(m - ref.low * se, rel=0.02)
    t_lo, t_hi = sps.ttest_1samp(x, 0.0).confidence_interval(0.95)
    assert hi - m > t_hi - m  # right-skewed data: the upper arm is longer than t's
    assert bootstrap_t_ci(np.full(5, 0.3)) == (0.3, 0.3)
    assert all(math.isnan(v) for v in bootstrap_t_ci([1.0]))


def test_bootstrap_ci_matches_scipy_percentile() -> None:
    x = RNG.normal(size=25)
    lo, hi = bootstrap_ci(x, n_boot=20_000, seed=1)
    ref = sps.bootstrap((x,), np.mean, n_resamples=20_000, method="percentile", random_state=1)
    assert lo == pytest.approx(ref.confidence_interval.low, abs=0.02)
    assert hi == pytest.approx(ref.confidence_interval.high, abs=0.02)


def _logit_data(seed: int, n: int = 300) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    eta = -0.3 + 1.2 * x[:, 0] - 0.7 * x[:, 1]
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    return x, y, rng.integers(0, 25, size=n)


@pytest.mark.parametrize("seed", range(3))
def test_logistic_regression_matches_sklearn_and_fisher_information(seed) -> None:
    from sklearn.linear_model import LogisticRegression

    from tempo_lens.analysis.stats import logistic_regression

    x, y, _ = _logit_data(seed)
    fit = logistic_regression(y, x, names=["a", "b"])
    ref = LogisticRegression(penalty=None, tol=1e-12, max_iter=10_000).fit(x, y)
    want = [float(ref.intercept_[0]), *map(float, ref.coef_[0])]
    assert fit.coef == pytest.approx(want, abs=1e-5)
    # independent standard errors: inverse of the Fisher information X' W X
    xc = np.column_stack([np.ones(len(y)), x])
    p = 1 / (1 + np.exp(-xc @ np.asarray(fit.coef)))
    se = np.sqrt(np.diag(np.linalg.inv(xc.T @ (xc * (p * (1 - p))[:, None]))))
    assert fit.se == pytest.approx(list(se), rel=1e-5)
    coef, (lo, hi), pval = fit.get("a")
    z = sps.norm.ppf(0.975)
    assert (lo, hi) == pytest.approx((coef - z * fit.se[1], coef + z * fit.se[1]), rel=1e-9)
    assert pval == pytest.approx(2 * sps.norm.sf(abs(coef / fit.se[1])), rel=1e-6)
    assert fit.n_clusters is None and fit.names == ["const", "a", "b"]


def test_logistic_regression_cluster_robust_sandwich() -> None:
    from tempo_lens.analysis.stats import logistic_regression

    x, y, g = _logit_data(11)
    fit = logistic_regression(y, x, groups=g)
    plain = logistic_regression(y, x)
    assert fit.coef == pytest.approx(plain.coef, abs=1e-9)  # same point estimate
    # independent cluster sandwich: B^-1 (sum_g s_g s_g') B^-1 * G/(G-1) * (N-1)/(N-K)
    xc = np.column_stack([np.ones(len(y)), x])
    p = 1 / (1 + np.exp(-xc @ np.asarray(fit.coef)))
    bread = np.linalg.inv(xc.T @ (xc * (p * (1 - p))[:, None]))
    scores = xc * (y - p)[:, None]
    meat = sum(np.outer(s, s) for s in (scores[g == c].sum(0) for c in np.unique(g)))
    n_g, n, k = len(np.unique(g)), len(y), xc.shape[1]
    cov = bread @ meat @ bread * n_g / (n_g - 1) * (n - 1) / (n - k)
    assert fit.se == pytest.approx(list(np.sqrt(np.diag(cov))), rel=1e-6)
    assert fit.n_clusters == n_g


def test_logistic_regression_bad_input() -> None:
    from tempo_lens.analysis.stats import logistic_regression

    with pytest.raises(ValueError, match="0/1"):
        logistic_regression([0, 2, 1], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="rows"):
        logistic_regression([0, 1], [[1.0], [2.0], [3.0]])
