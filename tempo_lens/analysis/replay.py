"""Replays of a finished TEMPO sequence under changed conditions, and plain-model checks.

* :func:`replay_attention` — the same tokens and sets, re-run in one forward with another
  position scheme (``"distinct"``: every member at its own position, the control for
  position sharing) and/or the other isolation mode; returns
  :class:`~tempo_lens.hooks.capture.AttentionData` as if captured during generation.
* :func:`continuation_support` — for each parallel set followed by ``window`` further
  steps, the plain model's log-likelihood of the clean continuation after each member
  (which alternative the continuation actually supports), next to the attention score the
  retroactive pruner would give that member (:func:`received_votes`);
* :func:`heldout_support` — the same with the held-out outcome of the findings' claim 5:
  the log-likelihood of the ``window`` clean steps after those (``c_{w+1..2w}``);
* :func:`received_votes` — the attention each member of a set receives from the queries of
  the ``window`` steps after it, mean over chosen layers, heads and those queries.
* :func:`recomputed_widths` — every step's set size recomputed from the captured final
  residual stream (the backend's ``final_residual_hook``): unembedding, readout, threshold.

Example:
    >>> data_distinct = replay_attention(model, trace, scheme="distinct")   # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float

from tempo_lens.backends import (
    TempoModel,
    backend_of,
    forward,
    hook_name,
    make_kv_cache,
    reorder_kv_cache,
)
from tempo_lens.hooks import attach
from tempo_lens.hooks.capture import AttentionData
from tempo_lens.positions import PositionScheme
from tempo_lens.pruning import score_members
from tempo_lens.state import SequenceState
from tempo_lens.trace import Trace

__all__ = [
    "continuation_support",
    "heldout_support",
    "received_votes",
    "recomputed_widths",
    "replay_attention",
    "replay_state",
]


def replay_state(
    trace: Trace, *, scheme: Literal["shared", "distinct"] = "shared", isolate: bool | None = None
) -> SequenceState:
    """The trace's sequence with the given position scheme and isolation mode.

    ``"shared"`` keeps the trace's logical positions; ``"distinct"`` gives every token its
    own consecutive position (logical = physical). Pruning marks are kept.
    """
    if scheme not in ("shared", "distinct"):
        raise ValueError(f"scheme must be 'shared' or 'distinct', got {scheme!r}")
    src = trace.state
    iso = src.isolate if isolate is None else bool(isolate)
    pos = PositionScheme(kind="distinct") if scheme == "distinct" else src.scheme
    st = SequenceState(src.token_ids[: src.prompt_length], isolate=iso, positions=pos)
    for members in src.set_indices:
        ids = [src.token_ids[i] for i in members]
        st.append_set(
            ids, positions=None if scheme == "distinct" else [src.logical[i] for i in members]
        )
    for i, p in enumerate(src.pruned_at):
        if p is not None:
            st.prune(i, at_step=p, hard=i in src.hard_pruned)
    st.clear_stale()
    return st


def replay_attention(
    model: TempoModel,
    trace: Trace,
    *,
    scheme: Literal["shared", "distinct"] = "shared",
    isolate: bool | None = None,
) -> AttentionData:
    """Attention of every layer and head of the replayed sequence (one forward, no logits).

    With ``isolate=None`` a partially isolated trace is replayed with its
    ``isolate_layers`` / ``isolate_heads``; an explicit ``isolate`` replays every layer so.

    Raises:
        ValueError: an unknown ``scheme``.
    """
    st = replay_state(trace, scheme=scheme, isolate=isolate)
    cfg = trace.tempo_config
    partial: dict[str, Any] = {}
    if isolate is None and cfg is not None:
        partial = {"isolate_layers": cfg.isolate_layers, "isolate_heads": cfg.isolate_heads}
    pats: dict[str, torch.Tensor] = {}

    def keep(x: torch.Tensor, hook: Any) -> None:
        pats[str(hook.name)] = x[0].detach().float().cpu()

    names = [hook_name(layer, "pattern") for layer in range(model.cfg.n_layers)]
    with torch.no_grad(), attach(model, st, **partial):
        model.run_with_hooks(
            st.tokens_tensor(model.cfg.device),
            return_type=None,
            fwd_hooks=[(n, keep) for n in names],
        )
    pattern = torch.stack([pats[n] for n in names])
    return AttentionData.from_full(st, pattern, texts=list(trace.texts))


def _suffix_log_probs(
    model: TempoModel, clean: list[int], jobs: list[tuple[int, list[list[int]]]], window: int
) -> torch.Tensor:
    """Next-token log-probabilities (float64) at the first ``window`` positions of suffixes.

    ``jobs``: ``(prefix_length, [suffix, ...])``, each suffix right after ``clean[:p]``. One
    cached forward over the longest prefix, then every suffix in one batch on that KV cache
    with the cached positions from its own prefix length on hidden
    (:func:`~tempo_lens.backends.reorder_kv_cache` with ``lengths``), so a suffix sits at
    positions ``p, p + 1, ...`` as in ``clean[:p] + suffix`` (either backend).

    Returns:
        ``[n_suffixes, window, d_vocab]`` in job order.
    """
    device = model.cfg.device
    cache = make_kv_cache(model)
    prefix = torch.tensor([clean[: max(p for p, _ in jobs)]], device=device)
    lengths = [p for p, suffixes in jobs for _ in suffixes]
    tokens = torch.tensor([x for _, suffixes in jobs for x in suffixes], device=device)
    with torch.no_grad():
        forward(model, prefix, cache=cache)
        reorder_kv_cache(cache, torch.zeros(len(lengths), dtype=torch.long), lengths)
        logits = forward(model, tokens, cache=cache, attention_mask=torch.ones_like(tokens))
    return torch.log_softmax(logits[:, :window].to(torch.float64), dim=-1)


def _log_probs(model: TempoModel, resid: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        logits = backend_of(model).unembed(resid)
    return torch.log_softmax(logits.to(torch.float64), dim=-1)


def received_votes(
    data: AttentionData, step: int, window: int, layers: Sequence[int] | None = None
) -> Float[torch.Tensor, " member"]:
    """Attention each member of set ``step`` receives from the next ``window`` steps' queries.

    The pruner's attention score (:func:`tempo_lens.pruning.score_members` with mean over
    ``(layer, head)`` and over queries): for member ``m``, the mean of ``pattern[l, h, q,
    m]`` over the ``layers``, every captured head and every query ``q`` of steps ``step +
    1 .. step + window`` (all members of those sets).

    Args:
        data: Attention of the sequence (captured, or a teacher-forced replay).
        step: The set's step (``0 <= step``, ``step + window < data.state.n_steps``).
        window: Steps after the set whose queries vote (``>= 1``).
        layers: Model layer ids to average over (captured ones); ``None`` = all captured.

    Returns:
        ``[member]`` float64 scores in member-rank order (attention weights, in ``[0, 1]``).

    Raises:
        ValueError: ``window < 1``, a step outside the sequence, fewer than ``window``
            later steps, or a layer that was not captured (or an empty ``layers``).
        KeyError: a needed step was not captured.
    """
    st = data.state
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if not 0 <= step < st.n_steps or step + window >= st.n_steps:
        raise ValueError(
            f"set {step} needs {window} later steps; the sequence has {st.n_steps} steps"
        )
    li: slice | list[int] = slice(None)
    if layers is not None:
        missing = [la for la in layers if la not in data.layers]
        if missing or not len(layers):
            raise ValueError(f"layers {list(layers)} must be captured ones: {data.layers}")
        li = [data.layers.index(la) for la in layers]
    n0 = st.set_indices[step + 1][0]  # keys before the first later step: the set and before
    rows = np.concatenate(
        [data.rows(t)[li, :, :, :n0] for t in range(step + 1, step + window + 1)], axis=2
    )
    return score_members(
        torch.from_numpy(rows), st.set_indices[step], head_agg="mean", query_agg="mean"
    )


def continuation_support(
    model: TempoModel, trace: Trace, data: AttentionData, *, window: int = 3
) -> pd.DataFrame:
    """Per member of each parallel set ``s`` with ``window`` further steps.

    The plain model's ``log p(c_1..c_window | prompt, clean path before s, member)`` (``c`` = the
    clean path's members of steps ``s+1..s+window``) and the pruner's attention score
    (mean over captured layers, heads and the queries of steps ``s+1..s+window``).

    Returns:
        Rows ``set_step, index, rank, set_size, probability, loglik, attention,
        supported`` (``supported``: the member with the highest ``loglik``, ties to rank).
        Scored by the plain model without TEMPO hooks; the shared prefix of a set's
        sequences runs once (:func:`_suffix_log_probs`).
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    st, clean = trace.state, trace.clean_ids()
    prompt = st.token_ids[: st.prompt_length]
    jobs, meta = [], []
    for s, members in enumerate(st.set_indices):
        if len(members) < 2 or s + window >= st.n_steps:
            continue
        att = received_votes(data, s, window)
        probs = trace.steps[s].probabilities
        after = clean[s + 1 : s + 1 + window]
        jobs.append((len(prompt) + s, [[st.token_ids[i], *after] for i in members]))
        for r, i in enumerate(members):
            meta.append((s, i, r, len(members), float(probs[r]), float(att[r])))
    cols = ["set_step", "index", "rank", "set_size", "probability", "loglik", "attention"]
    if not jobs:
        return pd.DataFrame(columns=[*cols, "supported"])
    # member + window clean tokens after the shared prefix prompt + clean[:s]: positions
    # 0..window-1 of each suffix predict its tokens 1..window
    lp = _suffix_log_probs(model, prompt + clean, jobs, window)
    targets = torch.tensor([x[1:] for _, suffixes in jobs for x in suffixes])
    lp = lp.reshape(-1, lp.shape[-1])
    ll = lp.gather(-1, targets.reshape(-1, 1).to(lp.device)).view(len(meta), window).sum(-1)
    recs = [dict(zip(cols, [*m[:5], float(ll[b]), m[5]], strict=True)) for b, m in enumerate(meta)]
    df = pd.DataFrame(recs, columns=cols)
    best = df.sort_values(["set_step", "loglik", "rank"], ascending=[True, False, True])
    winners = set(best.groupby("set_step")["index"].first())
    df["supported"] = df["index"].isin(winners)
    return df


def heldout_support(
    model: TempoModel, trace: Trace, data: AttentionData, *, window: int = 3
) -> pd.DataFrame:
    """:func:`continuation_support` plus the held-out outcome (the findings' claim 5).

    ``heldout_loglik`` is the plain model's ``log p(c_{w+1..2w} | prompt, clean path before
    s, member, c_1..c_w)`` in nats (``w = window``; ``c`` = the clean path's members of the
    steps after the set: the ``window`` steps after those the attention score reads, as the
    difference of the two continuation log-likelihoods); ``heldout_supported`` marks the
    set's member with the highest one (ties to the lower rank; NaN for a set without
    ``2 * window`` later steps). Issue 23: the outcome and the attention score come from
    disjoint steps.

    Returns:
        :func:`continuation_support`'s rows plus ``heldout_loglik`` (float) and
        ``heldout_supported`` (1.0 / 0.0, NaN without an outcome).

    Raises:
        ValueError: ``window < 1``.
    """
    near = continuation_support(model, trace, data, window=window)
    if near.empty or trace.state.n_steps <= 2 * window:
        return near.assign(heldout_loglik=math.nan, heldout_supported=math.nan)
    far = continuation_support(model, trace, data, window=2 * window)
    far = far.set_index(["set_step", "index"])["loglik"]
    key = pd.MultiIndex.from_frame(near[["set_step", "index"]])
    near["heldout_loglik"] = far.reindex(key).to_numpy() - near["loglik"].to_numpy()
    best = near.dropna(subset=["heldout_loglik"]).sort_values(
        ["set_step", "heldout_loglik", "rank"], ascending=[True, False, True]
    )
    winners = set(best.groupby("set_step")["index"].first())
    near["heldout_supported"] = np.where(
        near["heldout_loglik"].notna(), near["index"].isin(winners), math.nan
    )
    return near


def recomputed_widths(
    model: TempoModel,
    trace: Trace,
    resid: Mapping[int, np.ndarray],
    *,
    tie_tolerance: float = 1e-5,
) -> pd.DataFrame:
    """Each step's set size vs ``min(cap, max(1, #{p >= tau}))`` recomputed from the residual.

    Args:
        model: The model (its unembedding, :meth:`~tempo_lens.backends.base.Backend.unembed`).
        trace: A TEMPO trace (no prefilter).
        resid: ``step -> [q_new, d_model]`` final residual (the backend's
            ``final_residual_hook``)
            captured at each step (``-1`` = the prompt).
        tie_tolerance: Steps with a probability within this of tau are not judged.

    Returns:
        Rows ``step, threshold, width, expected, judged, match``.
    """
    cfg = trace.tempo_config
    if cfg is None:
        raise ValueError("recomputed_widths needs a TEMPO trace")
    from tempo_lens.generation.text import eos_token_id

    eos = eos_token_id(model)
    prevs = [rec.step - 1 for rec in trace.steps]
    rows = [torch.as_tensor(np.asarray(resid[s]), device=model.cfg.device) for s in prevs]
    all_p = _log_probs(model, torch.cat(rows)).exp() if rows else None
    offsets = np.cumsum([0] + [len(r) for r in rows])
    recs = []
    for j, rec in enumerate(trace.steps):
        prev = prevs[j]
        assert all_p is not None
        p = all_p[offsets[j] : offsets[j + 1]]
        if prev < 0 or cfg.readout == "last":
            dist = p[-1]
        elif cfg.readout == "top":
            dist = p[0]
        else:
            w = torch.tensor(trace.steps[prev].probabilities, dtype=torch.float64)
            dist = (w[:, None] * p.to(w.device)).sum(0) / w.sum()
        tau = cfg.threshold_at(rec.step)
        qualified = dist >= tau
        n = int(qualified.sum())
        expected = max(1, n) if cfg.max_parallel is None else min(cfg.max_parallel, max(1, n))
        near = bool((torch.abs(dist - tau) < tie_tolerance).any())
        eos_member = eos is not None and bool(qualified[eos]) and int(dist.argmax()) != eos
        judged = not near and not eos_member
        width = len(rec.indices)
        recs.append(
            {
                "step": rec.step,
                "threshold": float(tau),
                "width": width,
                "expected": expected,
                "judged": judged,
                "match": bool(width == expected),
            }
        )
    return pd.DataFrame(recs, columns=["step", "threshold", "width", "expected", "judged", "match"])
