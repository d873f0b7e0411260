"""Threshold selection of a parallel set, and the mixture readout (pure maths, no model).

At each logical step TEMPO turns one next-token distribution into a *parallel set*:

1. ``p = softmax(logits)`` over the full vocabulary, with no temperature, computed in
   float64 so that ``p_i >= tau`` is a well-defined comparison (pass float64 logits when an
   edge case must be exact: float32 logits are rounded before the softmax);
2. every token with ``p_i >= tau`` (inclusive) qualifies; qualifying tokens are ordered by
   probability descending, ties broken by token id ascending;
3. if none qualifies, the top-1 token is taken (``fell_back=True``);
4. the set is cut to its first ``max_parallel`` members (``capped=True`` if that removed any).

:func:`select_from_probs` is the same rule applied to a distribution that is already
normalised (e.g. the output of :func:`mixture_distribution`, the "mixture" readout: the
probability-weighted average of the surviving members' next-token distributions).

Examples:
    >>> import math, torch
    >>> logits = torch.tensor([math.log(0.25), math.log(0.5), math.log(0.25)], dtype=torch.float64)
    >>> sel = select(logits, 0.25, max_parallel=None)
    >>> sel.token_ids, sel.probs
    ((1, 0, 2), (0.5, 0.25, 0.25))
    >>> select(logits, 0.25, max_parallel=2).token_ids
    (1, 0)
    >>> select(logits, 0.9, max_parallel=None).fell_back
    True
    >>> mixture_distribution(torch.eye(2, dtype=torch.float64), [3.0, 1.0]).tolist()
    [0.75, 0.25]

References:
    The TEMPO mechanism is described in ``docs/concepts.md`` and ``DESIGN.md`` §1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from tempo_lens._numbers import IntLike, RealLike, as_int, as_real
from tempo_lens.schedules import check_threshold

__all__ = [
    "Selection",
    "check_logits",
    "mixture_distribution",
    "probabilities",
    "readout_distribution",
    "select",
    "select_from_probs",
]


@dataclass(frozen=True, kw_only=True)
class Selection:
    """The parallel set chosen at one step, with enough context to explain the choice.

    Attributes:
        token_ids: Selected token ids, probability descending (ties: id ascending).
        probs: Their probabilities (float64 precision), same order.
        threshold: The threshold ``tau`` that was applied.
        fell_back: True when no token reached ``tau`` and the top-1 token was taken.
        capped: True when ``max_parallel`` removed qualifying tokens.
        n_qualifying: Number of tokens with ``p >= tau`` (before the cap; 0 on fallback).
        candidates: ``(token_id, probability)`` of every qualifying token before the cap, in
            selection order. Empty on fallback (nothing qualified).
    """

    token_ids: tuple[int, ...]
    probs: tuple[float, ...]
    threshold: float
    fell_back: bool
    capped: bool
    n_qualifying: int
    candidates: tuple[tuple[int, float], ...]

    def __post_init__(self) -> None:
        if not self.token_ids:
            raise ValueError("a Selection needs at least one token")
        if len(self.token_ids) != len(self.probs):
            raise ValueError("token_ids and probs must have the same length")

    @property
    def size(self) -> int:
        """Number of selected members."""
        return len(self.token_ids)

    @property
    def top_token(self) -> int:
        """The most probable selected token."""
        return self.token_ids[0]


def _check_max_parallel(max_parallel: IntLike | None) -> None:
    max_parallel = as_int(max_parallel)
    if max_parallel is None:
        return
    if isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or max_parallel < 1:
        raise ValueError(f"max_parallel must be an int >= 1 or None, got {max_parallel!r}")


def probabilities(logits: Float[Tensor, "... d_vocab"]) -> Float[Tensor, "... d_vocab"]:
    """Full-vocabulary softmax in float64 (no temperature): the distribution TEMPO thresholds.

    Args:
        logits: Logits over the vocabulary (``-inf`` entries get probability 0).

    Returns:
        float64 probabilities, same shape.

    Raises:
        ValueError: If the logits contain NaN or ``+inf``, or a row is entirely ``-inf``.
    """
    x = logits.detach()
    check_logits(x)
    # softmax casts to float64 before the operation (torch docs), without a separate copy
    return torch.softmax(x, dim=-1, dtype=torch.float64)


def check_logits(logits: Float[Tensor, "... d_vocab"]) -> None:
    """The one check of a model's logits before any decoder selects from them.

    TEMPO (:func:`probabilities`), greedy, sampling and beam search
    (:mod:`tempo_lens.generation.baselines`) all call it, so a model whose logits are NaN
    or ``+inf`` (overflowing half-precision weights, a broken checkpoint) stops every
    decoder with the same error instead of returning arbitrary tokens.

    Raises:
        ValueError: If the logits contain NaN or ``+inf``, or a row is entirely ``-inf``.
    """
    x = logits.detach()
    if x.is_floating_point() and x.numel() and bool(torch.isfinite(x.sum())):
        return  # one pass: a finite sum means no NaN and no +-inf anywhere
    if torch.isnan(x).any() or torch.isposinf(x).any():
        raise ValueError(
            "logits contain NaN or +inf: the model's output is not finite "
            "(check the weights and their dtype)"
        )
    if (x == -math.inf).all(dim=-1).any():
        raise ValueError("logits are -inf for the whole vocabulary")


def select_from_probs(
    probs: Float[Tensor, " d_vocab"], threshold: RealLike, *, max_parallel: IntLike | None
) -> Selection:
    """Select a parallel set from an already normalised distribution.

    Args:
        probs: Next-token probabilities over the vocabulary (compared in float64).
        threshold: ``tau`` in ``(0, 1]``; tokens with ``p >= tau`` qualify.
        max_parallel: Keep at most this many members (``None``: no cap).

    Returns:
        The :class:`Selection`.

    Raises:
        ValueError: On a threshold outside ``(0, 1]``, ``max_parallel < 1``, a tensor
            that is not 1-D, or NaN/negative probabilities.
    """
    check_threshold(threshold)
    _check_max_parallel(max_parallel)
    threshold, max_parallel = as_real(threshold), as_int(max_parallel)
    if probs.ndim != 1 or probs.shape[0] == 0:
        raise ValueError(f"probs must be a non-empty 1-D tensor, got shape {tuple(probs.shape)}")
    p = probs.detach().to(torch.float64)
    if torch.isnan(p).any() or (p < 0).any():
        raise ValueError("probs contain NaN or negative values")
    # A stable descending sort keeps equal probabilities in id order: ties -> id ascending.
    sorted_p, sorted_ids = torch.sort(p, descending=True, stable=True)
    n_qualifying = int((sorted_p >= float(threshold)).sum())
    ids = sorted_ids.tolist()
    ps = sorted_p.tolist()
    candidates = tuple(zip(ids[:n_qualifying], ps[:n_qualifying], strict=True))
    fell_back = n_qualifying == 0
    n_keep = 1 if fell_back else n_qualifying
    if max_parallel is not None:
        n_keep = min(n_keep, max_parallel)
    return Selection(
        token_ids=tuple(int(i) for i in ids[:n_keep]),
        probs=tuple(float(q) for q in ps[:n_keep]),
        threshold=float(threshold),
        fell_back=fell_back,
        capped=n_keep < n_qualifying,
        n_qualifying=n_qualifying,
        candidates=candidates,
    )


def select(
    logits: Float[Tensor, " d_vocab"], threshold: RealLike, *, max_parallel: IntLike | None
) -> Selection:
    """Select the parallel set of one step from next-token logits.

    ``softmax`` (float64, no temperature) then :func:`select_from_probs`.

    Args:
        logits: Next-token logits over the full vocabulary.
        threshold: ``tau`` in ``(0, 1]``; tokens with ``p >= tau`` qualify (inclusive).
        max_parallel: Keep at most this many members (``None``: no cap).

    Returns:
        The :class:`Selection` (top-1 fallback when nothing qualifies).
    """
    check_threshold(threshold)
    _check_max_parallel(max_parallel)
    if logits.ndim != 1:
        raise ValueError(f"logits must be 1-D [d_vocab], got shape {tuple(logits.shape)}")
    return select_from_probs(probabilities(logits), threshold, max_parallel=max_parallel)


def mixture_distribution(
    probs: Float[Tensor, "k d_vocab"], weights: Sequence[float] | Float[Tensor, " k"]
) -> Float[Tensor, " d_vocab"]:
    """Probability-weighted mixture ``sum_i w_i p_i / sum_i w_i`` of ``k`` distributions.

    Used by the "mixture" readout: ``probs[i]`` is the next-token distribution read at
    surviving member ``i``, ``weights[i]`` its selection probability. Weights are
    renormalised to sum to 1, so a mixture of distributions is a distribution.

    Args:
        probs: ``k`` next-token distributions (rows).
        weights: ``k`` non-negative weights with a positive sum.

    Returns:
        The float64 mixture over the vocabulary.

    Raises:
        ValueError: On shape mismatch, negative/non-finite weights or a zero weight sum.
    """
    if probs.ndim != 2 or probs.shape[0] == 0:
        raise ValueError(f"probs must be [k, d_vocab] with k >= 1, got {tuple(probs.shape)}")
    w = torch.as_tensor(weights, dtype=torch.float64).detach().to(probs.device).flatten()
    if w.shape[0] != probs.shape[0]:
        raise ValueError(f"got {w.shape[0]} weights for {probs.shape[0]} distributions")
    if not torch.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"weights must be finite and non-negative, got {w.tolist()}")
    total = float(w.sum())
    if total <= 0:
        raise ValueError("weights must have a positive sum")
    return (w / total) @ probs.detach().to(torch.float64)


def readout_distribution(
    rows: Float[Tensor, "k d_vocab"], probs: Sequence[float], mode: str
) -> Float[Tensor, " d_vocab"]:
    """The next step's distribution from the logits rows of a set's ``k`` members.

    Args:
        rows: Logits at the members, in set order (most probable first).
        probs: The members' selection probabilities (weights of the mixture).
        mode: ``"last"`` (the last member's distribution), ``"top"`` (the first member's)
            or ``"mixture"`` (:func:`mixture_distribution` weighted by ``probs``).

    Raises:
        ValueError: unknown ``mode``.
    """
    if mode == "last":
        return probabilities(rows[-1])
    if mode == "top":
        return probabilities(rows[0])
    if mode == "mixture":
        return mixture_distribution(probabilities(rows), list(probs))
    raise ValueError(f"readout must be last, top or mixture, got {mode!r}")
