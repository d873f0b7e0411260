"""``tempo-lens findings ...``: every claim of the research notes re-measured.

A thin dispatch to :mod:`tempo_lens.experiments.findings` through
:func:`tempo_lens.runner.run_cli` (the same as ``tempo-lens experiment findings ...`` and
``python -m tempo_lens.experiments.findings ...``). The arguments after ``findings`` are
handed over untouched, so :func:`run` is called by :func:`tempo_lens.cli.main` before the
top-level parser sees them; :func:`register` only lists the subcommand in ``--help``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """List the ``findings`` subcommand (its options: ``tempo-lens findings --help``)."""
    p = subparsers.add_parser(
        "findings",
        add_help=False,
        help="re-measure every claim of the research notes (tempo-lens findings --help)",
    )
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=lambda args: run(args.args))


def run(argv: Sequence[str]) -> int:
    """Run the findings experiment's command line on ``argv``; the exit code."""
    from tempo_lens.experiments import findings
    from tempo_lens.runner import run_cli

    return run_cli(findings.SPEC, list(argv), prog="tempo-lens findings")
