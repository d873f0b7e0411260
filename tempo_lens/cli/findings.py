"""``tempo-lens findings ...``: every claim of the research notes re-measured.

Also ``tempo-lens findings-judge`` (:mod:`tempo_lens.experiments.findings_judge`) and
``tempo-lens findings-families`` (:mod:`tempo_lens.experiments.findings_families`).

A thin dispatch to :mod:`tempo_lens.experiments.findings` through
:func:`tempo_lens.runner.run_cli` (the same as ``tempo-lens experiment findings ...`` and
``python -m tempo_lens.experiments.findings ...``). The arguments after ``findings`` are
handed over untouched, so :func:`run` is called by :func:`tempo_lens.cli.main` before the
top-level parser sees them; :func:`register` only lists the subcommand in ``--help``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tempo_lens.cli._base import register_passthrough

__all__ = ["COMMANDS", "register", "run"]

COMMANDS = {
    "findings": "re-measure every claim of the research notes (tempo-lens findings --help)",
    "findings-judge": "score a findings run's texts with an independent judge model",
    "findings-families": "findings of several models side by side, with the combined verdict",
}
"""The findings subcommands; each hands its arguments to its own parser untouched."""


def register(subparsers: Any) -> None:
    """List the findings subcommands (their options: ``tempo-lens <command> --help``)."""
    register_passthrough(subparsers, COMMANDS, run)


def run(argv: Sequence[str], command: str = "findings") -> int:
    """Run one findings subcommand's command line on ``argv``; the exit code."""
    if command in ("findings-judge", "findings-families"):
        from tempo_lens.experiments import findings_families, findings_judge

        module = findings_judge if command == "findings-judge" else findings_families
        try:
            return module.main(list(argv))
        except SystemExit as e:  # argparse's usage errors (2) and --help (0) as exit codes
            return e.code if isinstance(e.code, int) else 1
    from tempo_lens.experiments import findings
    from tempo_lens.runner import run_cli

    return run_cli(findings.SPEC, list(argv), prog="tempo-lens findings")
