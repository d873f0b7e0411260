r"""An independent judge: another model scores generated texts after their prompts.

The one implementation behind ``tempo-lens judge`` (any run's table, :func:`judge_file`)
and ``tempo-lens findings-judge`` (a findings run, with its greedy texts:
:func:`tempo_lens.experiments.findings_judge.judge_run`). Per row, the judge's mean
negative log-likelihood per judge token (nats) of the row's ``clean_text`` given its
``prompt`` (:func:`judge_text`: :func:`tempo_lens.analysis.quality.token_nll`, the judge's
own tokenizer, prompt with its BOS, text without). Only the *generated continuation* is
scored (:func:`continuation_of`): a runner table's ``clean_text`` is the prompt followed by
the generated tokens (:meth:`tempo_lens.trace.Trace.clean_text`), and that prompt prefix
is removed first. (The issue-23 judge of the committed findings records scored the whole
``clean_text`` after the prompt, i.e. the prompt twice; found in issue 24's review, see
``docs/preregistration.md``.)

Example::

    tempo-lens experiment threshold_sweep --output-dir runs/ts ...
    tempo-lens judge --output-dir runs/ts --table runs.csv --keys schedule,threshold \
        --judge-model gemma-3-270m                      # -> runs/ts/judge.csv
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from tempo_lens.io import atomic_write_text

__all__ = [
    "JUDGE_FILE",
    "TEXT_COLUMNS",
    "continuation_of",
    "judge_file",
    "judge_table",
    "judge_text",
    "judge_texts",
    "parse_keys",
    "read_table",
    "validate_table",
]

JUDGE_FILE = "judge.csv"
"""The judge's output, ``OUT/judge.csv``."""
TEXT_COLUMNS = ("prompt_id", "prompt", "clean_text")
"""The columns a judged table must have."""
OUTPUT_COLUMNS = ("judge", "judge_nll", "judge_tokens")
"""The judge's own columns (no key may be named so)."""


def judge_text(judge: Any, prompt: str, continuation: str) -> tuple[float, int]:
    """``(mean NLL per judge token in nats, judge tokens)`` of ``continuation`` after ``prompt``.

    NaN and 0 when the continuation is empty in the judge's tokens.
    """
    from tempo_lens.analysis.quality import token_nll

    head = [int(t) for t in judge.to_tokens(prompt)[0].tolist()]
    tail = [int(t) for t in judge.tokenizer.encode(continuation, add_special_tokens=False)]
    if not tail:
        return math.nan, 0
    nll = token_nll(judge, head + tail, start=len(head))
    return float(nll.mean()), len(tail)


_SPECIAL_PREFIX = re.compile(r"(?:<[^<>\s]+>)*")
"""Special-token text a decoded sequence may begin with (``<bos>``, ``<s>`` ...)."""


def continuation_of(prompt: str, text: str) -> str:
    """The generated part of ``text``, the whole clean text of a generation.

    A runner table's ``clean_text`` is the decoded sequence, prompt first
    (:meth:`tempo_lens.trace.Trace.clean_text`), possibly after special-token text such as
    Gemma's ``<bos>``; both are removed. The generated part itself is kept whole, even when
    it repeats the prompt.

    >>> continuation_of("The cat", "The cat sat.")
    ' sat.'
    >>> continuation_of("The cat", "<bos>The cat The cat sat.")
    ' The cat sat.'

    Raises:
        ValueError: ``text`` does not begin with ``prompt`` (a table holding only the
            generated text, or another prompt's text); the message shows both.
    """
    head = _SPECIAL_PREFIX.match(text)
    start = head.end() if head else 0
    if not text.startswith(prompt, start):
        raise ValueError(
            f"the text does not begin with its prompt (clean_text must be the whole text, "
            f"prompt first): prompt {prompt[:40]!r}, text {text[:60]!r}"
        )
    return text[start + len(prompt) :]


def judge_texts(
    judge: Any,
    pairs: Iterable[tuple[str, Any]],
    *,
    total: int | None = None,
    progress: bool = True,
    desc: str = "judge",
) -> list[tuple[float, int]]:
    """:func:`judge_text` of every ``(prompt, text)`` pair, in order, on the fast path.

    Each text is scored without its leading prompt (:func:`continuation_of`). A missing
    text (not a string: NaN, None) is scored as the empty text (NaN, 0).
    """
    from tqdm.auto import tqdm

    from tempo_lens.backends.fast import fast_weights

    with fast_weights(judge):  # TransformerLens copies W_U.T every forward otherwise
        return [
            judge_text(
                judge, prompt, continuation_of(prompt, text) if isinstance(text, str) else ""
            )
            for prompt, text in tqdm(pairs, total=total, disable=not progress, desc=desc)
        ]


def judge_table(
    table: pd.DataFrame,
    judge: Any,
    judge_name: str,
    keys: Sequence[str] = (),
    *,
    progress: bool = True,
    desc: str = "judge",
) -> pd.DataFrame:
    """Judge every row of ``table``; one row per row, in order.

    Columns: ``prompt_id``, the ``keys`` columns, ``judge``, ``judge_nll``,
    ``judge_tokens`` (the row's ``clean_text`` after its ``prompt``).

    Raises:
        ValueError: a column is missing or the keys do not identify the rows
            (:func:`validate_table`).
    """
    validate_table(table, keys)
    scored = judge_texts(
        judge,
        zip(table["prompt"], table["clean_text"], strict=True),
        total=len(table),
        progress=progress,
        desc=desc,
    )
    out = table[["prompt_id", *keys]].reset_index(drop=True)
    out["judge"] = judge_name
    out["judge_nll"] = [nll for nll, _ in scored]
    out["judge_tokens"] = [n for _, n in scored]
    return out


def parse_keys(text: str) -> list[str]:
    """``"schedule,threshold"`` -> ``["schedule", "threshold"]`` (empty text: no keys).

    Raises:
        ValueError: an empty name, a repeated name, or a name the output uses itself.
    """
    if not text.strip():
        return []
    keys = [k.strip() for k in text.split(",")]
    if any(not k for k in keys):
        raise ValueError(f"--keys has an empty name: {text!r}")
    for k in keys:
        if keys.count(k) > 1:
            raise ValueError(f"--keys names {k!r} twice")
        if k in ("prompt_id", *OUTPUT_COLUMNS):
            raise ValueError(f"--keys cannot name {k!r}: judge.csv has that column itself")
    return keys


def validate_table(table: pd.DataFrame, keys: Sequence[str], name: str = "the table") -> None:
    """Check that ``table`` can be judged and its rows told apart by ``prompt_id`` + ``keys``.

    Raises:
        ValueError: a text column or a key column is missing (named), two rows share
            ``prompt_id`` and every key (the first such row is named), or a text does not
            begin with its prompt (:func:`continuation_of`; the row is named).
    """
    for col in TEXT_COLUMNS:
        if col not in table:
            raise ValueError(f"{name} has no column {col!r} (needs {', '.join(TEXT_COLUMNS)})")
    for key in keys:
        if key not in table:
            raise ValueError(
                f"{name} has no key column {key!r} (columns: {', '.join(map(str, table.columns))})"
            )
    ids = table[["prompt_id", *keys]]
    dup = ids.duplicated(keep=False)
    if dup.any():
        first = ids[dup].iloc[0]
        times = int((ids == first).all(axis=1).sum())
        raise ValueError(
            f"prompt_id and keys {list(keys)} do not identify the rows of {name}: "
            f"{first.to_dict()} appears {times} times (add a key column)"
        )
    for i, (prompt, text) in enumerate(zip(table["prompt"], table["clean_text"], strict=True)):
        if isinstance(text, str):
            try:
                continuation_of(str(prompt), text)
            except ValueError as e:
                raise ValueError(f"{name}, row {i} ({table['prompt_id'].iloc[i]}): {e}") from None


def read_table(path: str | Path) -> pd.DataFrame:
    """A run's CSV table (``.csv`` or ``.csv.gz``); only empty cells are missing values.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file cannot be read as a CSV table.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p} does not exist: no table to judge")
    try:
        return pd.read_csv(p, keep_default_na=False, na_values=[""])
    except (OSError, EOFError, ValueError, pd.errors.ParserError) as e:
        raise ValueError(f"{p} cannot be read as a CSV table: {e}") from e


def judge_file(
    out_dir: str | Path,
    table: str | Path,
    keys: Sequence[str],
    judge: Any,
    judge_name: str,
    *,
    progress: bool = True,
) -> Path:
    """Judge every row of ``OUT/<table>``; write ``OUT/judge.csv`` atomically (its path).

    ``table`` is relative to ``out_dir`` (an absolute path stays as it is). Columns of
    ``judge.csv``: ``prompt_id``, the ``keys``, ``judge``, ``judge_nll``, ``judge_tokens``.

    Raises:
        FileNotFoundError: no such table.
        ValueError: the table lacks a column or its keys do not identify its rows;
            nothing is written.
    """
    out = Path(out_dir)
    path = out / table
    df = read_table(path)
    validate_table(df, keys, str(path))
    result = judge_table(df, judge, judge_name, keys, progress=progress, desc="rows")
    target = out / JUDGE_FILE
    atomic_write_text(target, result.to_csv(index=False))
    return target
