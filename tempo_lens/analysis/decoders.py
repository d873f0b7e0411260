"""Comparing decoders: diversity, coverage and tree shape, as pure functions of token ids.

Used by :mod:`tempo_lens.experiments.compare_decoders` to put TEMPO next to greedy, beam
search, sampling and prompt-lookup decoding:

* :func:`pairwise_cosine_distance` — how different the alternatives a method considers at
  one step are: mean ``1 - cos`` over pairs of distinct tokens of their rows of the model's
  own embedding matrix ``W_E``;
* :func:`pooled_distinct_n` — distinct-n (Li et al. 2016) over several outputs pooled (how
  different a method's outputs are from one another);
* :func:`first_divergence` and :func:`covered` — does a TEMPO set contain the token at
  which another method's hypothesis first leaves TEMPO's clean path?
* :func:`convergence_depth` — after a set, how many tokens until the members' replayed
  greedy continuations agree (the same token at the same offset).

Examples:
    >>> first_divergence([5, 6, 7], [5, 9, 7])
    1
    >>> covered([5, 9, 7], [5, 6, 7], [[5], [6, 9], [7]])
    True
    >>> convergence_depth([[4, 8, 8], [3, 8, 8]])
    2
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

__all__ = [
    "convergence_depth",
    "covered",
    "first_divergence",
    "pairwise_cosine_distance",
    "pooled_distinct_n",
]


def pairwise_cosine_distance(
    embeddings: Float[Tensor, "d_vocab d_model"], token_ids: Sequence[int]
) -> float:
    """Mean cosine distance ``1 - cos(e_a, e_b)`` over pairs of *distinct* token ids.

    Args:
        embeddings: The embedding matrix (e.g. ``model.W_E``).
        token_ids: The alternatives (duplicates count once).

    Returns:
        The mean over pairs (float64 arithmetic); NaN with fewer than two distinct ids.
    """
    ids = sorted({int(t) for t in token_ids})
    if len(ids) < 2:
        return float("nan")
    e = embeddings[ids].detach().to(torch.float64).cpu()
    e = e / e.norm(dim=-1, keepdim=True)
    cos = e @ e.T
    pairs = list(itertools.combinations(range(len(ids)), 2))
    return float(np.mean([1.0 - float(cos[a, b]) for a, b in pairs]))


def pooled_distinct_n(outputs: Sequence[Sequence[int]], n: int = 2) -> float:
    """Distinct n-grams / n-grams, counted over all ``outputs`` together (NaN if none).

    >>> pooled_distinct_n([[1, 2, 3], [1, 2, 4]], 2)
    0.75
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = [tuple(o[i : i + n]) for o in outputs for i in range(len(o) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def first_divergence(hypothesis: Sequence[int], reference: Sequence[int]) -> int | None:
    """First position where ``hypothesis`` differs from ``reference``.

    None if one is a prefix of the other.
    """
    for i, (a, b) in enumerate(zip(hypothesis, reference, strict=False)):
        if a != b:
            return i
    return None


def covered(
    hypothesis: Sequence[int], clean: Sequence[int], sets: Sequence[Sequence[int]]
) -> bool | None:
    """Whether ``hypothesis`` leaves TEMPO's clean path through a member of TEMPO's set.

    The token where ``hypothesis`` first leaves the clean path is looked up in TEMPO's set
    at that step.

    Args:
        hypothesis: Generated ids of another method's hypothesis (e.g. a final beam).
        clean: TEMPO's clean path (top surviving member per step).
        sets: TEMPO's members per step (pruned ones included: they were considered).

    Returns:
        True / False; None when the hypothesis never leaves the clean path within
        TEMPO's steps (nothing to cover).
    """
    i = first_divergence(hypothesis, clean)
    if i is None or i >= len(sets):
        return None
    return int(hypothesis[i]) in {int(t) for t in sets[i]}


def convergence_depth(continuations: Sequence[Sequence[int]]) -> int | None:
    """Smallest ``d >= 1`` such that every continuation has the same token at ``d - 1``.

    None if they never agree within their common length.

    >>> convergence_depth([[1, 2], [3, 4]]) is None
    True
    """
    if len(continuations) < 2:
        raise ValueError("convergence needs at least two continuations")
    for d, column in enumerate(zip(*continuations, strict=False), start=1):
        if len(set(column)) == 1:
            return d
    return None
