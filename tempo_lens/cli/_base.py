"""The one error path of every ``tempo-lens`` command."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence

from tempo_lens.options import Parser, UsageError, report_usage_error

__all__ = ["run_parser", "script_parser"]


def script_parser(
    prog: str, description: str, build: Callable[[argparse.ArgumentParser], None]
) -> argparse.ArgumentParser:
    """A stand-alone command's parser (``-v`` plus what ``build`` adds)."""
    parser = Parser(prog=prog, description=description)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    build(parser)
    return parser


def run_parser(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and run ``args.func(args)``.

    Returns:
        The command's exit code; 2 after one line ``PROG: error: ...`` on stderr for a bad
        value (:class:`~tempo_lens.options.UsageError`, ``ValueError``,
        ``FileNotFoundError``), which every command raises before writing anything.
    """
    try:
        args = parser.parse_args(argv)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
        return int(args.func(args))
    except (UsageError, ValueError, FileNotFoundError) as exc:
        return report_usage_error(parser.prog, exc)
