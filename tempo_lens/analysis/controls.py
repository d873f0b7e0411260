"""Controlled comparisons over captured attention (the findings' controls), pure NumPy.

* :func:`distance_matched` — parallel vs generated-singleton keys compared at the same
  query-key distance (in steps): per distance ``d`` the mean attention to parallel keys and
  to singleton keys, combined with the parallel pairs' distance distribution as weights
  (direct standardisation): ``sum_d w_d par_d / sum_d w_d single_d``. Per head, per layer
  and overall (the overall and per-layer values average the per-head means first).
* :func:`depth_bands` / :func:`relative_depth` — the seed's 28-layer bands (0-5 / 6-15 /
  16-27) as relative depth ``(l + 0.5) / L`` with cuts 6/28 and 16/28.
* :func:`normalised_entropy` — per layer and head, the mean over generated queries of
  ``H(row) / log(n visible keys)`` (1 = uniform).
* :func:`size_trend` — per parallel token, ``r_j`` relative to the generated-singleton mean,
  with its set size (for "does the effect scale with n").
* :func:`recovered_positions` — the RoPE position a rotation encodes, read back from an
  unrotated and a rotated key (e.g. ``hook_k`` and ``hook_rot_k``), independent of the
  rotation code: the angle of every rotated pair, unwrapped from the lowest frequency up.

Example:
    >>> res = distance_matched(data)                 # doctest: +SKIP
    >>> res.ratio, res.per_layer.shape               # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from jaxtyping import Float
from numpy.typing import ArrayLike

from tempo_lens.analysis._util import nanmean, safe_ratio
from tempo_lens.analysis.patterns import entropy
from tempo_lens.analysis.received import ReceivedAttention
from tempo_lens.hooks.capture import AttentionData

__all__ = [
    "BANDS",
    "MatchedRatio",
    "depth_bands",
    "distance_matched",
    "normalised_entropy",
    "recovered_positions",
    "relative_depth",
    "size_trend",
]

BANDS = (6 / 28, 16 / 28)
"""Relative-depth cuts of the seed's bands: early < 6/28 <= middle < 16/28 <= late."""


@dataclass
class MatchedRatio:
    """Distance-matched parallel : generated-singleton attention.

    Attributes:
        ratio: Overall ratio (NaN without a common distance).
        per_layer: ``[layer]`` ratios. per_head: ``[layer, head]`` ratios.
        distances: The distances (steps) both groups had.
        n_parallel_pairs / n_singleton_pairs: (query, key) pairs that entered.
    """

    ratio: float
    per_layer: np.ndarray
    per_head: np.ndarray
    distances: list[int]
    n_parallel_pairs: int
    n_singleton_pairs: int


def _groups(data: AttentionData, include_sink: bool) -> tuple[np.ndarray, np.ndarray]:
    st = data.state
    n = len(st)
    par = np.array([st.is_parallel(i) for i in range(n)], dtype=bool)
    single = np.array([st.steps[i] >= 0 and not par[i] for i in range(n)], dtype=bool)
    if not include_sink and n:
        par[0] = single[0] = False
    return par, single


def distance_matched(data: AttentionData, *, include_sink: bool = False) -> MatchedRatio:
    """Parallel vs generated-singleton received attention at matched query-key distance.

    Only (query, key) pairs with ``step(query) > step(key)`` where the key is visible to the
    query under the TEMPO mask (per layer: within a sliding window's logical distance)
    enter (as in :func:`received_attention`).
    """
    st = data.state
    steps = np.asarray(st.steps)
    par, single = _groups(data, include_sink)
    n_l, n_h = len(data.layers), len(data.heads)
    max_d = max(st.n_steps, 1)
    sums = np.zeros((2, n_l, n_h, max_d + 1))
    counts = np.zeros((2, n_l, max_d + 1))  # per layer: a local layer sees its window only
    for s in data.steps:
        if s < 1:
            continue
        q = data.query_indices(s)
        rows = data.rows(s).astype(np.float64)
        k = rows.shape[-1]
        vis = data.visible(q, k) & (steps[None, None, :k] < s)  # layer q key
        dist = s - steps[:k]
        for g, mask in enumerate((par[:k], single[:k])):
            sel = vis & mask[None, None, :]
            if not sel.any():
                continue
            for d in np.unique(dist[mask & (steps[:k] >= 0)]):
                m = sel & (dist == d)[None, None, :]
                if m.any():
                    sums[g, :, :, d] += np.einsum("lhqk,lqk->lh", rows, m)
                    counts[g, :, d] += m.sum(axis=(1, 2))
    common = np.nonzero((counts[0].min(0) > 0) & (counts[1].min(0) > 0))[0]
    w = counts[0][:, None, common]  # l 1 d
    if not len(common):
        nan = np.full((n_l, n_h), np.nan)
        return MatchedRatio(float("nan"), nan[:, 0].copy(), nan, [], 0, 0)
    means = sums[:, :, :, common] / counts[:, :, None, common]  # g l h d
    num, den = (means[0] * w).sum(-1), (means[1] * w).sum(-1)  # l h
    return MatchedRatio(
        ratio=float(safe_ratio(num.mean(), den.mean())),
        per_layer=safe_ratio(num.mean(1), den.mean(1)),
        per_head=safe_ratio(num, den),
        distances=[int(d) for d in common],
        n_parallel_pairs=int(counts[0][:, common].max(0).sum()),
        n_singleton_pairs=int(counts[1][:, common].max(0).sum()),
    )


def relative_depth(n_layers: int) -> np.ndarray:
    """``(l + 0.5) / n_layers`` for every layer."""
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    return (np.arange(n_layers) + 0.5) / n_layers


def depth_bands(n_layers: int) -> np.ndarray:
    """Band of every layer: ``"early"``, ``"middle"`` or ``"late"`` (see :data:`BANDS`)."""
    return band_of(relative_depth(n_layers))


def band_of(rel: ArrayLike) -> np.ndarray:
    """The band (``"early"``, ``"middle"``, ``"late"``) of each relative depth (:data:`BANDS`)."""
    r = np.asarray(rel, dtype=np.float64)
    return np.where(r < BANDS[0], "early", np.where(r < BANDS[1], "middle", "late"))


def normalised_entropy(data: AttentionData) -> Float[np.ndarray, "layer head"]:
    """Mean over generated queries of ``H(row) / log(n visible)`` per layer and head.

    Queries that see a single key (``log 1 = 0``) are left out. On a sliding-window layer
    the visible keys are those within the window (by logical distance).
    """
    total = np.zeros((len(data.layers), len(data.heads)))
    n = np.zeros((len(data.layers), 1))
    for s in data.steps:
        if s < 0:
            continue
        q = data.query_indices(s)
        rows = data.rows(s)
        n_vis = data.visible(q, rows.shape[-1]).sum(2)  # layer q (a window per layer)
        ok = n_vis > 1
        if not ok.any():
            continue
        h = entropy(rows)  # layer head q
        ratio = h / np.log(np.where(ok, n_vis, 2))[:, None, :]
        total += np.where(ok[:, None, :], ratio, 0.0).sum(-1)
        n[:, 0] += ok.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def size_trend(received: ReceivedAttention) -> pd.DataFrame:
    """Rows ``index, set_size, relative`` for every parallel token with receivers.

    ``relative = r_j / mean r of the generated singletons`` (NaN without singletons).
    """
    tok = received.tokens
    gen_single = tok[(tok["step"] >= 0) & (tok["set_size"] == 1) & (tok["group"] != "sink")]
    base = nanmean(gen_single["received"].to_numpy(float)) if len(gen_single) else np.nan
    par = tok[(tok["group"] == "parallel") & (tok["n_receivers"] > 0)]
    rel = safe_ratio(par["received"].to_numpy(float), np.full(len(par), base))
    return pd.DataFrame(
        {"index": par["index"].to_numpy(), "set_size": par["set_size"].to_numpy(), "relative": rel}
    )


def recovered_positions(
    k: Float[np.ndarray, "pos d_head"],
    rot_k: Float[np.ndarray, "pos d_head"],
    inv_freq: Float[np.ndarray, " pairs"],
    *,
    adjacent_pairs: bool = False,
) -> Float[np.ndarray, " pos"]:
    """The position ``p`` with ``rot_k = R(p) k`` for every row (NaN where undefined).

    Each rotated pair ``(a, b)`` turns by ``theta_i p`` (mod 2 pi); the angle is read as
    ``atan2(a r_b - b r_a, a r_a + b r_b)``. Starting from the lowest frequency
    (unambiguous while ``theta_min |p| < pi``), each higher frequency refines the estimate by
    choosing the branch nearest to it, so the result has the precision of the highest
    frequency. Pairs with a (near-)zero key are skipped.

    Args:
        k: Unrotated keys (one head).
        rot_k: The same keys rotated.
        inv_freq: ``theta_i`` per pair (radians per position).
        adjacent_pairs: Pairs ``(2i, 2i+1)`` (GPT-J style) instead of ``(i, i + d/2)``.
    """
    k, r = np.asarray(k, np.float64), np.asarray(rot_k, np.float64)
    theta = np.asarray(inv_freq, np.float64)
    half = len(theta)
    if adjacent_pairs:
        ka, kb, ra, rb = k[:, 0 : 2 * half : 2], k[:, 1 : 2 * half : 2], r[:, 0::2], r[:, 1::2]
        ra, rb = ra[:, :half], rb[:, :half]
    else:
        ka, kb, ra, rb = k[:, :half], k[:, half : 2 * half], r[:, :half], r[:, half : 2 * half]
    phi = np.arctan2(ka * rb - kb * ra, ka * ra + kb * rb)  # pos pair
    norm = np.hypot(ka, kb)
    order = np.argsort(theta)
    out = np.full(len(k), np.nan)
    for row in range(len(k)):
        est = None
        for i in order:
            if norm[row, i] < 1e-6 * max(norm[row].max(), 1e-30):
                continue
            if est is None:
                est = phi[row, i] / theta[i]
                continue
            turns = np.round((theta[i] * est - phi[row, i]) / (2 * np.pi))
            est = (phi[row, i] + 2 * np.pi * turns) / theta[i]
        if est is not None:
            out[row] = est
    return out
