"""Prompts: the unit of replication, prompt files, and prompts given as token ids.

Model-free: a :class:`Prompt` is an id, a text and a category; :func:`read_prompts` reads
``.txt`` / ``.csv`` / ``.tsv`` / ``.jsonl`` suites; :func:`packaged_prompts` the suites
shipped in this folder (``suite.csv``: 96 prompts in 12 categories). A prompt given as
token ids is checked by :func:`prompt_token_ids`; encoding text needs a tokenizer and lives
with the model (:func:`tempo_lens.generation.text.encode_prompt`).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

__all__ = [
    "Prompt",
    "PromptLike",
    "packaged_prompts",
    "parse_token_ids",
    "prompt_token_ids",
    "prompts_from_texts",
    "read_prompts",
]

PromptLike = str | Sequence[Any] | Tensor | np.ndarray
"""A prompt: text, or token ids (see :func:`prompt_token_ids` for the accepted shapes)."""


def prompt_token_ids(prompt: Any) -> list[int]:
    """Token ids of a prompt given as ids, as plain Python ints.

    Accepted: a sequence of ints (numpy/torch integer scalars too), a 1-D integer tensor or
    array, or a ``[1, pos]`` one (``model.to_tokens(text)``, a batch of one). Anything else
    (a batch of several prompts, 0-d or 3-D arrays, floats, bools) is refused.

    Raises:
        ValueError: The shape or dtype is not a single prompt of token ids; the message
            names the shape (or the offending element).
    """
    if isinstance(prompt, (str, bytes)):
        raise ValueError("a text prompt needs a tokenizer; pass token ids here")
    if isinstance(prompt, Tensor):
        arr = prompt.detach().cpu().numpy()
    else:
        try:
            arr = np.asarray(prompt)
        except ValueError as exc:  # ragged nested lists
            raise ValueError(f"prompt must be a flat list of token ids: {exc}") from None
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 1:
        raise ValueError(
            f"prompt must be a list of token ids, a 1-D tensor or a [1, pos] tensor "
            f"(one prompt), got shape {tuple(arr.shape)}"
        )
    if arr.size and (arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer)):
        bad = next((x for x in arr.tolist() if isinstance(x, bool) or not isinstance(x, int)), None)
        raise ValueError(f"prompt token ids must be integers, got {bad!r} (dtype {arr.dtype})")
    return [int(t) for t in arr.tolist()]


def parse_token_ids(text: str) -> list[int]:
    """``"3 14 15"`` or ``"3,14,15"`` -> ``[3, 14, 15]``.

    Raises:
        ValueError: ``text`` is not a list of integers.
    """
    try:
        ids = [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise ValueError(
            f"this model has no tokenizer: give prompts as token ids, got {text!r}"
        ) from None
    if not ids:
        raise ValueError(f"empty prompt {text!r}")
    return ids


@dataclass(frozen=True)
class Prompt:
    """One prompt of a suite: the unit of replication.

    Attributes:
        id: Stable identifier (file-name safe), e.g. ``"narr-03"`` or ``"p000"``.
        text: The prompt text (token ids like ``"3 14 15"`` for a model without tokenizer).
        category: Category label of the suite (``""`` when the file has none).
    """

    id: str
    text: str
    category: str = ""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.id):
            raise ValueError(f"prompt id {self.id!r} must match [A-Za-z0-9_.-]+")
        if not self.text.strip():
            raise ValueError(f"prompt {self.id!r} is empty")


def prompts_from_texts(texts: Sequence[str]) -> list[Prompt]:
    """Prompts ``p000, p001, ...`` for plain texts."""
    return [Prompt(f"p{i:03d}", t) for i, t in enumerate(texts)]


def packaged_prompts(name: str) -> list[Prompt]:
    """A prompts file shipped with tempo_lens (``tempo_lens/prompts/NAME``).

    ``"suite.csv"`` is the project's 96-prompt suite in 12 categories (also at
    ``experiments/prompts/suite.csv`` in the repository), the default of ``findings``.
    ``"research_48.csv"`` is its first four prompts per category and ``"confirm_48.csv"``
    prompts 5–8 per category: the two pre-registered samples of ``docs/preregistration.md``.

    Raises:
        FileNotFoundError: No such file is shipped.
    """
    from importlib.resources import as_file, files

    with as_file(files("tempo_lens") / "prompts" / name) as path:
        return read_prompts(path)


def read_prompts(path: str | Path) -> list[Prompt]:
    """Read a prompts file.

    Formats (by suffix): ``.txt`` — one prompt per line, blank lines and lines starting
    with ``#`` skipped, ids ``p000, p001, ...``; ``.csv`` / ``.tsv`` — a header with
    ``text`` and optionally ``id`` and ``category``; ``.jsonl`` — one object per line with
    the same keys.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: empty file, a row without text, an invalid or duplicate id.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"prompts file not found: {p}")
    raw = p.read_text(encoding="utf-8")
    rows: list[dict[str, str]]
    if p.suffix in (".csv", ".tsv"):
        rows = list(csv.DictReader(raw.splitlines(), delimiter="\t" if p.suffix == ".tsv" else ","))
        if rows and "text" not in rows[0]:
            raise ValueError(f"{p}: the header needs a 'text' column, got {list(rows[0])}")
    elif p.suffix == ".jsonl":
        rows = [json.loads(x) for x in raw.splitlines() if x.strip()]
    else:
        lines = [x for x in raw.splitlines() if x.strip() and not x.lstrip().startswith("#")]
        rows = [{"text": x} for x in lines]
    if not rows:
        raise ValueError(f"{p}: no prompts")
    out = [
        Prompt(
            str(r.get("id") or f"p{i:03d}"), str(r.get("text") or ""), str(r.get("category") or "")
        )
        for i, r in enumerate(rows)
    ]
    seen: set[str] = set()
    for q in out:
        if q.id in seen:
            raise ValueError(f"{p}: duplicate prompt id {q.id!r}")
        seen.add(q.id)
    return out
