"""conditional_logit against an independent fit: statsmodels Logit on within-pair differences.

With strata of two rows, one of them the event, the conditional likelihood equals a logistic
regression without intercept of "the first row is the event" on ``x_first - x_second``;
statsmodels' cluster-robust ``Logit`` then gives the same coefficients, standard errors and
p-values as our sandwich around ``ConditionalLogit``.
"""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm

from tempo_lens.analysis.stats import conditional_logit


def _pairs(n_sets: int = 200, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_sets):
        x = rng.normal(size=(2, 2))
        u = x @ [0.8, -0.4] + rng.gumbel(size=2)
        for i in range(2):
            rows.append((s, s // 4, float(i == np.argmax(u)), *x[i]))
    return np.array(rows)


def test_equals_logit_on_pair_differences_with_cluster_robust_errors() -> None:
    a = _pairs()
    fit = conditional_logit(a[:, 2], a[:, 3:], strata=a[:, 0], clusters=a[:, 1], names=["a", "b"])
    first, second = a[0::2], a[1::2]
    ref = sm.Logit(first[:, 2], first[:, 3:] - second[:, 3:]).fit(
        disp=0, cov_type="cluster", cov_kwds={"groups": first[:, 1].astype(int)}
    )
    np.testing.assert_allclose(fit.coef, ref.params, rtol=1e-6)
    np.testing.assert_allclose(fit.se, ref.bse, rtol=1e-6)
    np.testing.assert_allclose(fit.p, ref.pvalues, rtol=1e-5)
    assert fit.n == 200 and fit.n_clusters == 50 and fit.names == ["a", "b"]
    lo, hi = fit.ci[0]
    assert lo < fit.coef[0] < hi


def test_larger_sets_recover_the_generating_coefficients() -> None:
    rng = np.random.default_rng(3)
    rows = []
    for s in range(600):
        k = int(rng.integers(2, 6))
        x = rng.normal(size=(k, 2))
        win = int(np.argmax(x @ [1.0, 0.5] + rng.gumbel(size=k)))
        rows += [(s, s // 6, float(i == win), *x[i]) for i in range(k)]
    a = np.array(rows)
    fit = conditional_logit(a[:, 2], a[:, 3:], strata=a[:, 0], clusters=a[:, 1])
    for (lo, hi), true in zip(fit.ci, (1.0, 0.5), strict=True):
        assert lo < true < hi


def test_strata_without_variation_are_dropped_and_bad_input_refused() -> None:
    a = _pairs(40)
    extra = np.array([[999, 0, 0.0, 0.1, 0.2], [999, 0, 0.0, 0.3, 0.4]])  # no event
    fit = conditional_logit(
        np.r_[a[:, 2], extra[:, 2]],
        np.r_[a[:, 3:], extra[:, 3:]],
        strata=np.r_[a[:, 0], extra[:, 0]],
        clusters=np.r_[a[:, 1], extra[:, 1]],
    )
    assert fit.n == 40 and fit.n_dropped == 2
    with pytest.raises(ValueError, match="more than one cluster"):
        conditional_logit(a[:, 2], a[:, 3:], strata=a[:, 0], clusters=np.arange(len(a)))
    with pytest.raises(ValueError, match="0/1"):
        conditional_logit(a[:, 2] * 2, a[:, 3:], strata=a[:, 0], clusters=a[:, 1])
    with pytest.raises(ValueError, match=">= 2 clusters"):
        conditional_logit(a[:, 2], a[:, 3:], strata=a[:, 0], clusters=np.zeros(len(a)))


def test_perfect_separation_is_refused_and_claim5_gives_no_verdict() -> None:
    """The event is always the row with the larger x: no finite maximum. A clear error
    (not numpy's LinAlgError from deep inside statsmodels), and claim 5 on such members
    says insufficient instead of crashing the summary (a --tiny run hit this in CI)."""
    import pandas as pd

    from tempo_lens.experiments._claim_rows import claim5

    rows = []
    for s in range(12):
        for i, x in enumerate((0.2 + s / 100, 0.8)):
            rows.append((s, s // 3, float(i == 1), x))
    a = np.array(rows)
    with pytest.raises(ValueError, match="not estimable"):
        conditional_logit(a[:, 2], a[:, 3:], strata=a[:, 0], clusters=a[:, 1])
    members = pd.DataFrame(
        {
            "prompt_id": [f"p{int(r[1])}" for r in rows],
            "set_step": [int(r[0]) for r in rows],
            "probability": [0.5] * len(rows),
            "attention": [r[3] for r in rows],
            "heldout_supported": [r[2] for r in rows],
        }
    )
    out = claim5(members, pd.Index(members["prompt_id"].unique()))
    assert out["verdict"] == "insufficient"
