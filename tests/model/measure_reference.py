"""The per-step reference of ``Replay.measure`` (the pre-vectorisation implementation).

A plain full forward over every position (no start layer, no readout-row selection), then
per row and step: :func:`tempo_lens.selection.readout_distribution`,
:func:`tempo_lens.select_from_probs` (a sort over the vocabulary), ``-log p`` of the top
member and KL(clean || row) — one Python loop per element, as issue 22 found it. The
vectorised ``Replay.measure`` must agree with it to float roundoff.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

import tempo_lens as tl
from tempo_lens.selection import readout_distribution, select_from_probs


def reference_measure(replay: Any, batch: int, fwd_hooks: Sequence[Any]) -> list[dict[str, float]]:
    """Metrics per batch row, computed one step at a time from a full forward."""
    st, cfg, model = replay.state, replay.config, replay.model
    with (
        torch.no_grad(),
        tl.attach(model, st, **replay._isolation),
        model.hooks(fwd_hooks=list(fwd_hooks)),
    ):
        logits = model(st.tokens_tensor().expand(batch, -1))
    with torch.no_grad(), tl.attach(model, st, **replay._isolation):
        clean_logits = model(st.tokens_tensor())
    clean = _per_step(clean_logits[0], replay)
    par = np.array([len(s) > 1 for s in st.set_indices])
    out = []
    for b in range(batch):
        d, width, nll = _per_step(logits[b], replay)
        kl = np.array(
            [
                float((p * (torch.log(p.clamp_min(1e-300)) - torch.log(q.clamp_min(1e-300)))).sum())
                for p, q in zip(clean[0], d, strict=True)
            ]
        )
        out.append(
            {
                "kl_parallel": _mean(kl[par]),
                "kl_nonparallel": _mean(kl[~par]),
                "dwidth_parallel": _mean((width - clean[1])[par]),
                "dwidth_nonparallel": _mean((width - clean[1])[~par]),
                "dnll": _mean(nll - clean[2]),
            }
        )
    del cfg
    return out


def _per_step(
    logits: torch.Tensor, replay: Any
) -> tuple[list[torch.Tensor], np.ndarray, np.ndarray]:
    st, cfg = replay.state, replay.config
    dists, width, nll = [], [], []
    for s in range(st.n_steps):
        if s == 0:
            d = readout_distribution(logits[[st.prompt_length - 1]], [1.0], "top")
        else:
            idx = st.set_indices[s - 1]
            d = readout_distribution(logits[idx], replay.member_probs[s - 1], cfg.readout)
        dists.append(d)
        width.append(select_from_probs(d, cfg.threshold_at(s), max_parallel=cfg.max_parallel).size)
        nll.append(-math.log(max(float(d[replay.top[s]]), 1e-300)))
    return dists, np.array(width), np.array(nll)


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if len(x) else math.nan
