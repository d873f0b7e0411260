"""Statistics primitives, one implementation each: every experiment and analysis uses these.

* :func:`repetition_score` — degeneration: ``1 - distinct n-grams / n-grams``.
* :func:`bootstrap_ci` — seeded percentile bootstrap CI (Efron & Tibshirani 1993, ch. 13).
* :func:`bootstrap_t_ci` — seeded studentized (bootstrap-t) CI of the mean (Efron &
  Tibshirani 1993, sec. 12.5; DiCiccio & Efron 1996): the verdict interval.
* :func:`estimate` — mean, bootstrap-t CI and a direction against a null, computed from them
  (the verdict rule every experiment states before its numbers); "insufficient" below
  :data:`MIN_N` values.

**Calibration (issue 23).** On pure noise a verdict interval should claim a direction
(exclude the null) about 5% of the time. The percentile bootstrap of the mean does so far
more often at small n (20% at n = 4, 10% at n = 10 on normal noise; 14% at n = 10 on a
centred exponential); BCa is no better there and the t interval still gives 9% on the
exponential at n = 10. The bootstrap-t interval stays at 5-7% for normal and centred
exponential noise from n = 6 on (``benchmarks/stats_calibration.py``; the table is in
``docs/analysis.md``), and a direction needs :data:`MIN_N` = 10 values by default.
* :func:`cross_fitted_best` — the held-out value of "the best of many cells" (the head, the
  layer x beta of largest effect): the cell is chosen on the other folds of prompts and
  measured on the held-out fold (cross-fitting, Chernozhukov et al. 2018), so the maximum's
  selection bias does not enter the estimate.
* :func:`paired_tests` — Wilcoxon signed-rank (two-sided; the primary test), paired t,
  Cohen's ``d_z = mean(d) / sd(d)`` and the matched-pairs rank-biserial correlation.
* :func:`auc` — ROC AUC as the Mann–Whitney probability ``P(score+ > score-)``, ties 1/2
  (Hanley & McNeil 1982).
* :func:`within_group_auc` — the same over (positive, negative) pairs of one group only
  (e.g. the supported member against its siblings), pooled over the groups' pairs.
* :func:`cohens_kappa` — agreement of two label sequences beyond chance (Cohen 1960).
* :func:`rank_correlation` — Spearman's rho or Kendall's tau-b with its p-value (scipy).
* :func:`logistic_regression` — maximum-likelihood logistic regression (statsmodels) with
  cluster-robust (sandwich) standard errors when clusters are given (Cameron & Miller 2015).
* :func:`conditional_logit` — McFadden's conditional logit stratified by group (statsmodels
  ``ConditionalLogit``; Chamberlain 1980) with the same cluster-robust sandwich (issue 23:
  claim 5 within parallel sets).

Size: over the 500-line budget because these are the only statistics primitives (one
implementation each, shared by every experiment, with their calibration notes); splitting
the regressions from the intervals would separate :class:`LogisticFit` from its two fits,
and :func:`cross_fitted_best` is :func:`estimate` applied to held-out selections.

Run-level statistics of ``tempo-lens stats`` live in :mod:`tempo_lens.analysis.run_stats`.

**Non-finite values: one policy, drop and count.** Every primitive drops NaN and ±inf
before computing (paired and row-wise inputs drop the whole pair or row), and reports how
many it dropped: :class:`PairedTests`, :class:`Estimate` and :class:`LogisticFit` carry
``n_dropped`` next to ``n`` (the values that entered); the primitives that return plain
numbers (:func:`bootstrap_ci`, :func:`auc`, :func:`rank_correlation`) drop the same way,
and :func:`n_non_finite` counts what they dropped. A statistic that is undefined on what
remains (too few values, no variance) is NaN, which the JSON writers store as ``null``.
:func:`cohens_kappa` compares labels, not numbers, and drops nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as sps

__all__ = [
    "MIN_N",
    "Estimate",
    "PairedTests",
    "auc",
    "bootstrap_ci",
    "bootstrap_t_ci",
    "cohens_kappa",
    "conditional_logit",
    "CrossFitted",
    "cross_fitted_best",
    "estimate",
    "logistic_regression",
    "LogisticFit",
    "n_non_finite",
    "paired_tests",
    "rank_correlation",
    "repetition_score",
    "within_group_auc",
]


MIN_N = 10
"""Fewest finite values before :func:`estimate` claims a direction (else "insufficient")."""


def n_non_finite(*arrays: ArrayLike) -> int:
    """How many values (pairs/rows, for several arrays) the primitives here would drop.

    Examples:
        >>> n_non_finite([1.0, float("nan"), 2.0], [0.0, 0.0, float("inf")])
        2
    """
    ok = _finite_mask(*arrays)
    return int((~ok).sum())


def _finite_mask(*arrays: ArrayLike) -> np.ndarray:
    """True where every array is finite (arrays of one length; rows of 2-d arrays)."""
    mask: np.ndarray | None = None
    for a in arrays:
        x = np.asarray(a, dtype=np.float64)
        m = np.asarray(
            np.isfinite(x) if x.ndim <= 1 else np.isfinite(x).all(axis=tuple(range(1, x.ndim)))
        )
        mask = m if mask is None else mask & m
    return np.ones(0, dtype=bool) if mask is None else np.atleast_1d(mask)


def repetition_score(tokens: Sequence[Any], n: int = 3) -> float:
    """``1 - distinct/total`` over the n-grams of ``tokens`` (0.0 when there are none)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def _finite_sample(values: Sequence[float] | np.ndarray, n_boot: int, level: float) -> np.ndarray:
    """The finite values of ``values`` (float64, flat), after checking the bootstrap settings.

    Raises:
        ValueError: ``n_boot`` not an int >= 1, or ``level`` outside (0, 1).
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be an int >= 1, got {n_boot!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x = np.asarray(values, dtype=np.float64).ravel()
    return x[np.isfinite(x)]


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    statistic: Callable[[np.ndarray], float] = np.mean,
    n_boot: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``statistic`` (seeded; NaN for fewer than 2 values).

    Non-finite values are dropped first (:func:`n_non_finite` counts them).

    Raises:
        ValueError: ``n_boot < 1`` or ``level`` outside (0, 1).
    """
    x = _finite_sample(values, n_boot, level)
    if len(x) < 2:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    boots = (
        np.apply_along_axis(statistic, 1, x[idx]) if statistic is not np.mean else x[idx].mean(1)
    )
    a = (1 - level) / 2
    return (float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a)))


def bootstrap_t_ci(
    values: Sequence[float] | np.ndarray,
    *,
    n_boot: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Studentized (bootstrap-t) CI of the mean (seeded; NaN for fewer than 2 values).

    Resamples ``x*`` (with replacement, ``default_rng(seed)``), forms
    ``t* = (mean(x*) - mean(x)) / se(x*)`` with ``se = sd(ddof=1) / sqrt(n)``, and returns
    ``(mean - q(1 - a) * se, mean - q(a) * se)``, ``a = (1 - level) / 2``, with ``q`` the
    quantiles of ``t*`` (Efron & Tibshirani 1993, *An Introduction to the Bootstrap*,
    sec. 12.5; DiCiccio & Efron 1996, *Statist. Sci.* 11(3)). It is second-order accurate,
    so unlike the percentile interval (:func:`bootstrap_ci`) it keeps its coverage at small
    n and under skew; the measured false-direction rates are in ``docs/analysis.md``.
    A resample without spread gives ``t* = ±inf`` (0 if its mean is the sample's), so the
    interval may be infinite; values without spread give ``(mean, mean)``. Non-finite
    values are dropped first.

    Raises:
        ValueError: ``n_boot < 1`` or ``level`` outside (0, 1).
    """
    x = _finite_sample(values, n_boot, level)
    n = len(x)
    if n < 2:
        return (math.nan, math.nan)
    mean, se = float(x.mean()), float(x.std(ddof=1)) / math.sqrt(n)
    if se == 0:
        return (mean, mean)
    rng = np.random.default_rng(seed)
    xb = x[rng.integers(0, n, size=(n_boot, n))]
    diff = xb.mean(1) - mean
    se_b = xb.std(1, ddof=1) / math.sqrt(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(diff == 0, 0.0, diff / se_b)
    a = (1 - level) / 2
    q_lo, q_hi = np.quantile(t, [a, 1 - a], method="inverted_cdf")
    with np.errstate(invalid="ignore", over="ignore"):
        return (float(mean - q_hi * se), float(mean - q_lo * se))


@dataclass
class PairedTests:
    """Paired comparison of ``a`` (parallel) vs ``b`` (non-parallel) across prompts.

    ``n`` pairs entered; ``n_dropped`` pairs were dropped for a non-finite value.
    """

    n: int
    mean_difference: float
    wilcoxon_statistic: float
    wilcoxon_p: float
    t_statistic: float
    t_p: float
    cohens_dz: float
    rank_biserial: float
    n_dropped: int = 0


def paired_tests(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> PairedTests:
    """Wilcoxon signed-rank, paired t, Cohen's d_z and rank-biserial (NaN where undefined).

    A pair with a non-finite value is dropped (counted in ``n_dropped``).
    """
    xa, xb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if xa.shape != xb.shape:
        raise ValueError(f"paired samples differ in length: {xa.shape} vs {xb.shape}")
    xa, xb = xa.ravel(), xb.ravel()
    ok = np.isfinite(xa) & np.isfinite(xb)
    dropped = int((~ok).sum())
    a, b = xa[ok], xb[ok]
    d = a - b
    n = len(d)
    nan = float("nan")
    w_stat = w_p = t_stat = t_p = dz = rb = nan
    nz = d[d != 0]
    if len(nz) >= 1:
        ranks = sps.rankdata(np.abs(nz))
        rp, rm = ranks[nz > 0].sum(), ranks[nz < 0].sum()
        rb = float((rp - rm) / (rp + rm))
        w = sps.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided")
        w_stat, w_p = float(w.statistic), float(w.pvalue)
    if n >= 2:
        sd = float(np.std(d, ddof=1))
        if sd > 0:
            dz = float(np.mean(d) / sd)
            t = sps.ttest_rel(a, b)
            t_stat, t_p = float(t.statistic), float(t.pvalue)
    mean = float(np.mean(d)) if n else nan
    return PairedTests(n, mean, w_stat, w_p, t_stat, t_p, dz, rb, dropped)


@dataclass(frozen=True)
class Estimate:
    """A mean over prompts with its bootstrap-t CI and the direction they support.

    Attributes:
        mean: Mean of the finite values (NaN when none).
        ci: ``(low, high)`` bootstrap-t CI of the mean at ``level`` (:func:`bootstrap_t_ci`).
        n: Number of finite values that entered.
        null: The value the direction is judged against.
        direction: ``"above"`` (CI low > null), ``"below"`` (CI high < null),
            ``"inconclusive"`` (the CI contains the null) or ``"insufficient"``
            (fewer than ``min_n`` values).
        level: Confidence level of the CI.
        n_dropped: Non-finite values dropped before computing.
    """

    mean: float
    ci: tuple[float, float]
    n: int
    null: float
    direction: Literal["above", "below", "inconclusive", "insufficient"]
    level: float = 0.95
    n_dropped: int = 0

    def verdict(self, above: str, below: str) -> str:
        """``above`` / ``below`` for those directions, else the direction itself."""
        return {"above": above, "below": below}.get(self.direction, self.direction)


def estimate(
    values: ArrayLike,
    *,
    null: float = 0.0,
    min_n: int = MIN_N,
    level: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> Estimate:
    """Mean, seeded bootstrap-t CI and direction against ``null`` (non-finite values dropped).

    The direction is "above" / "below" when the CI (:func:`bootstrap_t_ci`) excludes
    ``null``, "inconclusive" when it contains it, and "insufficient" with fewer than
    ``min_n`` finite values (default :data:`MIN_N` = 10). On pure noise the rate of a
    claimed direction stays at about ``1 - level`` (calibration table: ``docs/analysis.md``).

    Raises:
        ValueError: ``min_n < 1`` or ``level`` outside (0, 1).
    """
    if min_n < 1:
        raise ValueError(f"min_n must be >= 1, got {min_n}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x = np.asarray(values, dtype=np.float64).ravel()
    dropped = int((~np.isfinite(x)).sum())
    x = x[np.isfinite(x)]
    mean = float(x.mean()) if len(x) else math.nan
    lo, hi = bootstrap_t_ci(x, n_boot=n_boot, level=level, seed=seed)
    direction: Literal["above", "below", "inconclusive", "insufficient"]
    if len(x) < min_n:
        direction = "insufficient"
    elif lo > null:
        direction = "above"
    elif hi < null:
        direction = "below"
    else:
        direction = "inconclusive"
    return Estimate(mean, (lo, hi), len(x), null, direction, level, dropped)


@dataclass(frozen=True)
class CrossFitted:
    """The best cell's effect, estimated on prompts that did not choose it.

    Attributes:
        values: ``(n_units,)`` each unit's value at the cell chosen on the *other* folds
            (NaN where the unit has no value there).
        chosen: fold label -> column index of the cell chosen for that fold's units.
        estimate: :func:`estimate` over ``values`` (the verdict interval).
        in_sample_max: The largest column mean over all units, the naive (upward-biased)
            "best cell" number, kept for comparison only.
    """

    values: np.ndarray
    chosen: dict[Any, int]
    estimate: Estimate
    in_sample_max: float


def cross_fitted_best(
    values: ArrayLike,
    folds: ArrayLike,
    *,
    null: float = 0.0,
    min_n: int = MIN_N,
    level: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> CrossFitted:
    """Cross-fitted estimate of the largest cell mean of a units x cells table.

    Picking the cell (a head, a layer x beta) of largest mean and reporting that mean on the
    same units is biased upward: with many null cells the maximum of their noise is
    positive. Here, for each fold, the cell of largest mean over the units of the *other*
    folds is chosen and the fold's own units are measured at it; the resulting one value per
    unit enters :func:`estimate` (cross-fitting / sample splitting: Chernozhukov et al. 2018,
    "Double/debiased machine learning", sec. 3; Cox 1975, "A note on data-splitting").
    On cells that are all null the CI covers the null at about ``level`` (tested by
    simulation), while the in-sample maximum does not.

    Args:
        values: ``(n_units, n_cells)``; non-finite entries are missing (left out of the
            means, and a unit missing at its chosen cell is dropped and counted).
        folds: ``(n_units,)`` fold label per unit, at least two distinct labels.
        null: The value the direction is judged against (as :func:`estimate`).
        min_n: Fewest held-out values before a direction is claimed.
        level: Confidence level of the CI.
        n_boot: Bootstrap resamples of the CI.
        seed: Seed of the bootstrap.

    Returns:
        :class:`CrossFitted`. Ties between cells go to the lowest column index.

    Raises:
        ValueError: ``values`` not 2-D or without cells, ``folds`` of another length or
            with a missing label (None / NaN), fewer than two folds, or a fold whose
            complement has no finite value in any cell.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"values must be 2-D (units x cells), got shape {x.shape}")
    if x.shape[1] == 0:
        raise ValueError(f"values has no cells (shape {x.shape})")
    if np.ndim(folds) != 1 or len(folds) != x.shape[0]:  # type: ignore[arg-type]
        raise ValueError(
            f"folds must have one label per unit ({x.shape[0]}), got shape {np.shape(folds)}"
        )
    f = np.asarray(folds, dtype=object)  # object: 0 and "0" stay two labels
    missing = [i for i, v in enumerate(f) if v is None or (isinstance(v, float) and v != v)]
    if missing:
        raise ValueError(f"folds: missing label (None/NaN) at unit(s) {missing[:5]}")
    labels = list(dict.fromkeys(f.tolist()))
    if len(labels) < 2:
        raise ValueError(f"cross-fitting needs at least two folds, got {labels}")
    x = np.where(np.isfinite(x), x, np.nan)

    def column_means(a: np.ndarray) -> np.ndarray:  # -inf for a cell without a value
        n = np.isfinite(a).sum(axis=0)
        return np.where(n > 0, np.nansum(a, axis=0) / np.maximum(n, 1), -np.inf)

    out = np.full(x.shape[0], np.nan)
    chosen: dict[Any, int] = {}
    for lab in labels:
        held = f == lab
        means = column_means(x[~held])
        if np.isneginf(means).all():
            raise ValueError(f"fold {lab!r}: the other folds have no finite value in any cell")
        j = int(np.argmax(means))
        chosen[lab] = j
        out[held] = x[held, j]
    est = estimate(out, null=null, min_n=min_n, level=level, n_boot=n_boot, seed=seed)
    return CrossFitted(out, chosen, est, float(column_means(x).max()))


def auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """ROC AUC: ``P(score of a positive > score of a negative)``, ties counting 1/2.

    Non-finite scores are dropped. NaN without both classes. Equals
    ``sklearn.metrics.roc_auc_score(labels, scores)``.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in shape: {s.shape} vs {y.shape}")
    ok = np.isfinite(s)
    pos, neg = s[ok & y], s[ok & ~y]
    if not len(pos) or not len(neg):
        return math.nan
    u = sps.mannwhitneyu(pos, neg, alternative="two-sided").statistic
    return float(u / (len(pos) * len(neg)))


def within_group_auc(scores: ArrayLike, labels: ArrayLike, groups: ArrayLike) -> tuple[float, int]:
    """AUC over the (positive, negative) pairs *within* each group, pooled over all pairs.

    The fraction of pairs of one group in which the positive scores higher, ties 1/2:
    ``sum_g U_g / sum_g n+_g n-_g`` with ``U_g = auc_g * n+_g * n-_g`` (:func:`auc` per
    group, so each group's pairs weigh one each). Non-finite scores are dropped; a group
    without both classes contributes no pair.

    Args:
        scores: ``[n]`` scores.
        labels: ``[n]`` truthy = positive.
        groups: ``[n]`` group keys (any hashable, e.g. a parallel set's step).

    Returns:
        ``(auc, n_pairs)``; the AUC is NaN when no group has a pair.

    Raises:
        ValueError: the three arrays differ in shape.

    >>> within_group_auc([3, 1, 2, 0, 5], [1, 0, 0, 1, 0], ["a", "a", "a", "b", "b"])
    (0.6666666666666666, 3)
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    g = np.asarray(groups)
    if not s.shape == y.shape == g.shape:
        raise ValueError(f"scores, labels, groups differ in shape: {s.shape}, {y.shape}, {g.shape}")
    ok = np.isfinite(s)
    wins, pairs = 0.0, 0
    for key in dict.fromkeys(g.tolist()):  # first-seen order; a plain loop, groups are few
        sel = g == key
        n = int((ok & sel & y).sum()) * int((ok & sel & ~y).sum())
        if n:
            wins += auc(s[sel], y[sel]) * n
            pairs += n
    return (wins / pairs if pairs else math.nan), pairs


def cohens_kappa(a: ArrayLike, b: ArrayLike) -> float:
    """Cohen's kappa of two label sequences (any hashable labels).

    ``(p_o - p_e) / (1 - p_e)``; NaN for empty input or when chance agreement is 1.
    Equals ``sklearn.metrics.cohen_kappa_score(a, b)``.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"label sequences differ in shape: {a.shape} vs {b.shape}")
    if not a.size:
        return math.nan
    labels = np.union1d(a, b)
    pa = np.array([(a == v).mean() for v in labels])
    pb = np.array([(b == v).mean() for v in labels])
    po, pe = float((a == b).mean()), float((pa * pb).sum())
    return (po - pe) / (1 - pe) if pe < 1 else math.nan


def rank_correlation(
    x: ArrayLike,
    y: ArrayLike,
    method: Literal["spearman", "kendall"] = "spearman",
) -> tuple[float, float]:
    """``(coefficient, two-sided p)``; pairs with a non-finite value are dropped.

    NaN when fewer than 3 pairs remain or either side is constant.
    """
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.shape != ya.shape:
        raise ValueError(f"x and y differ in shape: {xa.shape} vs {ya.shape}")
    if method not in ("spearman", "kendall"):
        raise ValueError(f"method must be 'spearman' or 'kendall', got {method!r}")
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[ok], ya[ok]
    if len(xa) < 3 or np.ptp(xa) == 0 or np.ptp(ya) == 0:
        return (math.nan, math.nan)
    r = sps.spearmanr(xa, ya) if method == "spearman" else sps.kendalltau(xa, ya)
    return (float(r.statistic), float(r.pvalue))


@dataclass(frozen=True)
class LogisticFit:
    """A fitted logistic regression (one entry per coefficient, ``"const"`` first).

    Attributes:
        names: Coefficient names. coef: Log-odds coefficients. se: Standard errors.
        ci: ``(low, high)`` Wald CIs at ``level``. p: Two-sided Wald p-values.
        n: Observations. n_clusters: Clusters (``None`` without clusters). level: CI level.
        n_dropped: Rows dropped for a non-finite value.
    """

    names: list[str]
    coef: list[float]
    se: list[float]
    ci: list[tuple[float, float]]
    p: list[float]
    n: int
    n_clusters: int | None
    level: float = 0.95
    n_dropped: int = 0

    def get(self, name: str) -> tuple[float, tuple[float, float], float]:
        """``(coef, ci, p)`` of one coefficient."""
        i = self.names.index(name)
        return self.coef[i], self.ci[i], self.p[i]


def _binary_design(
    y: ArrayLike, x: ArrayLike, names: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """``(y, x [n, p], names, finite-row mask)`` of a binary regression, validated.

    Raises:
        ValueError: ``x`` and ``y`` differ in rows, ``names`` in length, or ``y`` is not 0/1.
    """
    ya = np.asarray(y, dtype=np.float64).ravel()
    xa = np.asarray(x, dtype=np.float64)
    xa = xa[:, None] if xa.ndim == 1 else xa
    if xa.shape[0] != len(ya):
        raise ValueError(f"x has {xa.shape[0]} rows for {len(ya)} outcomes")
    labels = [f"x{i}" for i in range(xa.shape[1])] if names is None else list(names)
    if len(labels) != xa.shape[1]:
        raise ValueError(f"{len(labels)} names for {xa.shape[1]} predictors")
    ok = np.isfinite(ya) & np.isfinite(xa).all(1)
    if not set(np.unique(ya[ok])) <= {0.0, 1.0}:
        raise ValueError("y must be 0/1")
    return ya, xa, labels, ok


def logistic_regression(
    y: ArrayLike,
    x: ArrayLike,
    *,
    names: Sequence[str] | None = None,
    groups: ArrayLike | None = None,
    level: float = 0.95,
) -> LogisticFit:
    """Logistic regression of binary ``y`` on the columns of ``x`` plus an intercept.

    Rows with a non-finite value are dropped. With ``groups`` the covariance is
    cluster-robust (statsmodels ``cov_type="cluster"``, with its small-sample correction);
    otherwise it is the inverse observed information.

    Args:
        y: ``[n]`` 0/1 outcomes.
        x: ``[n, p]`` (or ``[n]``) predictors.
        names: ``p`` predictor names (default ``x0, x1, ...``).
        groups: ``[n]`` cluster labels (e.g. the prompt of each row).
        level: Confidence level of the CIs.

    Raises:
        ValueError: shapes differ, ``y`` is not binary, or ``level`` is outside (0, 1).
    """
    import statsmodels.api as sm

    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    ya, xa, labels, ok = _binary_design(y, x, names)
    ya, xa = ya[ok], xa[ok]
    model = sm.Logit(ya, sm.add_constant(xa, has_constant="add"))
    if groups is not None:
        g = np.asarray(groups)[ok]
        codes = np.unique(g, return_inverse=True)[1]
        res = model.fit(disp=0, cov_type="cluster", cov_kwds={"groups": codes})
        n_clusters: int | None = int(codes.max() + 1) if len(codes) else 0
    else:
        res = model.fit(disp=0)
        n_clusters = None
    ci = np.asarray(res.conf_int(alpha=1 - level))
    return LogisticFit(
        names=["const", *labels],
        coef=[float(v) for v in res.params],
        se=[float(v) for v in res.bse],
        ci=[(float(a), float(b)) for a, b in ci],
        p=[float(v) for v in res.pvalues],
        n=int(len(ya)),
        n_clusters=n_clusters,
        level=level,
        n_dropped=int((~ok).sum()),
    )


def conditional_logit(
    y: ArrayLike,
    x: ArrayLike,
    *,
    strata: ArrayLike,
    clusters: ArrayLike,
    names: Sequence[str] | None = None,
    level: float = 0.95,
) -> LogisticFit:
    """Conditional (fixed-effects) logistic regression, stratified, with clustered errors.

    McFadden's conditional logit (Chamberlain 1980): within each stratum (e.g. the members
    of one parallel set) the probability that row ``i`` is the one with ``y = 1`` is
    ``exp(x_i b) / sum_j exp(x_j b)``, so anything constant within a stratum drops out and
    no intercept is fitted. Point estimates: statsmodels ``ConditionalLogit``. Its ``fit``
    ignores ``cov_type``, so the covariance is computed here: the cluster-robust sandwich
    ``H^-1 (sum_c s_c s_c^T) H^-1`` from statsmodels' per-stratum scores summed per
    cluster, with the small-sample factor ``G/(G-1) * (N-1)/(N-K)`` (``G`` clusters,
    ``N`` strata, ``K`` coefficients) that statsmodels applies to ``Logit``; with strata
    of two rows it equals ``Logit`` on the within-pair differences without an intercept,
    ``cov_type="cluster"`` (the test of this function).

    Rows with a non-finite value are dropped; strata without variation in ``y`` carry no
    information and are dropped too (statsmodels does the same).

    Args:
        y: ``[n]`` 0/1 outcomes.
        x: ``[n, p]`` (or ``[n]``) predictors (no intercept column).
        strata: ``[n]`` stratum labels.
        clusters: ``[n]`` cluster labels, constant within a stratum (e.g. the prompt).
        names: ``p`` predictor names (default ``x0, x1, ...``).
        level: Confidence level of the Wald CIs.

    Returns:
        A :class:`LogisticFit` without ``"const"``; ``n`` = strata used,
        ``n_clusters`` = clusters, ``n_dropped`` = rows dropped.

    Raises:
        ValueError: shapes differ, ``y`` is not binary, a stratum spans two clusters,
            fewer than two clusters remain, ``level`` is outside (0, 1), or the model is
            not estimable (a singular information matrix: perfect separation, collinear
            predictors).
    """
    import warnings

    from scipy import stats as st
    from statsmodels.discrete.conditional_models import ConditionalLogit

    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    ya, xa, labels, ok = _binary_design(y, x, names)
    sa, ca = np.asarray(strata).ravel(), np.asarray(clusters).ravel()
    if not len(ya) == len(sa) == len(ca):
        raise ValueError(f"y, strata, clusters have {len(ya)}, {len(sa)}, {len(ca)} rows")
    s_codes = np.unique(sa[ok], return_inverse=True)[1]
    varied = np.zeros(int(s_codes.max()) + 1 if len(s_codes) else 0, dtype=bool)
    for k in range(len(varied)):
        yk = ya[ok][s_codes == k]
        varied[k] = yk.min() != yk.max()
    keep = np.flatnonzero(ok)[varied[s_codes]]
    ya, xa, sa, ca = ya[keep], xa[keep], sa[keep], ca[keep]
    order = list(dict.fromkeys(sa.tolist()))  # statsmodels' stratum order: first appearance
    pairs = set(zip(sa.tolist(), ca.tolist(), strict=True))
    if len(pairs) != len(order):
        raise ValueError("a stratum spans more than one cluster")
    cluster_of = dict(pairs)
    g_codes = np.unique([cluster_of[s] for s in order], return_inverse=True)[1]
    n_clusters = int(g_codes.max() + 1) if len(g_codes) else 0
    if n_clusters < 2:
        raise ValueError(f"need strata from >= 2 clusters, got {n_clusters}")
    model = ConditionalLogit(ya, xa, groups=sa)
    not_estimable = ValueError(
        "the conditional logit is not estimable on these data (singular information "
        "matrix or no finite maximum: perfect separation or collinear predictors)"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = model.fit(method="newton", maxiter=200, disp=False)
        except np.linalg.LinAlgError as e:
            raise not_estimable from e
    params = np.asarray(res.params)
    bread = np.asarray(res.normalized_cov_params)  # inverse of the negative Hessian
    if not (np.isfinite(params).all() and np.isfinite(bread).all()):
        raise not_estimable
    scores = np.array([model.score_grp(g, params) for g in range(model._n_groups)])
    per_cluster = np.zeros((n_clusters, len(params)))
    np.add.at(per_cluster, g_codes, scores)
    n_strata, k = len(order), len(params)
    factor = n_clusters / (n_clusters - 1) * (n_strata - 1) / max(n_strata - k, 1)
    cov = factor * bread @ (per_cluster.T @ per_cluster) @ bread
    se = np.sqrt(np.diag(cov))
    z = st.norm.ppf(0.5 + level / 2)
    return LogisticFit(
        names=labels,
        coef=[float(v) for v in params],
        se=[float(v) for v in se],
        ci=[(float(b - z * s), float(b + z * s)) for b, s in zip(params, se, strict=True)],
        p=[float(2 * st.norm.sf(abs(b / s))) for b, s in zip(params, se, strict=True)],
        n=n_strata,
        n_clusters=n_clusters,
        level=level,
        n_dropped=int(len(np.asarray(y).ravel()) - len(keep)),
    )
