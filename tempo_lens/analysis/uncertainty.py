"""Uncertainty and context: next-token entropy, set width and attention, per step and set.

One teacher-forced forward over a finished TEMPO trace (generated without pruning, so the
forward reproduces the generation's logits; :func:`tempo_lens.hooks.interventions.step_distributions`)
gives, for every step ``s``:

* the distribution the step's set was selected from, its entropy ``next_entropy`` (nats)
  and top probability, and the set's width;
* the attention of the **readout queries** of that distribution (the last prompt token for
  step 0, the members of set ``s - 1`` after it: the rows whose logits made the
  distribution), as entropy per ``(layer, head)`` (nats, mean over the readout queries)
  and normalised by ``log`` of the number of keys each query may see (1 = uniform), so
  that the growing context does not masquerade as rising entropy.

For every parallel set, each pair of siblings: the Jensen–Shannon divergence (bits) of
their attention over the context before the set (mean over layers and heads;
:func:`tempo_lens.analysis.patterns.sibling_divergence`) next to the cosine similarity of
their rows of the embedding matrix ``W_E`` ("do similar alternatives attend to similar
context?"), and the top context keys of every member
(:func:`tempo_lens.analysis.patterns.top_context`).

Examples:
    >>> import tempo_lens as tl
    >>> model = tl.make_tiny_model()
    >>> trace = tl.generate(model, [3, 14, 15], selection_threshold=0.05, max_steps=3)
    >>> u = step_uncertainty(model, trace)
    >>> list(u.steps.columns)[:4]
    ['step', 'width', 'next_entropy', 'top_probability']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float

from tempo_lens.analysis.decoders import pairwise_cosine_distance
from tempo_lens.analysis.patterns import entropy, sibling_divergence, top_context
from tempo_lens.backends import hook_name, layer_windows
from tempo_lens.hooks import attach
from tempo_lens.hooks.capture import AttentionData
from tempo_lens.hooks.interventions import step_distributions
from tempo_lens.trace import Trace

__all__ = ["StepUncertainty", "step_uncertainty"]


@dataclass
class StepUncertainty:
    """Per-step uncertainty and attention of one trace (see the module docstring).

    Attributes:
        steps: One row per step: ``step, width, next_entropy, top_probability,
            attention_entropy, attention_entropy_norm`` (the last two: mean over layers
            and heads).
        head_entropy: ``[step, layer, head]`` attention entropy of the readout queries
            (nats).
        head_entropy_norm: The same divided by ``log(n visible keys)`` per query.
        pairs: One row per sibling pair of each parallel set: ``step, a, b, a_text,
            b_text, jsd_bits, cos_similarity``.
        top_keys: The ``k`` most attended context keys of every member of every parallel
            set (:func:`~tempo_lens.analysis.patterns.top_context` columns).
        data: The attention of the forward as :class:`~tempo_lens.hooks.capture.AttentionData`.
    """

    steps: pd.DataFrame
    head_entropy: Float[np.ndarray, "step layer head"]
    head_entropy_norm: Float[np.ndarray, "step layer head"]
    pairs: pd.DataFrame
    top_keys: pd.DataFrame
    data: AttentionData


def _readout_queries(trace: Trace, step: int) -> list[int]:
    st = trace.state
    return [st.prompt_length - 1] if step == 0 else list(st.set_indices[step - 1])


def step_uncertainty(model: Any, trace: Trace, *, top_k: int = 3) -> StepUncertainty:
    """Entropy, width and attention per step and per sibling pair of ``trace``.

    Args:
        model: The ``HookedTransformer`` the trace was generated with.
        trace: A TEMPO trace generated without pruning.
        top_k: Context keys listed per member in ``top_keys``.

    Returns:
        A :class:`StepUncertainty`.

    Raises:
        ValueError: the trace is not a TEMPO trace or has pruned tokens (the forward
            would not reproduce the distributions generation used).
    """
    conf = trace.tempo_config
    if conf is None:
        raise ValueError(f"step_uncertainty needs a TEMPO trace, got method {trace.method!r}")
    if any(p is not None for p in trace.state.pruned_at):
        raise ValueError("step_uncertainty needs a trace generated without pruning")
    st = trace.state
    names = [hook_name(la, "pattern") for la in range(model.cfg.n_layers)]
    with torch.no_grad(), attach(model, st):
        logits, cache = model.run_with_cache(st.tokens_tensor(), names_filter=lambda n: n in names)
    pattern = torch.stack([cache[n][0] for n in names]).double().cpu().numpy()
    data = AttentionData.from_full(st, pattern, texts=trace.texts, include_prompt=True)
    data.trace = trace
    probs = [[float(trace.token(i).probability or 0.0) for i in s] for s in st.set_indices]
    dists = step_distributions(logits, st, probs, conf.readout)[0, : st.n_steps].cpu().numpy()
    causal = np.tri(len(st), dtype=bool)
    windows = layer_windows(model)  # a sliding-window layer sees its window only
    vis = {w: st.visibility(window=w).numpy() & causal for w in set(windows)}
    ent, ent_norm = [], []
    for s in range(st.n_steps):
        q = _readout_queries(trace, s)
        h = entropy(pattern[:, :, q, :])  # layer head q
        log_n = np.log(np.stack([vis[w][q].sum(1) for w in windows]).astype(np.float64))
        log_n = log_n[:, None, :]  # layer 1 q
        ent.append(h.mean(-1))
        ent_norm.append(np.where(log_n > 0, h / np.where(log_n > 0, log_n, 1.0), np.nan).mean(-1))
    empty = np.zeros((0, *pattern.shape[:2]))  # a generation that stopped at once
    head_entropy = np.stack(ent) if ent else empty
    head_entropy_norm = np.stack(ent_norm) if ent_norm else empty
    steps = pd.DataFrame(
        {
            "step": range(st.n_steps),
            "width": [len(s) for s in st.set_indices],
            "next_entropy": entropy(dists),
            "top_probability": dists.max(-1),
            "attention_entropy": head_entropy.mean(axis=(1, 2)),
            "attention_entropy_norm": np.nanmean(head_entropy_norm, axis=(1, 2)),
        }
    )
    pairs = sibling_divergence(data)
    pairs["cos_similarity"] = [
        1.0 - pairwise_cosine_distance(model.W_E, [st.token_ids[a], st.token_ids[b]])
        for a, b in zip(pairs["a"], pairs["b"], strict=True)
    ]
    return StepUncertainty(
        steps=steps,
        head_entropy=head_entropy,
        head_entropy_norm=head_entropy_norm,
        pairs=pairs,
        top_keys=top_context(data, k=top_k),
        data=data,
    )
