"""Command-line building blocks shared by every tempo_lens command.

Dataclass configs as options, one usage-error path, and one prompts-file reader.

A config is a frozen dataclass whose Google-style ``Attributes:`` section documents each
field; :func:`add_config_options` turns every field into an option whose help is that doc,
and :func:`config_from_args` builds the config back (its ``__post_init__`` validates).

Examples:
    >>> import argparse
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class C:
    ...     '''Settings.
    ...
    ...     Attributes:
    ...         steps: Steps per run.
    ...     '''
    ...     steps: int = 3
    >>> p = Parser(prog="x")
    >>> add_config_options(p, C)
    >>> config_from_args(C, p.parse_args(["--steps", "5"]))
    C(steps=5)
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import inspect
import json
import re
import sys
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from tempo_lens.text import parse_token_ids

__all__ = [
    "Parser",
    "Prompt",
    "UsageError",
    "add_config_options",
    "config_from_args",
    "choose_prompts",
    "field_docs",
    "packaged_prompts",
    "parse_token_ids",
    "plain_text",
    "read_prompts",
    "report_usage_error",
]


class UsageError(ValueError):
    """A bad command-line value (reported as one line on stderr, exit code 2)."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that raises :class:`UsageError` instead of exiting."""

    def error(self, message: str) -> NoReturn:
        """Raise :class:`UsageError` (argparse would print usage and exit)."""
        raise UsageError(message)


def report_usage_error(prog: str, exc: BaseException) -> int:
    """Write ``prog: error: <first line of exc>`` to stderr and return exit code 2."""
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, KeyError):
        msg = msg.strip("'\"")
    sys.stderr.write(f"{prog}: error: {msg}\n")
    return 2


def field_docs(cls: type) -> dict[str, str]:
    """``field name -> doc text`` from the ``Attributes:`` sections of ``cls`` and its bases.

    A subclass's doc of a field wins over its base's.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        name, inside = None, False
        for line in inspect.cleandoc(klass.__dict__.get("__doc__") or "").splitlines():
            if line.strip() == "Attributes:":
                inside = True
            elif inside and line and not line.startswith(" "):
                break
            elif inside and (m := re.match(r"^    (\w+): (.*)$", line)):
                name, docs[m[1]] = m[1], m[2]
            elif inside and name and line.startswith("        "):
                docs[name] += " " + line.strip()
    return docs


_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`(~?)([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``|`([^`]+)`")


def plain_text(doc: str) -> str:
    """``doc`` with reStructuredText / Markdown markup removed, for ``--help``.

    A cross-reference role such as ``:func:`~a.b.f``` becomes ``f`` (without ``~``: the
    full target ``a.b.f``), and double or single backquotes are dropped around their text.

    Examples:
        >>> plain_text("Layer spec for :func:`resolve_layers`; ``None`` = all.")
        'Layer spec for resolve_layers; None = all.'
    """
    text = _ROLE.sub(lambda m: m[2].rsplit(".", 1)[-1] if m[1] else m[2], doc)
    return _LITERAL.sub(lambda m: m[1] or m[2], text)


def _tuple_of(elem: type) -> Any:
    def parse(text: str) -> tuple[Any, ...]:
        return tuple(elem(x) for x in text.replace(" ", "").split(",") if x)

    parse.__name__ = f"comma-separated list of {elem.__name__}"
    return parse


def _option_type(hint: Any) -> Any:
    """The argparse ``type`` for a field annotation (``X | None`` unwraps to ``X``)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return _option_type(args[0])
    if typing.get_origin(hint) is typing.Literal:
        return type(typing.get_args(hint)[0])
    return hint


def add_config_options(
    parser: argparse._ActionsContainer, cls: type, *, exclude: Sequence[str] = ()
) -> None:
    """Add one option per field of the dataclass ``cls`` (help = the field's doc).

    ``bool`` fields become ``--flag/--no-flag``; ``tuple[T, ...]`` fields take a
    comma-separated list; ``Literal`` fields get ``choices``.

    Raises:
        KeyError: A field has no entry in the ``Attributes:`` docs (every option must be
            documented).
    """
    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f"{plain_text(docs[f.name])} (default: {default!r})"
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        if _option_type(hint) is bool:  # bool, or tempo_lens._numbers.BoolLike at run time
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=help_text
            )
        elif typing.get_origin(hint) is tuple:
            elem = typing.get_args(hint)[0]
            parser.add_argument(flag, type=_tuple_of(elem), default=default, help=help_text)
        elif typing.get_origin(hint) is typing.Literal:
            choices = typing.get_args(hint)
            parser.add_argument(flag, choices=choices, default=default, help=help_text)
        else:
            parser.add_argument(flag, type=_option_type(hint), default=default, help=help_text)


def config_from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """The ``cls`` instance described by parsed ``args`` (``overrides`` win)."""
    kw = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    kw.update(overrides)
    return cls(**kw)


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


def choose_prompts(texts: Sequence[str] | None, path: str | None) -> list[Prompt] | None:
    """The prompts of ``--prompt`` (``texts``) or ``--prompts-file`` (``path``); None if neither.

    Raises:
        UsageError: Both were given.
        FileNotFoundError, ValueError: As :func:`read_prompts`.
    """
    if path and texts:
        raise UsageError("give --prompt or --prompts-file, not both")
    if path:
        return read_prompts(path)
    return prompts_from_texts(texts) if texts else None


def packaged_prompts(name: str) -> list[Prompt]:
    """A prompts file shipped with tempo_lens (``tempo_lens/prompts/NAME``).

    ``"suite.csv"`` is the project's 96-prompt suite in 12 categories (also at
    ``experiments/prompts/suite.csv`` in the repository), the default of ``findings``.

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
