"""``tempo-lens research`` and ``tempo-lens record``: the research record and its data.

* ``research`` writes ``docs/research.md`` from the committed tables
  (:mod:`tempo_lens.experiments.research`; ``--check`` exits 1 when it is out of date);
* ``record RUN DEST`` makes a summarized run a *directory of record*: byte-reproducible
  gzip tables with their SHA-256 in the manifest and the summary rebuilt from them
  (:func:`tempo_lens.runner.store.write_record`; a findings run keeps its cuts,
  :func:`tempo_lens.experiments.findings_record.write_record`).

As for ``findings``, the arguments after the command go to its own parser untouched.

Examples:
    $ tempo-lens record results/uncertainty docs/results/research/uncertainty/smollm2 \
        --command "tempo-lens experiment uncertainty ..." --wall-seconds 410
    $ tempo-lens research --check
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tempo_lens.cli._base import register_passthrough

__all__ = ["COMMANDS", "register", "run"]

COMMANDS = {
    "research": "write docs/research.md: every research question from the committed tables",
    "record": "make a summarized run a directory of record (hash-checked gzip tables)",
}
"""The subcommands; each hands its arguments to its own parser untouched."""


def register(subparsers: Any) -> None:
    """List the subcommands (their options: ``tempo-lens <command> --help``)."""
    register_passthrough(subparsers, COMMANDS, run)


def _record(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="tempo-lens record", description=COMMANDS["record"])
    p.add_argument("run", help="a summarized run's output directory")
    p.add_argument("dest", help="the directory of record (created; its tables are replaced)")
    p.add_argument("--command", help="the command that made the run (kept in the manifest)")
    p.add_argument("--wall-seconds", type=float, help="the run's wall time (kept in the manifest)")
    p.add_argument("--load", help="a note on the machine's load during the run")
    args = p.parse_args(list(argv))
    manifest = Path(args.run) / "manifest.json"
    if not manifest.is_file():
        p.error(f"{args.run} has no manifest.json: not the output directory of a run")
    name = json.loads(manifest.read_text(encoding="utf-8")).get("experiment")
    from tempo_lens.experiments import available

    if name not in available():
        p.error(f"{manifest} names experiment {name!r}, not one of {available()}")
    facts = {
        k: v
        for k, v in (
            ("command", args.command),
            ("wall_seconds", args.wall_seconds),
            ("load", args.load),
        )
        if v is not None
    }
    try:
        if name == "findings":
            from tempo_lens.experiments.findings_record import write_record as findings_record

            out = findings_record(args.run, args.dest, **facts)
        else:
            from tempo_lens.experiments import spec
            from tempo_lens.runner.store import write_record

            out = write_record(spec(name), args.run, args.dest, **facts)
    except (OSError, ValueError) as e:  # a missing table, a file where dest should be ...
        print(f"tempo-lens record: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def run(argv: Sequence[str], command: str = "research") -> int:
    """Run ``research`` or ``record`` on ``argv``; the exit code."""
    try:
        if command == "record":
            return _record(argv)
        from tempo_lens.experiments import research

        return research.main(list(argv))
    except SystemExit as e:  # argparse's usage errors (2) and --help (0) as exit codes
        return e.code if isinstance(e.code, int) else 1
