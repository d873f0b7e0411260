"""Retroactive pruning policies: layer choice, attention scores, rules (pure maths).

Once ``lookahead`` further steps have been generated after a parallel set, the attention
that the newer tokens pay to each member of the set says which alternative the
continuation actually uses. This module holds the pure parts of that decision:

* :func:`resolve_layers` — which layers vote (``"all"``, thirds, or explicit indices);
* :func:`score_members` — one score per member *token*: the attention its key column
  receives, aggregated over every ``(layer, head)`` pair, then over the queries;
* :func:`decide` with :class:`RelativeRule` / :class:`AbsoluteRule` — which members to
  prune. The best-scoring member is never pruned (ties: lowest member rank);
* :func:`gather_votes` and :func:`judge` — one set's judgement: the members' key columns
  from the voting steps' attention rows, scored and decided under a :class:`PruningConfig`
  (the generation loop and the counterfactual re-judging of
  :func:`tempo_lens.analysis.rejudge` both go through these);
* :func:`prefilter` with :class:`ProbabilityRatioRule` — a *pre-append* policy that drops
  weak candidates before they enter the sequence.

Examples:
    >>> import torch
    >>> att = torch.zeros(1, 1, 2, 4)  # layer head query key
    >>> att[..., 1], att[..., 2] = 0.5, 0.125
    >>> scores = score_members(att, [1, 2], head_agg="mean", query_agg="mean")
    >>> scores.tolist()
    [0.5, 0.125]
    >>> decide(scores, RelativeRule(ratio=0.5))
    [False, True]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from tempo_lens._numbers import IntLike, LayersLike, RealLike, as_int, normalise_fields

__all__ = [
    "AGGREGATIONS",
    "LAYER_GROUPS",
    "AbsoluteRule",
    "ProbabilityRatioRule",
    "PruningConfig",
    "RelativeRule",
    "decide",
    "gather_votes",
    "judge",
    "parse_rule",
    "prefilter",
    "resolve_layers",
    "score_members",
]

Aggregation = Literal["mean", "max", "sum"]
AGGREGATIONS = ("mean", "max", "sum")
LAYER_GROUPS = ("all", "early", "middle", "late")


def resolve_layers(spec: LayersLike, n_layers: int) -> list[int]:
    """Layer indices named by ``spec``.

    Thirds by integer division: ``"early" = range(0, n//3)``, ``"middle" = range(n//3,
    2n//3)``, ``"late" = range(2n//3, n)``; ``n = 30`` gives 0-9, 10-19, 20-29; ``n = 2``
    gives early empty (an error), middle ``[0]``, late ``[1]``.

    Args:
        spec: ``"all"``, ``"early"``, ``"middle"``, ``"late"``, indices as a string
            (``"0,3,5"``) or a sequence of ints.
        n_layers: Number of layers of the model.

    Returns:
        Sorted, de-duplicated layer indices, never empty (else ``ValueError``).
    """
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    parsed = _parse_layer_spec(spec)
    if isinstance(parsed, str):
        a, b = n_layers // 3, 2 * n_layers // 3
        bounds = {"all": (0, n_layers), "early": (0, a), "middle": (a, b), "late": (b, n_layers)}
        layers = list(range(*bounds[parsed]))
        if not layers:
            raise ValueError(f"layer group {parsed!r} is empty for a {n_layers}-layer model")
        return layers
    bad = [x for x in parsed if x >= n_layers]
    if bad:
        raise ValueError(f"layer indices {bad} out of range for a {n_layers}-layer model")
    return parsed


def _parse_layer_spec(spec: LayersLike) -> str | list[int]:
    """A group name, or sorted distinct non-negative indices (range unchecked)."""
    if isinstance(spec, str):
        name = spec.strip().lower()
        if name in LAYER_GROUPS:
            return name
        try:
            items: list[int] = [int(p) for p in name.split(",")]
        except ValueError:
            raise ValueError(
                f"layers must be one of {LAYER_GROUPS} or indices like '0,3,5', got {spec!r}"
            ) from None
    else:
        try:
            values = [as_int(x) for x in spec]
        except TypeError:
            raise ValueError(
                f"layers must be a group name or a list of ints, got {spec!r}"
            ) from None
        if any(isinstance(x, bool) or not isinstance(x, int) for x in values):
            raise ValueError(f"layer indices must be ints, got {values!r}")
        items = values
    if not items or min(items) < 0:
        raise ValueError(f"layer indices must be a non-empty list of ints >= 0, got {items}")
    return sorted(set(items))


def _check_agg(name: str, how: str) -> None:
    if how not in AGGREGATIONS:
        raise ValueError(f"{name} must be one of {AGGREGATIONS}, got {how!r}")


def _reduce(x: Tensor, how: str) -> Tensor:
    if how == "max":
        return x.amax(dim=0)
    return x.mean(dim=0) if how == "mean" else x.sum(dim=0)


def _check_ratio(owner: str, ratio: float) -> None:
    if not isinstance(ratio, float) or not 0.0 <= ratio <= 1.0:
        raise ValueError(f"{owner}.ratio must be in [0, 1], got {ratio!r}")


def _first_argmax(values: Sequence[float]) -> int:
    """Index of the largest value; ties go to the lowest index."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def score_members(
    attention: Float[Tensor, "layer head query key"],
    member_keys: Sequence[int],
    *,
    head_agg: Aggregation,
    query_agg: Aggregation,
) -> Float[Tensor, " member"]:
    """Attention received by each member of a set: float64, one score per member token.

    Args:
        attention: Attention patterns of the selected layers, restricted to the queries
            that should vote (those appended after the set). Keys are physical indices.
        member_keys: Physical indices (key columns) of the set's members, in member rank
            order (rank decides ties in :func:`decide`).
        head_agg: How to aggregate over all ``(layer, head)`` pairs, per query.
        query_agg: How to aggregate the per-query values over queries.
    """
    _check_agg("head_agg", head_agg)
    _check_agg("query_agg", query_agg)
    if attention.ndim != 4 or attention.shape[2] == 0:
        raise ValueError(
            f"attention must be [layer, head, query>=1, key], got {tuple(attention.shape)}"
        )
    keys, n_keys = [int(k) for k in member_keys], attention.shape[3]
    if not keys or len(set(keys)) != len(keys) or not 0 <= min(keys) <= max(keys) < n_keys:
        raise ValueError(f"member_keys must be distinct, in [0, {n_keys}), got {keys}")
    cols = attention.detach().to(torch.float64)[..., keys]  # layer head query member
    per_query = _reduce(cols.flatten(0, 1), head_agg)  # query member
    return _reduce(per_query, query_agg)


@dataclass(frozen=True, kw_only=True)
class RelativeRule:
    """Keep members whose score is ``>= ratio`` × the best sibling's score.

    Attributes:
        ratio: In ``[0, 1]``; 0 never prunes, 1 keeps only members tied with the best.
    """

    ratio: RealLike

    def __post_init__(self) -> None:
        normalise_fields(self, reals=("ratio",))
        _check_ratio("RelativeRule", self.ratio)

    def describe(self) -> str:
        """A short label, e.g. ``relative(r=0.5)``."""
        return f"relative(r={self.ratio:g})"


@dataclass(frozen=True, kw_only=True)
class AbsoluteRule:
    """Keep members whose score is ``>= threshold`` (the best member is kept regardless).

    Attributes:
        threshold: Finite, ``>= 0``, in :func:`score_members` units (``sum`` may exceed 1).
    """

    threshold: RealLike

    def __post_init__(self) -> None:
        normalise_fields(self, reals=("threshold",))
        t = self.threshold
        if not isinstance(t, float) or not (math.isfinite(t) and t >= 0.0):
            raise ValueError(f"AbsoluteRule.threshold must be finite and >= 0, got {t!r}")

    def describe(self) -> str:
        """A short label, e.g. ``absolute(t=0.1)``."""
        return f"absolute(t={self.threshold:g})"


PruningRule = RelativeRule | AbsoluteRule


def decide(scores: Float[Tensor, " member"] | Sequence[float], rule: PruningRule) -> list[bool]:
    """Which members of one set to prune (``True`` = prune), in member rank order.

    The best-scoring member is never pruned (ties: the lowest rank), so a set of one never
    prunes. Raises ``ValueError`` on empty or NaN scores.
    """
    vals = [float(s) for s in (scores.tolist() if isinstance(scores, Tensor) else scores)]
    if not vals or any(math.isnan(v) for v in vals):
        raise ValueError(f"scores must be non-empty and not NaN, got {vals}")
    best = _first_argmax(vals)
    if isinstance(rule, RelativeRule):
        cutoff = rule.ratio * vals[best]
    elif isinstance(rule, AbsoluteRule):
        cutoff = rule.threshold
    else:
        raise ValueError(f"unknown pruning rule {rule!r}")
    return [i != best and v < cutoff for i, v in enumerate(vals)]


@dataclass(frozen=True, kw_only=True)
class ProbabilityRatioRule:
    """Pre-append policy: drop candidates with ``p < ratio * p_top``.

    Attributes:
        ratio: In ``[0, 1]``; 0 keeps everything.
    """

    ratio: RealLike

    def __post_init__(self) -> None:
        normalise_fields(self, reals=("ratio",))
        _check_ratio("ProbabilityRatioRule", self.ratio)

    def describe(self) -> str:
        """A short label, e.g. ``prob_ratio(r=0.1)``."""
        return f"prob_ratio(r={self.ratio:g})"


def prefilter(
    token_ids: Sequence[int], probs: Sequence[float], rule: ProbabilityRatioRule
) -> tuple[list[int], list[float], list[tuple[int, float]]]:
    """Drop candidates with ``p < ratio * p_top`` before they enter the sequence.

    The top candidate (ties: first) is always kept. Inputs are parallel sequences, e.g.
    ``Selection.token_ids`` and ``Selection.probs``. Returns ``(kept_ids, kept_probs,
    dropped)`` in input order, ``dropped`` holding ``(token_id, probability)`` pairs.
    """
    ids, ps = [int(t) for t in token_ids], [float(p) for p in probs]
    if not ids or len(ids) != len(ps):
        raise ValueError("token_ids and probs must be non-empty and of equal length")
    top = _first_argmax(ps)
    cutoff = rule.ratio * ps[top]
    keep = [i == top or p >= cutoff for i, p in enumerate(ps)]
    kept = [i for i, k in enumerate(keep) if k]
    return (
        [ids[i] for i in kept],
        [ps[i] for i in kept],
        [(ids[i], ps[i]) for i, k in enumerate(keep) if not k],
    )


@dataclass(frozen=True, kw_only=True)
class PruningConfig:
    """Everything the generation loop needs to prune retroactively.

    After ``lookahead`` further steps following a set, each of its members is scored by
    :func:`score_members` over ``layers`` using the queries appended since the set, and
    :func:`decide` applies ``rule``.

    Attributes:
        rule: :class:`RelativeRule` or :class:`AbsoluteRule`.
        lookahead: Steps to wait after a set before judging it (``>= 1``).
        layers: Layer spec for :func:`resolve_layers` (a list is stored as a tuple).
        head_agg: Aggregation over ``(layer, head)`` pairs.
        query_agg: Aggregation over voting queries.
        mode: ``soft`` (a pruned token is hidden from later queries; the tokens appended
            since keep what they read from it) or ``hard`` (those tokens are recomputed
            without it, their KV-cache entries rebuilt: as if it had never been appended).
    """

    rule: PruningRule
    lookahead: IntLike = 1
    layers: LayersLike = "all"
    head_agg: Aggregation = "mean"
    query_agg: Aggregation = "mean"
    mode: Literal["soft", "hard"] = "soft"

    def __post_init__(self) -> None:
        normalise_fields(self, ints=("lookahead",))
        if self.mode not in ("soft", "hard"):
            raise ValueError(f"pruning mode must be 'soft' or 'hard', got {self.mode!r}")
        if not isinstance(self.rule, (RelativeRule, AbsoluteRule)):
            raise ValueError(f"rule must be a RelativeRule or AbsoluteRule, got {self.rule!r}")
        la = self.lookahead
        if isinstance(la, bool) or not isinstance(la, int) or la < 1:
            raise ValueError(f"lookahead must be an int >= 1, got {la!r}")
        _check_agg("head_agg", self.head_agg)
        _check_agg("query_agg", self.query_agg)
        _parse_layer_spec(self.layers)  # syntax only; the range needs n_layers (layers_for)
        if not isinstance(self.layers, str):  # e.g. np.arange(...): a tuple of plain ints
            object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))

    def layers_for(self, n_layers: int) -> list[int]:
        """The configured layers of an ``n_layers``-layer model."""
        return resolve_layers(self.layers, n_layers)

    def describe(self) -> str:
        """A one-line label of the rule, lookahead, layers and aggregations."""
        layers = self.layers if isinstance(self.layers, str) else ",".join(map(str, self.layers))
        aggs = f"heads={self.head_agg}, queries={self.query_agg}"
        hard = ", hard" if self.mode == "hard" else ""
        return f"{self.rule.describe()}, lookahead={self.lookahead}, layers={layers}, {aggs}{hard}"


def parse_rule(spec: str) -> RelativeRule | AbsoluteRule | None:
    """Parse the command-line rule syntax: ``none`` | ``relative:R`` | ``absolute:A``.

    Args:
        spec: The rule text (``""`` or ``"none"`` disables pruning).

    Returns:
        The rule, or None when pruning is disabled.

    Raises:
        ValueError: On any other text (one line naming the accepted forms).
    """
    if spec in ("", "none"):
        return None
    kind, _, value = spec.partition(":")
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if kind not in ("relative", "absolute") or not math.isfinite(number):
        raise ValueError(f"prune must be none, relative:R or absolute:A, got {spec!r}")
    if kind == "relative":
        return RelativeRule(ratio=number)
    return AbsoluteRule(threshold=number)


def gather_votes(
    rows: Callable[[int], Any], steps: Iterable[int], keys: Sequence[int]
) -> Float[Tensor, "layer head query member"]:
    """The attention a set's members receive from the voting queries.

    Args:
        rows: ``step -> [layer, head, query, key]`` attention rows (tensor or array) of the
            queries appended at that step, for the voting layers.
        steps: The voting steps (after the set, up to the judging step), in order.
        keys: Physical indices (key columns) of the members, in member rank order.

    Returns:
        ``rows(s)[..., keys]`` concatenated over ``steps`` along the query axis.
    """
    cols = list(keys)
    return torch.cat([torch.as_tensor(rows(s))[..., cols] for s in steps], dim=2)


def judge(
    votes: Float[Tensor, "layer head query member"], prune: PruningConfig
) -> tuple[list[float], list[bool]]:
    """Score every member column of ``votes`` and apply ``prune.rule`` (one set's judgement).

    Returns:
        ``(scores, verdict)``: :func:`score_members` with ``prune``'s aggregations and
        :func:`decide` (``True`` = prune), in member rank order.
    """
    scores = score_members(
        votes,
        list(range(votes.shape[-1])),
        head_agg=prune.head_agg,
        query_agg=prune.query_agg,
    ).tolist()
    return scores, decide(scores, prune.rule)
