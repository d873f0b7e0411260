"""Attention received by parallel vs non-parallel tokens — the seed's central question.

Definitions (per layer and head; overall numbers average the layer/head values):

* **Receivers.** A key token ``j`` receives attention only from the queries of generation
  steps *later* than its own step (``step(i) > step(j)``; prompt tokens have step ``-1``,
  prompt queries are never receivers, siblings in the same set are never receivers), and
  only from the receivers that can *see* it under the TEMPO mask (a token pruned at step
  ``p`` is invisible to queries of steps ``> p``; those queries are not counted). On a
  sliding-window layer, only the receivers within the window (by logical distance) see
  it, so receivers are counted per layer.
* **Per-token received attention** ``r_j = mean_{i in R(j)} A[i, j]`` over its visible
  receivers ``R(j)``. Rows of ``A`` sum to 1 over the keys a query can see, so ``r_j`` is
  the average share of a later query's attention that ``j`` gets. Tokens with no receiver
  (the last step's set) are left out (NaN).
* **Groups.** *parallel* = generated tokens of a set with more than one member;
  *non-parallel* = every other token (the prompt and generated singletons);
  *non-parallel (generated)* = generated singletons only, the like-with-like control for
  recency (prompt tokens are older than every generated token). The first token (physical
  index 0, the attention sink) is excluded from every group unless ``include_sink``.
* **Group mean** = the unweighted mean of ``r_j`` over the group's tokens;
  **ratio** = parallel mean / non-parallel mean (``< 1``: parallel tokens receive less).
* **Per-set total** ``T_s = mean_{i} sum_{j in set s, visible to i} A[i, j]`` over the
  receivers ``i`` that see at least one member: the attention a whole set gets, comparable
  to a single token. **Set ratio** = mean ``T`` of parallel sets / mean ``T`` of singleton
  sets. Splitting one position's attention among k members lowers per-token numbers by
  construction, so read the per-token ratio together with the set ratio.

Examples:
    >>> res = received_attention(data)            # doctest: +SKIP
    >>> res.ratio, res.set_ratio                    # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tempo_lens.analysis._util import nanmean, safe_ratio
from tempo_lens.hooks.capture import AttentionData
from tempo_lens.io import jsonable

__all__ = ["ReceivedAttention", "received_attention"]


@dataclass
class ReceivedAttention:
    """Attention received per token, per set, per group and per ``(layer, head)``.

    Attributes:
        tokens: One row per token: ``index, text, step, rank, set_size, group,
            pruned_at_step, n_receivers, received`` (``received`` = ``r_j`` averaged over
            the captured layers and heads; ``group`` is ``parallel``, ``non_parallel`` or
            ``sink``).
        sets: One row per generated set: ``step, size, n_receivers, total, members``.
        parallel_mean / non_parallel_mean / non_parallel_generated_mean: group means.
        ratio: ``parallel_mean / non_parallel_mean``; ratio_generated: vs generated singletons.
        set_parallel_mean / set_singleton_mean / set_ratio: per-set totals.
        n_parallel / n_non_parallel / n_non_parallel_generated: tokens in each group.
        per_head_parallel / per_head_non_parallel / per_head_ratio: ``[layer, head]``.
        per_head_received: ``[layer, head, n]`` values of ``r_j``.
        layers / heads: model ids of the axes.
    """

    tokens: pd.DataFrame
    sets: pd.DataFrame
    parallel_mean: float
    non_parallel_mean: float
    non_parallel_generated_mean: float
    ratio: float
    ratio_generated: float
    set_parallel_mean: float
    set_singleton_mean: float
    set_ratio: float
    n_parallel: int
    n_non_parallel: int
    n_non_parallel_generated: int
    per_head_parallel: np.ndarray
    per_head_non_parallel: np.ndarray
    per_head_ratio: np.ndarray
    per_head_received: np.ndarray = field(repr=False)
    layers: list[int] = field(default_factory=list)
    heads: list[int] = field(default_factory=list)
    include_sink: bool = False

    def to_dict(self, *, per_token: bool = True) -> dict[str, Any]:
        """JSON-ready numbers (NaN -> None); ``per_head_received`` is left out."""
        out = {
            k: getattr(self, k)
            for k in (
                "parallel_mean",
                "non_parallel_mean",
                "non_parallel_generated_mean",
                "ratio",
                "ratio_generated",
                "set_parallel_mean",
                "set_singleton_mean",
                "set_ratio",
                "n_parallel",
                "n_non_parallel",
                "n_non_parallel_generated",
                "per_head_parallel",
                "per_head_non_parallel",
                "per_head_ratio",
                "layers",
                "heads",
                "include_sink",
            )
        }
        if per_token:
            out["tokens"], out["sets"] = self.tokens, self.sets
        return jsonable(out)


def received_attention(
    data: AttentionData, *, include_sink: bool = False, include_pruned: bool = True
) -> ReceivedAttention:
    """Per-token and per-set attention received from later queries (see module docstring).

    Args:
        data: Captured attention.
        include_sink: Count physical index 0 in the non-parallel group.
        include_pruned: Count pruned tokens (with the receivers that could see them).
    """
    st = data.state
    n, n_l, n_h = len(st), len(data.layers), len(data.heads)
    steps = np.asarray(st.steps)
    att_sum = np.zeros((n_l, n_h, n))
    count = np.zeros((n_l, 1, n))  # receivers per layer: local layers see a window only
    n_sets = st.n_steps
    set_sum = np.zeros((n_l, n_h, n_sets))
    set_count = np.zeros((n_l, 1, n_sets))
    for s in data.steps:
        if s < 0:
            continue
        q = data.query_indices(s)
        rows = data.rows(s).astype(np.float64)  # layer head q key
        k = rows.shape[-1]
        vis = data.visible(q, k) & (steps[None, None, :k] < s)  # layer q key
        att_sum[:, :, :k] += np.einsum("lhqk,lqk->lhk", rows, vis)
        count[:, 0, :k] += vis.sum(1)
        for t in range(min(s, n_sets)):
            members = st.set_indices[t]
            mv = vis[:, :, members]
            seen = np.asarray(mv.any(axis=2))  # layer q
            tot = np.einsum("lhqm,lqm->lhq", rows[:, :, :, members], mv)
            set_sum[:, :, t] += (tot * seen[:, None, :]).sum(-1)
            set_count[:, 0, t] += seen.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(count > 0, att_sum / np.maximum(count, 1), np.nan)
        totals = np.where(set_count > 0, set_sum / np.maximum(set_count, 1), np.nan)
    count = count.max(axis=(0, 1))  # receivers in the layer that sees the token most
    set_count = set_count.max(axis=(0, 1))

    sizes = [len(st.set_indices[x]) if x >= 0 else 1 for x in st.steps]
    parallel = np.array([x >= 0 and sz > 1 for x, sz in zip(st.steps, sizes, strict=True)])
    usable = count > 0
    if not include_pruned:
        usable &= np.array([p is None for p in st.pruned_at])
    sink = np.zeros(n, dtype=bool)
    if not include_sink:
        sink[0] = True
    g_par = parallel & usable & ~sink
    g_non = ~parallel & usable & ~sink
    g_gen = g_non & (steps >= 0)

    def group(mask: np.ndarray) -> tuple[np.ndarray, float]:
        per_head = nanmean(r[:, :, mask], axis=2) if mask.any() else np.full((n_l, n_h), np.nan)
        return per_head, nanmean(per_head)

    ph_par, par = group(g_par)
    ph_non, non = group(g_non)
    _, gen = group(g_gen)
    set_sizes = np.array([len(m) for m in st.set_indices])
    set_mean = nanmean(totals, axis=(0, 1)) if n_sets else np.zeros(0)
    set_par = nanmean(set_mean[set_sizes > 1]) if (set_sizes > 1).any() else float("nan")
    set_one = nanmean(set_mean[set_sizes == 1]) if (set_sizes == 1).any() else float("nan")

    token_mean = nanmean(r, axis=(0, 1)) if n else np.zeros(0)
    group_name = np.where(sink, "sink", np.where(parallel, "parallel", "non_parallel"))
    tokens = pd.DataFrame(
        {
            "index": np.arange(n),
            "text": data.texts,
            "step": st.steps,
            "rank": st.ranks,
            "set_size": sizes,
            "group": group_name,
            "pruned_at_step": pd.array(st.pruned_at, dtype="Int64"),
            "n_receivers": count.astype(int),
            "received": token_mean,
        }
    )
    sets = pd.DataFrame(
        {
            "step": np.arange(n_sets),
            "size": set_sizes,
            "n_receivers": set_count.astype(int),
            "total": set_mean,
            "members": ["/".join(data.texts[i] for i in m) for m in st.set_indices],
        }
    )
    return ReceivedAttention(
        tokens=tokens,
        sets=sets,
        parallel_mean=par,
        non_parallel_mean=non,
        non_parallel_generated_mean=gen,
        ratio=safe_ratio(par, non),
        ratio_generated=safe_ratio(par, gen),
        set_parallel_mean=set_par,
        set_singleton_mean=set_one,
        set_ratio=safe_ratio(set_par, set_one),
        n_parallel=int(g_par.sum()),
        n_non_parallel=int(g_non.sum()),
        n_non_parallel_generated=int(g_gen.sum()),
        per_head_parallel=ph_par,
        per_head_non_parallel=ph_non,
        per_head_ratio=safe_ratio(ph_par, ph_non),
        per_head_received=r,
        layers=list(data.layers),
        heads=list(data.heads),
        include_sink=include_sink,
    )
