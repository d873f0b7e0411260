"""Information bottlenecks (RQ 10.3): do the members of a parallel set converge with depth?

One teacher-forced forward over a finished TEMPO trace (generated without pruning, so the
forward is the generation's computation; the TEMPO hooks attached as generated, partial
isolation included) caches ``hook_resid_post`` of every layer. For every set with at
least two members and every layer ``l``:

* **distinguishability**: each member's ``resid_post`` minus the mean ``resid_post`` over
  positions 1 … end of the forwarded sequence at ``l`` (prompt and generated; position 0
  is left out: it carries a *massive activation* in the middle layers, orders of magnitude
  above the other positions -- Sun et al. 2024, "Massive activations in large language
  models" -- so a mean over it is that one vector), then the mean over member pairs of the
  cosine distance ``1 - cos`` of the centred vectors (float64; 0 = identical directions,
  2 = opposite). ``distinguishability_all`` centres by the mean over every position (the
  first pre-registered version, kept for comparison: ``docs/preregistration.md``);
* **logit-lens agreement**: the fraction of member pairs whose top-1 next token under the
  model's final norm and unembedding applied to ``resid_post`` at ``l``
  (:meth:`~tempo_lens.backends.base.Backend.logit_lens`) coincides. At the last layer this
  is the model's own next-token prediction.

A set **merges** at the first layer from which the agreement stays 1 through the last
layer (:func:`merge_layer`; NaN when it is below 1 at the last layer). The rule that turns
these into an answer is pre-registered in ``docs/preregistration.md#r6``.

Examples:
    >>> import tempo_lens as tl
    >>> model = tl.make_tiny_model(n_layers=3)
    >>> trace = tl.generate(model, [3, 14, 15], selection_threshold=0.1, max_steps=3)
    >>> b = set_bottleneck(model, trace)
    >>> list(b.sets_layers.columns)
    ['step', 'layer', 'n_members', 'distinguishability', 'distinguishability_all', 'agreement']
    >>> merge_layer([0.0, 1.0, 0.5, 1.0, 1.0])
    3.0
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int

from tempo_lens.analysis._util import ArrayLike, to_numpy
from tempo_lens.backends import backend_of, hook_name
from tempo_lens.hooks import attach
from tempo_lens.trace import Trace

__all__ = ["SetBottleneck", "merge_layer", "set_bottleneck"]


@dataclass
class SetBottleneck:
    """Per-set, per-layer distinguishability and logit-lens agreement of one trace.

    Attributes:
        sets_layers: One row per multi-member set and layer: ``step`` (the set's step),
            ``layer`` (0-based block index), ``n_members``, ``distinguishability`` (mean
            pairwise cosine distance of the centred ``resid_post``, in [0, 2]),
            ``distinguishability_all`` (the same, centred by the mean over every
            position, position 0 included),
            ``agreement`` (fraction of member pairs with the same logit-lens top-1, in
            [0, 1]).
        sets: One row per multi-member set: ``step``, ``n_members``, ``merge_layer``
            (:func:`merge_layer`; NaN = not merged), ``merged`` (bool),
            ``final_mismatches`` (members whose last-layer logit-lens top-1 differs from
            the top-1 of the forward's own logits; 0 unless the lens is broken).
        distinguishability: ``[set, layer]`` the same values as ``sets_layers``.
        distinguishability_all: ``[set, layer]``, centred over every position.
        agreement: ``[set, layer]``.
        top1: Per set, ``[layer, member]`` logit-lens top-1 token ids.
        logits_top1: Per set, ``[member]`` top-1 of the forward's own logits.
        members: Per set, the members' physical indices.
        n_layers: Number of layers of the model.
    """

    sets_layers: pd.DataFrame
    sets: pd.DataFrame
    distinguishability: Float[np.ndarray, "set layer"]
    distinguishability_all: Float[np.ndarray, "set layer"]
    agreement: Float[np.ndarray, "set layer"]
    top1: list[Int[np.ndarray, "layer _member"]]
    logits_top1: list[Int[np.ndarray, " _member"]]
    members: list[list[int]]
    n_layers: int


def merge_layer(agreement: ArrayLike) -> float:
    """The first layer from which ``agreement`` stays 1 through the last layer.

    Args:
        agreement: Agreement per layer, layer 0 first (values in [0, 1]; 1-D).

    Returns:
        The 0-based layer index as a float; NaN when the last layer's agreement is below
        1 (the set never merges) or ``agreement`` is empty.

    Raises:
        ValueError: ``agreement`` is not 1-D.
    """
    a = to_numpy(agreement, ndim=1, name="agreement").tolist()
    first = math.nan
    for la in range(len(a) - 1, -1, -1):
        if a[la] != 1.0:
            break
        first = float(la)
    return first


def _distinguishability(x: Float[torch.Tensor, "layer member d_model"]) -> np.ndarray:
    """Mean pairwise cosine distance over members, per layer (float64; NaN at a zero vector)."""
    x = x.to(torch.float64)
    unit = x / x.norm(dim=-1, keepdim=True)
    cos = unit @ unit.transpose(-1, -2)  # layer member member
    a, b = np.triu_indices(x.shape[1], k=1)
    return (1.0 - cos[:, a, b]).mean(-1).cpu().numpy()


def _agreement(top1: np.ndarray) -> np.ndarray:
    """Fraction of member pairs with the same top-1 token, per layer (``top1``: layer member)."""
    pairs = list(itertools.combinations(range(top1.shape[1]), 2))
    same = np.stack([top1[:, i] == top1[:, j] for i, j in pairs], axis=1)
    return same.mean(1)


def set_bottleneck(model: Any, trace: Trace) -> SetBottleneck:
    """Distinguishability and logit-lens agreement of every multi-member set, per layer.

    Args:
        model: The model the trace was generated with (either backend).
        trace: A TEMPO trace generated without pruning. A trace without steps or without
            a multi-member set gives empty tables.

    Returns:
        A :class:`SetBottleneck` (see the module docstring for the definitions).

    Raises:
        ValueError: not a TEMPO trace, a trace with pruned tokens (the forward would not
            be the generation's), or a model whose backend has no logit lens.
    """
    conf = trace.tempo_config
    if conf is None:
        raise ValueError(f"set_bottleneck needs a TEMPO trace, got method {trace.method!r}")
    if any(t.pruned_at_step is not None for t in trace.tokens):
        raise ValueError("set_bottleneck needs a trace generated without pruning")
    n_l = int(model.cfg.n_layers)
    st = trace.to_state()
    sets = [list(s) for s in st.set_indices if len(s) > 1]
    steps = [k for k, s in enumerate(st.set_indices) if len(s) > 1]
    dist = np.zeros((len(sets), n_l))
    dist_all = np.zeros((len(sets), n_l))
    agree = np.zeros((len(sets), n_l))
    top1s: list[np.ndarray] = []
    logit_top1s: list[np.ndarray] = []
    if sets:
        backend = backend_of(model)
        names = [hook_name(la, "resid_post") for la in range(n_l)]
        hooks = attach(
            model, st, isolate_layers=conf.isolate_layers, isolate_heads=conf.isolate_heads
        )
        with torch.no_grad(), hooks:
            logits, cache = model.run_with_cache(
                st.tokens_tensor(), names_filter=lambda n: n in names
            )
        flat = [i for s in sets for i in s]
        resid = torch.stack([cache[n][0] for n in names])  # layer pos d_model
        members = resid[:, flat].double()
        start = 1 if resid.shape[1] > 1 else 0  # position 0 left out of the mean
        centred = members - resid[:, start:].double().mean(1, keepdim=True)
        centred_all = members - resid.double().mean(1, keepdim=True)
        with torch.no_grad():  # one layer at a time: [member, d_vocab] logits each
            lens = torch.stack(
                [backend.logit_lens(resid[la, flat]).argmax(-1) for la in range(n_l)]
            )
        lens_np = lens.cpu().numpy()  # layer member
        own = logits[0, flat].argmax(-1).cpu().numpy()
        at = 0
        for k, s in enumerate(sets):
            span = slice(at, at + len(s))
            dist[k] = _distinguishability(centred[:, span])
            dist_all[k] = _distinguishability(centred_all[:, span])
            top1s.append(lens_np[:, span])
            logit_top1s.append(own[span])
            agree[k] = _agreement(lens_np[:, span])
            at += len(s)
    rows = [
        {
            "step": steps[k],
            "layer": la,
            "n_members": len(s),
            "distinguishability": float(dist[k, la]),
            "distinguishability_all": float(dist_all[k, la]),
            "agreement": float(agree[k, la]),
        }
        for k, s in enumerate(sets)
        for la in range(n_l)
    ]
    cols = [
        "step",
        "layer",
        "n_members",
        "distinguishability",
        "distinguishability_all",
        "agreement",
    ]
    merges = [merge_layer(agree[k]) for k in range(len(sets))]
    per_set = pd.DataFrame(
        {
            "step": steps,
            "n_members": [len(s) for s in sets],
            "merge_layer": merges,
            "merged": [not math.isnan(m) for m in merges],
            "final_mismatches": [
                int((t[-1] != o).sum()) for t, o in zip(top1s, logit_top1s, strict=True)
            ],
        }
    )
    return SetBottleneck(
        sets_layers=pd.DataFrame(rows, columns=cols),
        sets=per_set,
        distinguishability=dist,
        distinguishability_all=dist_all,
        agreement=agree,
        top1=top1s,
        logits_top1=logit_top1s,
        members=sets,
        n_layers=n_l,
    )
