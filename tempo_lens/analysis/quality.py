"""Quality and diversity of a generation's clean text, under the plain model.

TEMPO keeps several alternatives per step; its *clean text* (``trace.clean_ids()``) is the
top surviving member of each step. To compare decoding settings (isolation, thresholds,
schedules, pruning) on one scale, this module scores that clean text with the **plain**
model — no TEMPO hooks, one token per position, the ordinary causal mask — exactly as if
the clean text had been written by hand:

* :func:`token_nll` — per-token negative log-likelihood ``-ln p(x_t | x_<t)`` (nats) of a
  token sequence from position ``start`` on, from one plain forward (float64 softmax);
* :func:`clean_text_nll` — :func:`token_nll` of a trace's clean continuation given its
  prompt: :class:`CleanTextNLL` with the per-token values, their mean and the perplexity
  ``exp(mean)``. A baseline trace (greedy, sampling, beam) is scored the same way, so
  TEMPO and its baselines compare directly;
* :func:`distinct_n` — distinct-n (Li et al., 2016): distinct n-grams / n-grams;
* :func:`trace_diversity` — distinct-1 / distinct-2 of the clean continuation, and how
  many different token ids the whole run appended over all members (the alternatives
  TEMPO explored).

Examples:
    >>> from tempo_lens import TempoConfig, generate, make_tiny_model
    >>> model = make_tiny_model()
    >>> trace = generate(model, [1, 2, 3], TempoConfig(selection_threshold=0.05, max_steps=4))
    >>> q = clean_text_nll(model, trace)
    >>> q.n_tokens == len(trace.clean_ids())
    True

References:
    Li, Galley, Brockett, Gao, Dolan (2016), "A Diversity-Promoting Objective Function for
    Neural Conversation Models" (distinct-n).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from tempo_lens.backends import TempoModel
from tempo_lens.trace import Trace

__all__ = ["CleanTextNLL", "clean_text_nll", "distinct_n", "token_nll", "trace_diversity"]


def token_nll(
    model: TempoModel, token_ids: Sequence[int], *, start: int = 1
) -> Float[Tensor, " n"]:
    """``-ln p(x_t | x_<t)`` for ``t = start .. len(token_ids) - 1`` under the plain model.

    One forward of the whole sequence, without hooks (``model.hooks`` contexts of the
    caller still apply: call it outside ``tempo_lens.attach``). Log-probabilities are
    computed in float64.

    Args:
        model: A ``HookedTransformer``.
        token_ids: The sequence (prompt + continuation).
        start: First scored position, ``>= 1`` (position 0 has no context).

    Returns:
        ``[len(token_ids) - start]`` float64 NLLs in nats (empty when nothing is scored).
    """
    ids = [int(t) for t in token_ids]
    if start < 1:
        raise ValueError(f"start must be >= 1 (position 0 has no context), got {start}")
    if start > len(ids):
        raise ValueError(f"start={start} is beyond the sequence (length {len(ids)})")
    if start == len(ids):
        return torch.zeros(0, dtype=torch.float64)
    if len(ids) > model.cfg.n_ctx:
        raise ValueError(f"sequence of {len(ids)} tokens exceeds the context ({model.cfg.n_ctx})")
    tokens = torch.tensor([ids], device=model.cfg.device)
    with torch.no_grad():
        # never padded: an explicit all-ones mask, whatever the tokenizer's padding side
        logits = model(tokens, attention_mask=torch.ones_like(tokens), return_type="logits")[0]
    logp = torch.log_softmax(logits[start - 1 : -1].to(torch.float64), dim=-1)
    target = tokens[0, start:].unsqueeze(-1)
    return -logp.gather(-1, target).squeeze(-1).cpu()


@dataclass(frozen=True)
class CleanTextNLL:
    """Plain-model NLL of a trace's clean continuation given its prompt.

    Attributes:
        per_token: ``-ln p`` (nats) of each clean token, in step order.
        mean_nll: Mean of ``per_token`` (NaN when the trace generated nothing).
        perplexity: ``exp(mean_nll)``.
        n_tokens: Number of clean tokens scored.
    """

    per_token: list[float]
    mean_nll: float
    perplexity: float
    n_tokens: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the scores."""
        return {
            "per_token": list(self.per_token),
            "mean_nll": self.mean_nll,
            "perplexity": self.perplexity,
            "n_tokens": self.n_tokens,
        }


def clean_text_nll(model: TempoModel, trace: Trace) -> CleanTextNLL:
    """Score ``trace``'s clean continuation with the plain model, given the prompt.

    The clean continuation is the top surviving member of each step (see the module
    docstring).
    """
    prompt = trace.state.token_ids[: trace.prompt_length]
    clean = trace.clean_ids()
    nll = token_nll(model, prompt + clean, start=len(prompt)).tolist()
    mean = math.fsum(nll) / len(nll) if nll else float("nan")
    return CleanTextNLL(nll, mean, math.exp(mean) if nll else float("nan"), len(nll))


def distinct_n(tokens: Sequence[Any], n: int = 1) -> float:
    """Distinct n-grams / n-grams of ``tokens`` (NaN when there are no n-grams).

    >>> distinct_n([1, 2, 1, 2], 1), round(distinct_n([1, 2, 1, 2], 2), 4)
    (0.5, 0.6667)
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def trace_diversity(trace: Trace) -> dict[str, float | int]:
    """Diversity of one run.

    Returns:
        ``distinct_1`` / ``distinct_2`` of the clean continuation (:func:`distinct_n`),
        ``generated_tokens`` (every member appended, pruned or not),
        ``distinct_generated`` (different token ids among them) and
        ``distinct_generated_ratio`` (their ratio; NaN when nothing was generated).
    """
    clean = trace.clean_ids()
    gen = trace.state.token_ids[trace.prompt_length :]
    n_distinct = len(set(gen))
    return {
        "distinct_1": distinct_n(clean, 1),
        "distinct_2": distinct_n(clean, 2),
        "generated_tokens": len(gen),
        "distinct_generated": n_distinct,
        "distinct_generated_ratio": n_distinct / len(gen) if gen else float("nan"),
    }
