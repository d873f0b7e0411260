"""``tempo-lens experiment NAME ...``: run a research experiment on the runner.

``NAME`` is a module of :mod:`tempo_lens.experiments`; everything after it is that
experiment's command line (:func:`tempo_lens.runner.run_cli`), the same as
``python -m tempo_lens.experiments.NAME ...``.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``experiment`` subcommand."""
    p = subparsers.add_parser(
        "experiment",
        help="run a research experiment (tempo-lens experiment NAME --help)",
        description="Run a research experiment; options after NAME are the experiment's.",
    )
    p.add_argument(
        "name",
        metavar="NAME",
        help="a module of tempo_lens.experiments, e.g. isolation_ab (a wrong name lists them)",
    )
    p.add_argument("args", nargs=argparse.REMAINDER, help="the experiment's options")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Dispatch to the experiment's ``SPEC`` through :func:`tempo_lens.runner.run_cli`."""
    from tempo_lens.experiments import spec
    from tempo_lens.runner import run_cli

    return run_cli(spec(args.name), args.args, prog=f"tempo-lens experiment {args.name}")
