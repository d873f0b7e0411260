"""The record of one generation: tokens, steps, pruning, and its renderings.

A :class:`Trace` is what :func:`tempo_lens.generate` (and every baseline) returns. It
saves to and loads from JSON losslessly, rebuilds the :class:`~tempo_lens.SequenceState`
it was generated on (so analyses index through the same object), and renders text:

* :meth:`Trace.bracket_text` — ``The cat sat on the[ mat/ floor].`` (each member keeps its
  own leading space; optional ANSI colours per member; pruned members marked ``~x~``);
* :meth:`Trace.clean_text` — the top surviving member of each step;
* :meth:`Trace.raw_text` — every physical token in order.

Pruning semantics: a token with ``pruned_at_step = s`` is invisible to every token
appended at a step ``> s`` and to the readout that produces step ``s + 1``'s
distribution. Tokens appended at steps ``<= s`` saw it (their keys/values were computed
with it), exactly as in a full forward of the final state under the TEMPO mask.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tempo_lens.config import TempoConfig
from tempo_lens.io import atomic_write_json
from tempo_lens.state import SequenceState

__all__ = ["Candidate", "PruneDecision", "StepRecord", "TokenRecord", "Trace"]

TRACE_FORMAT = 1
ANSI_COLOURS = ("\x1b[32m", "\x1b[33m", "\x1b[36m", "\x1b[35m", "\x1b[34m", "\x1b[31m")
ANSI_RESET = "\x1b[0m"
ANSI_DIM = "\x1b[2m"


@dataclass(frozen=True)
class TokenRecord:
    """One physical token. ``probability`` is its selection probability (None for prompt)."""

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


@dataclass
class Trace:
    """A whole generation (TEMPO or a baseline), JSON-round-trippable."""

    prompt: str | list[int]
    model: str
    method: str
    config: dict[str, Any]
    tokens: list[TokenRecord]
    steps: list[StepRecord]
    stop_reason: str = "max_steps"
    prompt_length: int = 0
    isolate: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    format: int = TRACE_FORMAT

    # ------------------------------------------------------------------ state
    @property
    def tempo_config(self) -> TempoConfig | None:
        """The :class:`TempoConfig` (``None`` for baselines)."""
        return TempoConfig.from_dict(self.config) if self.method == "tempo" else None

    def to_state(self) -> SequenceState:
        """Rebuild the exact :class:`SequenceState` the trace ends with."""
        prompt = [t.token_id for t in self.tokens[: self.prompt_length]]
        st = SequenceState(prompt, isolate=self.isolate)
        for rec in self.steps:
            st.append_set(
                [self.tokens[i].token_id for i in rec.indices],
                positions=[self.tokens[i].logical_position for i in rec.indices],
            )
        for t in self.tokens:
            if t.pruned_at_step is not None:
                st.prune(t.index, at_step=t.pruned_at_step)
        st.clear_stale()
        return st

    def members(self, step: int) -> list[TokenRecord]:
        """The token records of one step's set, in member order."""
        return [self.tokens[i] for i in self.steps[step].indices]

    # ------------------------------------------------------------------ text
    def clean_indices(self) -> list[int]:
        """Physical index of the clean path's member of each step: the top surviving one
        (the top member if all were pruned)."""
        out = []
        for rec in self.steps:
            members = [self.tokens[i] for i in rec.indices]
            alive = [m for m in members if m.pruned_at_step is None] or members
            out.append(alive[0].index)
        return out

    def clean_ids(self) -> list[int]:
        """Token ids of the clean path: the top surviving member of each step."""
        return [self.tokens[i].token_id for i in self.clean_indices()]

    def clean_text(self) -> str:
        """Prompt + the top surviving member of each step."""
        by_id = {t.token_id: t.text for t in self.tokens}
        return self._prompt_text() + "".join(by_id[i] for i in self.clean_ids())

    def raw_text(self) -> str:
        """Every physical token, in order (prompt included)."""
        return "".join(t.text for t in self.tokens)

    def bracket_text(self, *, color: bool = False, show_pruned: bool = True) -> str:
        """Prompt then each step: one member as is, several as ``[ a/ b]``.

        Inside brackets a newline is shown as ``\\n`` so a set stays on one line.

        Args:
            color: ANSI-colour members by rank (pruned members dimmed).
            show_pruned: Keep pruned members (marked ``~x~``); else drop them.
        """
        parts = [self._prompt_text()]
        for rec in self.steps:
            shown = []
            for m in (self.tokens[i] for i in rec.indices):
                pruned = m.pruned_at_step is not None
                if pruned and not show_pruned:
                    continue
                text = m.text if len(rec.indices) == 1 else m.text.replace("\n", "\\n")
                text = f"~{text}~" if pruned else text
                if color:
                    colour = ANSI_DIM if pruned else ANSI_COLOURS[m.rank % len(ANSI_COLOURS)]
                    text = f"{colour}{text}{ANSI_RESET}"
                shown.append(text)
            parts.append(shown[0] if len(shown) == 1 else "[" + "/".join(shown) + "]")
        return "".join(parts)

    def _prompt_text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        return "".join(t.text for t in self.tokens[: self.prompt_length])

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
            "tokens": len(self.tokens),
            "pruned": sum(t.pruned_at_step is not None for t in self.tokens),
            "stop_reason": self.stop_reason,
        }

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trace:
        data = dict(data)
        if data.get("format") != TRACE_FORMAT:
            raise ValueError(
                f"unsupported trace format {data.get('format')!r} (expected {TRACE_FORMAT})"
            )
        data["tokens"] = [TokenRecord(**t) for t in data["tokens"]]
        steps = []
        for s in data["steps"]:
            s = dict(s)
            s["candidates"] = [Candidate(**c) for c in s["candidates"]]
            s["prefiltered"] = [Candidate(**c) for c in s.get("prefiltered", [])]
            s["pruning"] = [PruneDecision(**p) for p in s.get("pruning", [])]
            steps.append(StepRecord(**s))
        data["steps"] = steps
        return cls(**data)

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the trace as JSON (atomically). Returns the path."""
        atomic_write_json(path, self.to_dict())
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Trace:
        """Read a trace written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
