"""The one error path of every ``tempo-lens`` command."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tempo_lens.runner.options import (
    Parser,
    is_usage_error,
    report_usage_error,
    safe_output_streams,
)

__all__ = ["Command", "fmt", "register_passthrough", "run_parser", "script_parser"]


def script_parser(
    prog: str, description: str, build: Callable[[argparse.ArgumentParser], None]
) -> argparse.ArgumentParser:
    """A stand-alone command's parser (``-v`` plus what ``build`` adds)."""
    parser = Parser(prog=prog, description=description)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    build(parser)
    return parser


def register_passthrough(
    subparsers: Any, commands: dict[str, str], run: Callable[[Sequence[str], str], int]
) -> None:
    """List ``commands`` (name -> help) whose arguments go to their own parser untouched.

    :func:`tempo_lens.cli.main` calls ``run(argv, name)`` before the top-level parser sees
    the arguments; the entries here only show them in ``tempo-lens --help``.
    """
    for name, text in commands.items():
        p = subparsers.add_parser(name, add_help=False, help=text)
        p.add_argument("args", nargs=argparse.REMAINDER)
        p.set_defaults(func=lambda args, name=name: run(args.args, name))


def run_parser(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and run ``args.func(args)``.

    Printing never fails on an encoding (:func:`~tempo_lens.runner.options.safe_output_streams`).

    Returns:
        The command's exit code; 2 after one line ``PROG: error: ...`` on stderr for a bad
        value (:class:`~tempo_lens.runner.options.UsageError`, ``ValueError``,
        ``FileNotFoundError``), which every command raises before writing anything. An
        output failure (``UnicodeError``, ``OSError``) is not a usage error: it propagates
        with its traceback.
    """
    safe_output_streams()
    try:
        args = parser.parse_args(argv)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
        return int(args.func(args))
    except (ValueError, FileNotFoundError) as exc:  # UsageError too
        if not is_usage_error(exc):
            raise
        return report_usage_error(parser.prog, exc)


@dataclass(frozen=True)
class Command:
    """A subcommand of ``tempo-lens`` that also runs as a stand-alone script.

    Attributes:
        name: Subcommand name.
        help: One line for ``tempo-lens --help``.
        description: First line of the command's own ``--help``.
        options: Functions adding the command's options to a parser, in order.
        run: ``args -> exit code``.
        script_prog: Program name when run stand-alone (:meth:`main`).
    """

    name: str
    help: str
    description: str
    options: tuple[Callable[[argparse.ArgumentParser], None], ...]
    run: Callable[[argparse.Namespace], int]
    script_prog: str

    def build(self, parser: argparse.ArgumentParser) -> None:
        """Add the command's options and ``set_defaults(func=run)`` to ``parser``."""
        for add in self.options:
            add(parser)
        parser.set_defaults(func=self.run)

    def register(self, subparsers: Any) -> None:
        """Add the command to the ``tempo-lens`` subcommands."""
        self.build(subparsers.add_parser(self.name, help=self.help, description=self.description))

    def main(self, argv: Sequence[str] | None = None, prog: str | None = None) -> int:
        """Run the command stand-alone; returns the exit code (2 on bad values)."""
        parser = script_parser(prog or self.script_prog, self.description, self.build)
        return run_parser(parser, argv)


def fmt(x: float | None, digits: int = 3) -> str:
    """``x`` to ``digits`` significant digits; ``n/a`` for None."""
    return "n/a" if x is None else f"{x:.{digits}g}"
