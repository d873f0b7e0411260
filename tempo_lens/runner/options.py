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
import dataclasses
import inspect
import math
import re
import sys
import typing
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from tempo_lens.prompts import Prompt, prompts_from_texts, read_prompts

__all__ = [
    "Parser",
    "UsageError",
    "add_config_options",
    "config_from_args",
    "choose_prompts",
    "field_docs",
    "is_usage_error",
    "finite_float",
    "int_at_least",
    "open_unit_interval",
    "plain_text",
    "report_usage_error",
    "safe_output_streams",
]


class UsageError(ValueError):
    """A bad command-line value (reported as one line on stderr, exit code 2)."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that raises :class:`UsageError` instead of exiting."""

    def error(self, message: str) -> NoReturn:
        """Raise :class:`UsageError` (argparse would print usage and exit)."""
        raise UsageError(message)


def safe_output_streams() -> None:
    """Make printing never fail on an encoding: unencodable characters become ``?``.

    A terminal or pipe that cannot show a character (``PYTHONIOENCODING=ascii``, a cp1252
    console) gets a replacement instead of a ``UnicodeEncodeError`` after the work is done;
    the files a command writes are UTF-8 whatever the terminal. Streams that cannot be
    reconfigured (captured by a test, replaced by the caller) are left as they are.
    """
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None and getattr(stream, "errors", None) == "strict":
            reconfigure(errors="replace")


def is_usage_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a bad value of the user's (exit 2), not an output failure.

    ``UnicodeError`` is a ``ValueError`` to Python, but it is a failure to print or write,
    not a bad argument, so it is never reported as one.
    """
    return isinstance(exc, (ValueError, FileNotFoundError)) and not isinstance(exc, UnicodeError)


def report_usage_error(prog: str, exc: BaseException) -> int:
    """Write ``prog: error: <first line of exc>`` to stderr and return exit code 2."""
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, KeyError):
        msg = msg.strip("'\"")
    sys.stderr.write(f"{prog}: error: {msg}\n")
    return 2


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse ``type``: an int ``>= low`` (refused at parse time, one line)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an int >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an int >= {low}, got {value}")
        return value

    return parse


def finite_float(text: str) -> float:
    """An argparse ``type``: a finite float (``nan``/``inf`` refused at parse time)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def open_unit_interval(text: str) -> float:
    """An argparse ``type``: a number in ``(0, 1)`` (a level or a significance)."""
    value = finite_float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text!r}")
    return value


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


def _tuple_of(elem: Any) -> Any:
    """The argparse ``type`` of a ``tuple[elem, ...]`` field (``elem`` a type or a Literal).

    A Literal's items are checked: an item outside its values is an argparse error naming
    the allowed ones.
    """
    choices = typing.get_args(elem) if typing.get_origin(elem) is typing.Literal else None
    conv = type(choices[0]) if choices else elem

    def parse(text: str) -> tuple[Any, ...]:
        items = tuple(conv(x) for x in text.replace(" ", "").split(",") if x)
        bad = [x for x in items if choices is not None and x not in choices]
        if bad:
            raise argparse.ArgumentTypeError(
                f"{bad[0]!r} is not one of {', '.join(map(str, choices or ()))}"
            )
        return items

    parse.__name__ = f"comma-separated list of {getattr(conv, '__name__', conv)}"
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
