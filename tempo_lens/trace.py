"""The record of one generation: the sequence state, per-step records, and renderings.

A :class:`Trace` is what :func:`tempo_lens.generate` (and every baseline) returns. It holds
the :class:`~tempo_lens.SequenceState` the generation ended with (the one per-token truth:
token ids, steps, ranks, logical positions, pruning), the text of each token, and one
:class:`StepRecord` per step (threshold, readout, candidates, selection probabilities of the
members, pruning decisions). It saves to and loads from JSON losslessly and renders text:

* :meth:`Trace.bracket_text` — ``The cat sat on the[ mat/ floor].`` (each member keeps its
  own leading space; optional ANSI colours per member; pruned members marked ``~x~``);
* :meth:`Trace.clean_text` — the top surviving member of each step;
* :meth:`Trace.raw_text` — every physical token in order.

Pruning semantics: a token with ``pruned_at_step = s`` is invisible to every token
appended at a step ``> s`` and to the readout that produces step ``s + 1``'s
distribution. Tokens appended at steps ``<= s`` saw it (their keys/values were computed
with it), exactly as in a full forward of the final state under the TEMPO mask.

JSON format (``format: 2``): ``prompt``, ``model``, ``method``, ``config``,
``stop_reason``, ``extra``, ``state`` (:meth:`SequenceState.to_dict`), ``texts`` (one per
physical token) and ``steps``. Files of format 1 (a ``tokens`` list of per-token records)
are migrated on load.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tempo_lens._numbers import json_default
from tempo_lens.config import TempoConfig
from tempo_lens.io import atomic_write_json, first_non_finite
from tempo_lens.state import SequenceState

__all__ = ["Candidate", "PruneDecision", "StepRecord", "TokenRecord", "Trace", "provenance_line"]

TRACE_FORMAT = 2
ANSI_COLOURS = ("\x1b[32m", "\x1b[33m", "\x1b[36m", "\x1b[35m", "\x1b[34m", "\x1b[31m")
ANSI_RESET = "\x1b[0m"
ANSI_DIM = "\x1b[2m"


@dataclass(frozen=True)
class TokenRecord:
    """A read-only view of one physical token of a :class:`Trace`.

    Built on demand from the trace's :class:`~tempo_lens.SequenceState`, its texts and
    the step records; ``probability`` is the token's selection probability (``None`` for
    the prompt).
    """

    index: int
    token_id: int
    text: str
    step: int
    rank: int
    logical_position: float
    pruned_at_step: int | None = None
    probability: float | None = None


@dataclass(frozen=True)
class Candidate:
    """A token that qualified for a step's set (``p >= tau``, or the top-1 fallback)."""

    token_id: int
    text: str
    probability: float
    appended: bool


@dataclass(frozen=True)
class PruneDecision:
    """The verdict on one member of an earlier set, with the score behind it."""

    index: int
    token_id: int
    text: str
    set_step: int
    score: float
    best_score: float
    pruned: bool
    rule: str


@dataclass
class StepRecord:
    """One step: threshold, readout, candidates, members appended, pruning events."""

    step: int
    threshold: float
    readout: str
    candidates: list[Candidate]
    indices: list[int]
    fell_back: bool = False
    capped: bool = False
    prefiltered: list[Candidate] = field(default_factory=list)
    pruning: list[PruneDecision] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)
    """Selection probability of each member (aligned with ``indices``)."""


@dataclass
class Trace:
    """A whole generation (TEMPO or a baseline), JSON-round-trippable.

    Attributes:
        prompt: The prompt as given (text or token ids).
        model: The model's name.
        method: ``"tempo"`` or a baseline's name.
        config: The generation's configuration (``TempoConfig.to_dict()`` for TEMPO).
        state: The final :class:`~tempo_lens.SequenceState` (one record of every token).
        texts: Text of each token, by physical index.
        steps: One :class:`StepRecord` per step (``steps[k].indices`` is set ``k``).
        stop_reason: ``"max_steps"``, ``"eos"`` or ``"context"``.
        extra: Method-specific data (e.g. beam scores).
        provenance: Where the trace came from (:func:`tempo_lens.backends.provenance`:
            ``model``, ``backend``, ``transformer_lens`` version and, for the offline
            models, ``weights_sha256``); empty in traces written before it was recorded.
        format: The JSON format version.

    Raises:
        ValueError: The texts or step records disagree with the state.
    """

    prompt: str | list[int]
    model: str
    method: str
    config: dict[str, Any]
    state: SequenceState
    texts: list[str]
    steps: list[StepRecord]
    stop_reason: str = "max_steps"
    extra: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    format: int = TRACE_FORMAT

    def __post_init__(self) -> None:
        st = self.state
        if len(self.texts) != len(st):
            raise ValueError(f"{len(self.texts)} texts for {len(st)} tokens")
        if len(self.steps) != st.n_steps:
            raise ValueError(f"{len(self.steps)} step records for {st.n_steps} sets")
        for k, rec in enumerate(self.steps):
            if rec.step != k or list(rec.indices) != st.set_indices[k]:
                raise ValueError(f"step record {k} does not match set {k} of the state")
            if rec.probabilities and len(rec.probabilities) != len(rec.indices):
                raise ValueError(f"step {k}: {len(rec.probabilities)} probabilities")

    # ------------------------------------------------------------------ state
    @property
    def prompt_length(self) -> int:
        """Number of prompt tokens."""
        return self.state.prompt_length

    @property
    def isolate(self) -> bool:
        """Whether members of a set could not attend to each other."""
        return self.state.isolate

    @property
    def tempo_config(self) -> TempoConfig | None:
        """The :class:`TempoConfig` (``None`` for baselines)."""
        return TempoConfig.from_dict(self.config) if self.method == "tempo" else None

    def to_state(self) -> SequenceState:
        """A copy of the :class:`SequenceState` the trace ends with."""
        st = self.state.copy()
        st.clear_stale()
        return st

    def token(self, index: int) -> TokenRecord:
        """The record of the token at a physical index."""
        st = self.state
        step, rank = st.steps[index], st.ranks[index]
        probs = self.steps[step].probabilities if step >= 0 else []
        return TokenRecord(
            index=index,
            token_id=st.token_ids[index],
            text=self.texts[index],
            step=step,
            rank=rank,
            logical_position=st.logical[index],
            pruned_at_step=st.pruned_at[index],
            probability=float(probs[rank]) if probs else None,
        )

    @property
    def tokens(self) -> list[TokenRecord]:
        """Every token's record, by physical index (a view built from :attr:`state`)."""
        return [self.token(i) for i in range(len(self.state))]

    def members(self, step: int) -> list[TokenRecord]:
        """The token records of one step's set, in member order."""
        return [self.token(i) for i in self.steps[step].indices]

    # ------------------------------------------------------------------ text
    def clean_indices(self) -> list[int]:
        """Physical index of the clean path's member of each step.

        The top surviving member (the top member if all were pruned). For a token tree
        (:attr:`SequenceState.is_tree`: tree beam search, tree speculative decoding) the
        output path: every generated token still alive, in physical order.
        """
        pruned_at = self.state.pruned_at
        if self.state.is_tree:
            n = self.state.prompt_length
            return [i for i in range(n, len(pruned_at)) if pruned_at[i] is None]
        out = []
        for rec in self.steps:
            alive = [i for i in rec.indices if pruned_at[i] is None] or rec.indices
            out.append(alive[0])
        return out

    def clean_ids(self) -> list[int]:
        """Token ids of the clean path: the top surviving member of each step."""
        return [self.state.token_ids[i] for i in self.clean_indices()]

    def clean_text(self) -> str:
        """Prompt + the top surviving member of each step.

        Token texts are decoded in context (:func:`tempo_lens.generation.text.sequence_texts`), so with
        a tokenizer this equals ``tokenizer.decode(prompt_ids + clean_ids)``.
        """
        return self.prompt_text() + "".join(self.texts[i] for i in self.clean_indices())

    def raw_text(self) -> str:
        """Every physical token, in order (prompt included)."""
        return "".join(self.texts)

    def bracket_text(self, *, color: bool = False, show_pruned: bool = True) -> str:
        r"""Prompt then each step: one member as is, several as ``[ a/ b]``.

        Inside brackets a newline is shown as ``\n`` so a set stays on one line.

        Args:
            color: ANSI-colour members by rank (pruned members dimmed).
            show_pruned: Keep pruned members (marked ``~x~``); else drop them.
        """
        st = self.state
        parts = [self.prompt_text()]
        for rec in self.steps:
            shown = []
            for i in rec.indices:
                pruned = st.pruned_at[i] is not None
                if pruned and not show_pruned:
                    continue
                text = self.texts[i]
                text = text if len(rec.indices) == 1 else text.replace("\n", "\\n")
                text = f"~{text}~" if pruned else text
                if color:
                    colour = ANSI_DIM if pruned else ANSI_COLOURS[st.ranks[i] % len(ANSI_COLOURS)]
                    text = f"{colour}{text}{ANSI_RESET}"
                shown.append(text)
            parts.append(shown[0] if len(shown) == 1 else "[" + "/".join(shown) + "]")
        return "".join(parts)

    def prompt_text(self) -> str:
        """The prompt as decoded from its tokens (what the renderings show).

        With a tokenizer, ``prompt_text() + clean member texts ==
        tokenizer.decode(prompt_ids + clean_ids)``; :attr:`prompt` keeps the input as given.
        """
        return "".join(self.texts[: self.prompt_length])

    # ------------------------------------------------------------------ summary
    def widths(self) -> list[int]:
        """Number of members appended at each step."""
        return [len(r.indices) for r in self.steps]

    def summary(self) -> dict[str, Any]:
        """Counts a reader wants first."""
        widths = self.widths()
        return {
            "method": self.method,
            "total_steps": len(widths),
            "parallel_steps": sum(w > 1 for w in widths),
            "max_parallel_width": max(widths, default=0),
            "average_parallel_width": (sum(widths) / len(widths)) if widths else 0.0,
            "tokens": len(self.state),
            "pruned": sum(p is not None for p in self.state.pruned_at),
            "stop_reason": self.stop_reason,
        }

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict (format 2, see the module docstring)."""
        return {
            "format": self.format,
            "prompt": self.prompt,
            "model": self.model,
            "method": self.method,
            "config": self.config,
            "stop_reason": self.stop_reason,
            "state": self.state.to_dict(),
            "texts": list(self.texts),
            "steps": [dataclasses.asdict(s) for s in self.steps],
            "extra": self.extra,
            **({"provenance": self.provenance} if self.provenance else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trace:
        """Inverse of :meth:`to_dict`; also reads format 1 (per-token records).

        Raises:
            ValueError: An unknown format version, or an inconsistent record.
        """
        if data.get("format") == 1:
            data = _from_format_1(data)
        if data.get("format") != TRACE_FORMAT:
            raise ValueError(
                f"unsupported trace format {data.get('format')!r} (expected 1 or {TRACE_FORMAT})"
            )
        steps = []
        for s in data["steps"]:
            s = dict(s)
            s["candidates"] = [Candidate(**c) for c in s["candidates"]]
            s["prefiltered"] = [Candidate(**c) for c in s.get("prefiltered", [])]
            s["pruning"] = [PruneDecision(**p) for p in s.get("pruning", [])]
            steps.append(StepRecord(**s))
        return cls(
            prompt=data["prompt"],
            model=data["model"],
            method=data["method"],
            config=data["config"],
            state=SequenceState.from_dict(data["state"]),
            texts=list(data["texts"]),
            steps=steps,
            stop_reason=data.get("stop_reason", "max_steps"),
            extra=data.get("extra") or {},
            provenance=data.get("provenance") or {},
        )

    def to_json(self, *, indent: int | None = 2) -> str:
        """The trace as a strict JSON string.

        Raises:
            ValueError: The trace holds a NaN or infinite number (its place is named).
        """
        data = self.to_dict()
        where = first_non_finite(data)
        if where is not None:
            raise ValueError(f"trace {where} is not a finite number (JSON has no NaN/inf)")
        return json.dumps(data, indent=indent, allow_nan=False, default=json_default)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the trace as strict JSON (atomically). Returns the path.

        Raises:
            ValueError: The trace holds a NaN or infinite number: nothing is written, and
                the error names the field (a trace must read back as it was, so ``null``
                is not substituted).
        """
        atomic_write_json(path, self.to_dict(), nan="raise")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Trace:
        """Read a trace written by :meth:`save` (any supported format)."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def provenance_line(record: Mapping[str, Any]) -> str:
    """One line naming where a result came from, for reports and logs.

    ``record`` is a provenance dict (:func:`tempo_lens.backends.provenance`,
    ``Trace.provenance``, an experiment manifest's entries): ``model``, ``weights_sha256``
    (the packaged GGUF's; ``"not recorded"`` when absent, as for a tiny random model),
    ``backend`` and the ``transformer_lens`` version. E.g. ``model SmolLM2-135M-Instruct ·
    weights SHA-256 ab12… · backend hooked · TransformerLens 3.9.0``.
    """
    return (
        f"model {record.get('model', '?')} · weights SHA-256 "
        f"{record.get('weights_sha256') or 'not recorded'} · backend "
        f"{record.get('backend', '?')} · TransformerLens {record.get('transformer_lens', '?')}"
    )


def _from_format_1(data: dict[str, Any]) -> dict[str, Any]:
    """A format-1 trace dict (a ``tokens`` list of per-token records) as format 2."""
    tokens = data["tokens"]
    positions = (data.get("config") or {}).get("positions")
    scheme = (
        {k: v for k, v in positions.items() if k != "type"} if isinstance(positions, dict) else {}
    )
    state = {
        "prompt_length": data["prompt_length"],
        "isolate": data["isolate"],
        "positions": scheme,
        "token_ids": [t["token_id"] for t in tokens],
        "steps": [t["step"] for t in tokens],
        "logical": [t["logical_position"] for t in tokens],
        "pruned_at": [t["pruned_at_step"] for t in tokens],
    }
    steps = []
    for s in data["steps"]:
        probs = [tokens[i]["probability"] for i in s["indices"]]
        steps.append({**s, "probabilities": [] if None in probs else probs})
    rest = {k: v for k, v in data.items() if k not in ("tokens", "prompt_length", "isolate")}
    return {
        **rest,
        "format": 2,
        "state": state,
        "texts": [t["text"] for t in tokens],
        "steps": steps,
    }
