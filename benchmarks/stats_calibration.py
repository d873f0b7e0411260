"""False-direction rate of the candidate verdict intervals on pure noise (issue 23, item 4).

For each distribution (mean 0) and sample size n, draw ``--sims`` samples and count how often
a method claims a direction (its 95% interval excludes 0, or its two-sided p < 0.05). A
calibrated method stays near 5%. Methods, all from scipy:

* ``percentile`` — the percentile bootstrap of the mean (:func:`tempo_lens.analysis.stats.
  bootstrap_ci`'s method; the verdict interval before issue 23);
* ``bca`` — ``scipy.stats.bootstrap(..., method="BCa")``;
* ``t`` — Student t interval, ``scipy.stats.ttest_1samp(x).confidence_interval()``;
* ``signflip`` — sign-flip permutation test of the mean, ``scipy.stats.permutation_test(...,
  permutation_type="samples")`` (exact up to 2**10 sign patterns, else Monte Carlo);
* ``bootstrap-t`` — :func:`tempo_lens.analysis.stats.bootstrap_t_ci`, the interval of
  :func:`~tempo_lens.analysis.stats.estimate` since issue 23 (``min_n=1`` here, so n < 10
  is judged too; the default ``min_n`` of 10 makes those "insufficient").

The same samples enter every method (one run, side by side).

Run (one process, ~1-3 min on the shared machine)::

    OMP_NUM_THREADS=1 python benchmarks/stats_calibration.py --sims 2000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import stats as sps

from tempo_lens.analysis.stats import bootstrap_t_ci

DISTS = {
    "normal": lambda rng, size: rng.standard_normal(size),
    "exponential-1": lambda rng, size: rng.exponential(1.0, size) - 1.0,
    "lognormal(0,1)": lambda rng, size: rng.lognormal(0.0, 1.0, size) - np.exp(0.5),
}
NS = (4, 6, 10, 20, 48)


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def percentile(x: np.ndarray, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """``[sims]`` True where the percentile bootstrap CI excludes 0."""
    sims, n = x.shape
    out = np.empty(sims, dtype=bool)
    for i in range(sims):
        m = x[i][rng.integers(0, n, size=(n_boot, n))].mean(1)
        lo, hi = np.quantile(m, [0.025, 0.975])
        out[i] = lo > 0 or hi < 0
    return out


def bca(x: np.ndarray, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    res = sps.bootstrap(
        (x,), _mean, axis=-1, vectorized=True, n_resamples=n_boot, method="BCa", rng=rng
    )
    lo, hi = res.confidence_interval
    return (np.nan_to_num(lo) > 0) | (np.nan_to_num(hi) < 0)


def t_interval(x: np.ndarray) -> np.ndarray:
    lo, hi = sps.ttest_1samp(x, 0.0, axis=-1).confidence_interval(0.95)
    return (lo > 0) | (hi < 0)


def signflip(x: np.ndarray, rng: np.random.Generator, n_resamples: int) -> np.ndarray:
    res = sps.permutation_test(
        (x,),
        _mean,
        permutation_type="samples",
        vectorized=True,
        n_resamples=n_resamples,
        axis=-1,
        rng=rng,
    )
    return np.asarray(res.pvalue) < 0.05


def boot_t(x: np.ndarray, n_boot: int) -> np.ndarray:
    out = np.empty(len(x), dtype=bool)
    for i, row in enumerate(x):
        lo, hi = bootstrap_t_ci(row, n_boot=n_boot, seed=i)
        out[i] = lo > 0 or hi < 0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=2000)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    methods = ("percentile", "bca", "t", "signflip", "bootstrap-t")
    print(f"false-direction rate (95% level), {args.sims} samples per cell")
    print("| distribution | n | " + " | ".join(methods) + " |")
    print("|---|---|" + "---|" * len(methods))
    t0 = time.perf_counter()
    for name, draw in DISTS.items():
        for n in NS:
            x = draw(rng, (args.sims, n))
            rates = {
                "percentile": percentile(x, rng, args.n_boot).mean(),
                "bca": bca(x, rng, args.n_boot).mean(),
                "t": t_interval(x).mean(),
                "signflip": signflip(x, rng, args.n_boot).mean(),
                "bootstrap-t": boot_t(x, args.n_boot).mean(),
            }
            cells = " | ".join(f"{100 * rates[m]:.1f}%" for m in methods)
            print(f"| {name} | {n} | {cells} |", flush=True)
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
