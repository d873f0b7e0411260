"""Attention-pattern analyses of a captured TEMPO sequence.

* :func:`sibling_attention` — the intra-step (cross-parallel) matrix of every parallel set:
  entry ``[a, b]`` is the attention member ``a``'s query pays to member ``b``'s key.
* :func:`isolation_check` — the largest attention any member pays to a sibling (``a != b``)
  over all sets, layers and heads. Isolated mode masks siblings with ``-inf`` before the
  softmax, so it must be exactly ``0.0``; in visible mode later siblings see earlier ones,
  so it is ``> 0`` (with probability one for a real model).
* :func:`top_context` — the ``k`` keys each member of a parallel set attends to most.
* :func:`sibling_divergence` — Jensen–Shannon divergence (base 2, in ``[0, 1]`` bits)
  between siblings' attention distributions over the shared context (keys before the set),
  each renormalised to sum to 1.
* :func:`attention_entropy` — Shannon entropy of each query's attention row, in nats
  (``unit="bits"`` for base 2); uniform attention over ``m`` visible keys gives ``log m``.
* :func:`head_specialisation` — per head, the mean fraction of attention to keys within
  ``window`` logical positions of the query (``|pos_q - pos_k| <= window``; siblings and
  the query itself are at distance 0) vs to more distant keys.

Unless stated, an analysis averages attention over the captured layers and heads
(``layer``/``head`` pick one; ``agg`` chooses ``mean``/``max``/``sum``).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from jaxtyping import Float

from tempo_lens.analysis._util import ArrayLike, nanmean, to_numpy
from tempo_lens.hooks.capture import AttentionData
from tempo_lens.io import jsonable
from tempo_lens.isolation import non_isolating

__all__ = [
    "isolation_verdict",
    "EntropyResult",
    "IsolationCheck",
    "SiblingMatrix",
    "attention_entropy",
    "entropy",
    "head_specialisation",
    "isolation_check",
    "jensen_shannon",
    "sibling_attention",
    "sibling_divergence",
    "top_context",
]


def _parallel_steps(data: AttentionData) -> list[int]:
    return [s for s in data.steps if s >= 0 and len(data.state.set_indices[s]) > 1]


@dataclass
class SiblingMatrix:
    """Sibling attention of one set: ``matrix[a, b]`` = member a's query -> member b's key."""

    step: int
    indices: list[int]
    texts: list[str]
    matrix: np.ndarray  # [member, member], aggregated over layers/heads
    per_head: np.ndarray  # [layer, head, member, member]


def sibling_attention(
    data: AttentionData, layer: int | None = None, head: int | None = None, agg: str = "mean"
) -> list[SiblingMatrix]:
    """The cross-parallel attention matrix of every captured parallel set."""
    out = []
    for s in _parallel_steps(data):
        members = data.state.set_indices[s]
        per_head = data.rows(s)[:, :, :, members]
        out.append(
            SiblingMatrix(
                step=s,
                indices=list(members),
                texts=[data.texts[i] for i in members],
                matrix=data.select(per_head, layer, head, agg),
                per_head=per_head,
            )
        )
    return out


@dataclass
class IsolationCheck:
    """The largest sibling attention and whether it matches the mode.

    Attributes:
        isolate: The sequence's mode.
        max_sibling_attention: Max over sets, layers, heads and member pairs ``a != b``.
        where: ``{step, query, key, layer, head}`` of the maximum (None without sets).
        n_sets: Parallel sets checked.
        consistent: ``max == 0`` if isolated, ``max > 0`` if visible; None without sets.
    """

    isolate: bool
    max_sibling_attention: float
    where: dict[str, int] | None
    n_sets: int
    consistent: bool | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the result."""
        return jsonable(self)


def isolation_check(data: AttentionData) -> IsolationCheck:
    """Max attention between distinct siblings (0 if isolated; partial: isolating heads only)."""
    best, where = 0.0, None
    mats = sibling_attention(data)
    cfg = data.trace.tempo_config if data.trace is not None else None
    off = (
        None
        if cfg is None
        else non_isolating(cfg.isolate_layers, cfg.isolate_heads, data.layers, data.heads)
    )
    for m in mats:
        x = m.per_head.copy()
        k = x.shape[-1]
        x[:, :, np.arange(k), np.arange(k)] = -1.0
        if off is not None:
            x[off] = -1.0
        flat = int(np.argmax(x))
        li, hi, a, b = np.unravel_index(flat, x.shape)
        if where is None or x.flat[flat] > best:
            best = float(max(x.flat[flat], 0.0))
            where = {
                "step": m.step,
                "query": m.indices[a],
                "key": m.indices[b],
                "layer": data.layers[li],
                "head": data.heads[hi],
            }
    isolate = data.state.isolate
    consistent = None if not mats else (best == 0.0 if isolate else best > 0.0)
    return IsolationCheck(isolate, best, where, len(mats), consistent)


def top_context(
    data: AttentionData,
    k: int = 5,
    *,
    layer: int | None = None,
    head: int | None = None,
    agg: str = "mean",
    exclude_self: bool = True,
) -> pd.DataFrame:
    """The ``k`` keys each member of each parallel set attends to most.

    Returns:
        Rows ``step, member, member_text, rank, key, key_text, key_step, attention``
        (``rank`` 0 = most attended; ties broken by lower physical index).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rows = []
    for s in _parallel_steps(data):
        mat = data.step_matrix(s, layer, head, agg)
        for r, i in enumerate(data.query_indices(s)):
            row = mat[r].astype(np.float64).copy()
            if exclude_self:
                row[i] = -np.inf
            order = np.lexsort((np.arange(len(row)), -row))[:k]
            for rank, j in enumerate(order):
                if not np.isfinite(row[j]):
                    continue
                rows.append(
                    {
                        "step": s,
                        "member": i,
                        "member_text": data.texts[i],
                        "rank": rank,
                        "key": int(j),
                        "key_text": data.texts[j],
                        "key_step": data.state.steps[j],
                        "attention": float(row[j]),
                    }
                )
    cols = ["step", "member", "member_text", "rank", "key", "key_text", "key_step", "attention"]
    return pd.DataFrame(rows, columns=cols)


def jensen_shannon(
    p: Float[np.ndarray, " n"], q: Float[np.ndarray, " n"], *, base: float = 2.0
) -> float:
    """Jensen–Shannon *divergence* ``0.5 KL(p||m) + 0.5 KL(q||m)``, ``m = (p + q) / 2``.

    Inputs are normalised to sum to 1. Base 2 gives values in ``[0, 1]``. (This is the
    square of ``scipy.spatial.distance.jensenshannon``, which returns the distance.)
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape or p.sum() <= 0 or q.sum() <= 0 or (p < 0).any() or (q < 0).any():
        raise ValueError("p and q must be non-negative, same shape, with positive mass")
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log(a[nz] / m[nz])))

    return max(0.0, 0.5 * kl(p) + 0.5 * kl(q)) / np.log(base)


def sibling_divergence(
    data: AttentionData, *, layer: int | None = None, head: int | None = None, agg: str = "mean"
) -> pd.DataFrame:
    """Pairwise JSD (bits) between siblings' attention over the context before the set.

    Returns:
        Rows ``step, a, b, a_text, b_text, jsd_bits`` (NaN where a member puts no mass on
        the context).
    """
    rows = []
    for s in _parallel_steps(data):
        members = data.state.set_indices[s]
        ctx = data.step_matrix(s, layer, head, agg)[:, : members[0]].astype(np.float64)
        for a, b in combinations(range(len(members)), 2):
            ok = ctx[a].sum() > 0 and ctx[b].sum() > 0
            rows.append(
                {
                    "step": s,
                    "a": members[a],
                    "b": members[b],
                    "a_text": data.texts[members[a]],
                    "b_text": data.texts[members[b]],
                    "jsd_bits": jensen_shannon(ctx[a], ctx[b]) if ok else float("nan"),
                }
            )
    return pd.DataFrame(rows, columns=["step", "a", "b", "a_text", "b_text", "jsd_bits"])


def entropy(
    rows: Float[np.ndarray, "*batch key"], *, unit: str = "nats"
) -> Float[np.ndarray, "*batch"]:
    """Shannon entropy of attention rows along the last axis (``0 log 0 = 0``)."""
    if unit not in ("nats", "bits"):
        raise ValueError(f"unit must be 'nats' or 'bits', got {unit!r}")
    x = np.asarray(rows, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(x > 0, x * np.log(x), 0.0).sum(-1)
    return np.asarray(h / np.log(2) if unit == "bits" else h)


@dataclass
class EntropyResult:
    """Attention entropy per ``(layer, head)``, per layer, and per query.

    Attributes:
        per_head: ``[layer, head]`` mean entropy over the selected queries.
        per_layer: ``[layer]`` mean over heads.
        per_query: Rows ``index, step, parallel, n_visible, entropy, normalised``
            (``normalised`` = entropy / log(n_visible of the layer), 1 for uniform, mean
            over layers and heads; a sliding-window layer sees only its window, and
            ``n_visible`` is the largest count over the layers).
        unit: ``nats`` or ``bits``. layers / heads: model ids.
    """

    per_head: np.ndarray
    per_layer: np.ndarray
    per_query: pd.DataFrame
    unit: str
    layers: list[int]
    heads: list[int]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the result."""
        return jsonable(self)


def attention_entropy(
    data: AttentionData, *, unit: str = "nats", include_prompt: bool = False
) -> EntropyResult:
    """Entropy of every captured query row (generated queries unless ``include_prompt``)."""
    st = data.state
    per_q, records = [], []
    for s in data.steps:
        if s < 0 and not include_prompt:
            continue
        q = data.query_indices(s)
        rows = data.rows(s)
        h = entropy(rows, unit=unit)  # layer head q
        n_vis = data.visible(q, rows.shape[-1]).sum(2)  # layer q (windows per layer)
        log_n = np.log(n_vis) / (np.log(2) if unit == "bits" else 1.0)
        mean_h = h.mean(axis=(0, 1))
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(log_n[:, None] > 0, h / log_n[:, None], np.nan)
        normalised = ratio.mean(axis=(0, 1))
        for r, i in enumerate(q):
            records.append(
                {
                    "index": i,
                    "step": s,
                    "parallel": bool(st.is_parallel(i)),
                    "n_visible": int(n_vis[:, r].max()),
                    "entropy": float(mean_h[r]),
                    "normalised": float(normalised[r]),
                }
            )
        per_q.append(h)
    n_l, n_h = len(data.layers), len(data.heads)
    allq = np.concatenate(per_q, axis=2) if per_q else np.full((n_l, n_h, 0), np.nan)
    per_head = nanmean(allq, axis=2) if allq.shape[2] else np.full((n_l, n_h), np.nan)
    cols = ["index", "step", "parallel", "n_visible", "entropy", "normalised"]
    return EntropyResult(
        per_head=per_head,
        per_layer=nanmean(per_head, axis=1),
        per_query=pd.DataFrame(records, columns=cols),
        unit=unit,
        layers=list(data.layers),
        heads=list(data.heads),
    )


def head_specialisation(
    data: AttentionData,
    *,
    window: float | int = 3.0,
    include_prompt: bool = False,
    exclude_sink: bool = False,
) -> pd.DataFrame:
    """Per head: mean fraction of attention to keys within ``window`` logical positions.

    Args:
        data: Captured attention.
        window: Largest ``|pos_q - pos_k|`` counted as local.
        include_prompt: Also count the prompt's queries.
        exclude_sink: Drop key 0 (the attention sink) and renormalise each row over the
            remaining keys (queries that put all their attention on it are left out).

    Returns:
        Rows ``layer, head, local_fraction, distant_fraction, n_queries``.
    """
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    logical = np.asarray(data.state.logical)
    n_l, n_h = len(data.layers), len(data.heads)
    local_sum, nq = np.zeros((n_l, n_h)), np.zeros((n_l, n_h))
    for s in data.steps:
        if s < 0 and not include_prompt:
            continue
        q = data.query_indices(s)
        rows = data.rows(s).astype(np.float64)
        k = rows.shape[-1]
        near = np.abs(logical[q][:, None] - logical[None, :k]) <= window
        if exclude_sink:
            rows = rows[..., 1:]
            near = near[:, 1:]
            mass = rows.sum(-1, keepdims=True)
            ok = mass[..., 0] > 0
            rows = np.where(mass > 0, rows / np.where(mass > 0, mass, 1.0), 0.0)
        else:
            ok = np.ones(rows.shape[:3], dtype=bool)
        local_sum += np.einsum("lhqk,qk->lh", rows, near)
        nq += ok.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        local = np.where(nq > 0, local_sum / np.maximum(nq, 1), np.nan)
    recs = [
        {
            "layer": data.layers[li],
            "head": data.heads[hi],
            "local_fraction": float(local[li, hi]),
            "distant_fraction": float(1.0 - local[li, hi]),
            "n_queries": int(nq[li, hi]),
        }
        for li in range(n_l)
        for hi in range(n_h)
    ]
    return pd.DataFrame(
        recs, columns=["layer", "head", "local_fraction", "distant_fraction", "n_queries"]
    )


def isolation_verdict(
    matrix: ArrayLike, *, tol: float = 1e-6, causal_ok: bool = False
) -> tuple[bool, float, tuple[int, int] | None]:
    """Whether members attend to their siblings, from a ``[member, member]`` matrix.

    Args:
        matrix: Attention from member ``i`` (row) to member ``j`` (column).
        tol: Largest sibling attention still counted as zero.
        causal_ok: Only look above the diagonal (visible mode lets members see *earlier*
            siblings, so only attention to later siblings is a violation).

    Returns:
        ``(isolated, max_sibling_attention, (row, col) of the max or None)``.
    """
    arr = to_numpy(matrix, ndim=2, name="matrix")
    k = arr.shape[0]
    if arr.shape != (k, k):
        raise ValueError(f"cross-parallel matrix must be square, got {arr.shape}")
    mask = np.triu(np.ones((k, k), bool), 1) if causal_ok else ~np.eye(k, dtype=bool)
    vals = np.where(mask, np.nan_to_num(arr, nan=np.inf), -np.inf)
    if k < 2 or not mask.any():
        return True, 0.0, None
    flat = int(np.argmax(vals))
    where = (flat // k, flat % k)
    worst = float(vals[where])
    return bool(worst <= tol), worst, where
