"""Replaying the members of a TEMPO set as plain sequences, and attention entropy per forward.

TEMPO keeps several alternatives in one sequence. To ask whether the path it continues
with is the better one, each member is replayed **on its own**, by the plain model (no
TEMPO hooks, ordinary causal mask): the sequence ``prefix + [member]`` is continued
greedily for ``horizon`` tokens, recording ``-ln p`` of the member and of every
continuation token (float64 log-softmax). All members of a set share the prefix (the clean
path before the set), so they run as one batch of equal-length rows.

* :func:`member_paths` — the replays of one set's members (a dict cache shares replays
  between runs whose sets coincide); :func:`replay_sets` batches many sets, one batch per
  prefix length;
* :func:`replay_alternatives` — every candidate of one step of a trace replayed that way
  after the trace's clean path, as a table (would a rejected alternative have done better?);
* :class:`EntropyMeter` — mean attention entropy of the new query rows of every forward
  (``hook_pattern`` of all layers), for comparing TEMPO and beam search at the same step.

Examples:
    >>> import tempo_lens as tl
    >>> model = tl.make_tiny_model()
    >>> paths = member_paths(model, [3, 14, 15], [7, 9], horizon=3)
    >>> [len(p.continuation) for p in paths]
    [3, 3]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from tempo_lens.analysis.patterns import entropy
from tempo_lens.analysis.steps import step_alternatives
from tempo_lens.backends import TempoModel, forward, hook_name, make_kv_cache
from tempo_lens.trace import Trace

__all__ = [
    "EntropyMeter",
    "MemberPath",
    "continuation_nlls",
    "member_paths",
    "replay_alternatives",
    "replay_sets",
]


@dataclass(frozen=True)
class MemberPath:
    """One member replayed as its own plain sequence.

    Attributes:
        token_id: The member.
        member_nll: ``-ln p(member | prefix)`` (nats).
        continuation: The ``horizon`` greedy tokens after the member.
        continuation_nll: ``-ln p`` of each of them given everything before it.
    """

    token_id: int
    member_nll: float
    continuation: tuple[int, ...]
    continuation_nll: tuple[float, ...]

    @property
    def mean_continuation_nll(self) -> float:
        """Mean of :attr:`continuation_nll` (NaN when the horizon is 0)."""
        c = self.continuation_nll
        return math.fsum(c) / len(c) if c else float("nan")

    @property
    def path_nll(self) -> float:
        """Mean ``-ln p`` over the member and its continuation."""
        return (self.member_nll + math.fsum(self.continuation_nll)) / (1 + len(self.continuation))


def member_paths(
    model: TempoModel,
    prefix: Sequence[int],
    members: Sequence[int],
    *,
    horizon: int,
    cache: dict[tuple[Any, ...], MemberPath] | None = None,
) -> list[MemberPath]:
    """Replay each member after ``prefix`` and continue it greedily (see module docs).

    Args:
        model: The ``HookedTransformer`` (used plain: call outside TEMPO hooks).
        prefix: Token ids before the set (prompt + clean path so far).
        members: The set's member token ids.
        horizon: Greedy tokens generated after each member (``>= 1``).
        cache: Optional dict shared across calls; replays already in it are reused
            (:func:`replay_sets` fills it for many sets at once).

    Returns:
        One :class:`MemberPath` per member, in member order.

    Raises:
        ValueError: ``horizon < 1``, no members, or the sequence would exceed the context.
    """
    cache = {} if cache is None else cache
    replay_sets(model, [(prefix, members)], horizon=horizon, cache=cache)
    key = (tuple(int(t) for t in prefix), horizon)
    return [cache[key + (int(m),)] for m in members]


def replay_alternatives(
    model: TempoModel, trace: Trace, step: int, *, horizon: int = 8
) -> pd.DataFrame:
    """Every candidate of ``step`` replayed as a plain sequence after the clean path.

    The prefix is the prompt plus the trace's clean path before ``step``
    (:meth:`Trace.clean_ids`); each candidate (appended or not) is appended to it and
    continued greedily for ``horizon`` tokens by the plain model (:func:`member_paths`).

    Args:
        model: The model the trace was generated with (used plain, without TEMPO hooks).
        trace: A TEMPO trace.
        step: The step whose candidates to replay.
        horizon: Greedy tokens after each candidate (``>= 1``).

    Returns:
        The :func:`~tempo_lens.analysis.steps.step_alternatives` rows plus
        ``member_nll`` (nats), ``continuation`` (text of the greedy tokens),
        ``continuation_nll`` (mean over them) and ``path_nll`` (mean over the candidate
        and its continuation); the lowest ``path_nll`` is the alternative the plain
        model finds most likely over the horizon.

    Raises:
        ValueError: ``step`` outside the trace or ``horizon < 1``.
    """
    alts = step_alternatives(trace, step)
    prefix = trace.state.token_ids[: trace.prompt_length] + trace.clean_ids()[:step]
    paths = member_paths(model, prefix, alts["token_id"].tolist(), horizon=horizon)
    tok = model.tokenizer

    def text(ids: Sequence[int]) -> str:
        return str(tok.decode(list(ids))) if tok is not None else " ".join(f"<{i}>" for i in ids)

    return alts.assign(
        member_nll=[p.member_nll for p in paths],
        continuation=[text(p.continuation) for p in paths],
        continuation_nll=[p.mean_continuation_nll for p in paths],
        path_nll=[p.path_nll for p in paths],
    )


def replay_sets(
    model: TempoModel,
    sets: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    horizon: int,
    cache: dict[tuple[Any, ...], MemberPath],
) -> None:
    """Replay the members of many ``(prefix, members)`` sets into ``cache``.

    Rows of equal length (same prefix length) run as one batch, so sets at the same step
    of different generations share forwards; rows already in ``cache`` are skipped.
    """
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    by_len: dict[int, list[tuple[tuple[int, ...], int]]] = {}
    for prefix, members in sets:
        if not members:
            raise ValueError("no members to replay")
        p = tuple(int(t) for t in prefix)
        n = len(p) + 1 + horizon
        if n > model.cfg.n_ctx:
            raise ValueError(f"replay of {n} tokens exceeds the context ({model.cfg.n_ctx})")
        for m in members:
            if (p, horizon, int(m)) not in cache:
                by_len.setdefault(len(p), []).append((p, int(m)))
    for rows in by_len.values():
        rows = list(dict.fromkeys(rows))
        for lo in range(0, len(rows), 32):
            chunk = rows[lo : lo + 32]
            for (p, m), path in zip(chunk, _replay(model, chunk, horizon), strict=True):
                cache[(p, horizon, m)] = path


def _replay(
    model: TempoModel, rows: list[tuple[tuple[int, ...], int]], horizon: int
) -> list[MemberPath]:
    """Equal-length ``prefix + [member]`` rows, continued greedily in one batch."""
    device = model.cfg.device
    kv = make_kv_cache(model, batch_size=len(rows))
    x = torch.tensor([[*p, m] for p, m in rows], device=device)
    conts: list[list[int]] = [[] for _ in rows]
    nlls: list[list[float]] = [[] for _ in rows]
    with torch.no_grad():
        logits = forward(model, x, cache=kv)[:, -2:]
        logp = torch.log_softmax(logits.to(torch.float64), dim=-1).cpu()
        member_nll = [-float(logp[b, 0, m]) for b, (_, m) in enumerate(rows)]
        for t in range(horizon):
            last = logp[:, -1]
            nxt = last.argmax(dim=-1)
            for b in range(len(rows)):
                conts[b].append(int(nxt[b]))
                nlls[b].append(-float(last[b, nxt[b]]))
            if t + 1 < horizon:
                new = nxt[:, None].to(device)
                logits = forward(model, new, cache=kv)
                logp = torch.log_softmax(logits.to(torch.float64), dim=-1).cpu()
    return [
        MemberPath(m, member_nll[b], tuple(conts[b]), tuple(nlls[b]))
        for b, (_, m) in enumerate(rows)
    ]


class EntropyMeter:
    """Mean attention entropy (nats) of each forward's new query rows.

    Averaged over all layers, heads and batch rows; one value per forward while
    :attr:`active`.

    Attach with ``model.hooks(fwd_hooks=meter.fwd_hooks(model))``. With a KV cache the new
    queries are all rows of ``hook_pattern``; forward ``0`` of a generation is the prompt.

    Attributes:
        values: Mean entropy of each recorded forward, in call order.
    """

    def __init__(self) -> None:
        self.values: list[float] = []
        self._layers: dict[int, float] = {}
        self._n_layers = 0

    def fwd_hooks(self, model: TempoModel) -> list[tuple[str, Any]]:
        """Read-only ``hook_pattern`` hooks on every layer."""
        self._n_layers = model.cfg.n_layers
        return [(hook_name(layer, "pattern"), self._hook) for layer in range(self._n_layers)]

    def _hook(self, pattern: Tensor, hook: Any) -> None:
        h = entropy(pattern.detach().to(torch.float64).cpu().numpy())
        self._layers[len(self._layers)] = float(np.mean(h))
        if len(self._layers) == self._n_layers:
            self.values.append(float(np.mean(list(self._layers.values()))))
            self._layers = {}


def continuation_nlls(
    model: TempoModel, prompt: Sequence[int], outputs: Sequence[Sequence[int]]
) -> list[list[float]]:
    """``-ln p`` (nats) of every token of each output given ``prompt``, under the plain model.

    The same numbers as :func:`tempo_lens.analysis.quality.token_nll` of ``prompt + output``
    from ``len(prompt)``, computed for up to 16 outputs per forward: rows are right-padded,
    which cannot change earlier positions under the causal mask.
    """
    n = len(prompt)
    out: list[list[float]] = []
    for lo in range(0, len(outputs), 16):
        chunk = [list(map(int, o)) for o in outputs[lo : lo + 16]]
        width = max((len(o) for o in chunk), default=0)
        if width == 0:
            out += [[] for _ in chunk]
            continue
        rows = torch.tensor(
            [list(prompt) + o + [0] * (width - len(o)) for o in chunk], device=model.cfg.device
        )
        with torch.no_grad():
            # all-ones mask: right padding is harmless under the causal mask, and no token
            # is ever treated as padding whatever the tokenizer's padding side
            logits = forward(model, rows)[:, n - 1 : n - 1 + width]
        logp = torch.log_softmax(logits.to(torch.float64), dim=-1).cpu()
        target = rows[:, n : n + width].cpu().unsqueeze(-1)
        nll = -logp.gather(-1, target).squeeze(-1)
        out += [nll[b, : len(o)].tolist() for b, o in enumerate(chunk)]
    return out
