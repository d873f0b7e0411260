r"""The ``tempo-lens`` command line.

Subcommands:

* ``generate`` — a TEMPO generation (or a baseline): prints the bracket text, writes the
  trace JSON (:mod:`tempo_lens.cli.generate`);
* ``analyze`` — generation with attention capture, analyses, exports and figures
  (:mod:`tempo_lens.cli.analyze`);
* ``stats`` — statistics over a directory of analysis runs (:mod:`tempo_lens.cli.stats`);
* ``experiment NAME ...`` — a research experiment of :mod:`tempo_lens.experiments` on the
  runner (:mod:`tempo_lens.cli.experiment`);
* ``verify`` — TEMPO on a model checked step by step against the model's own Hugging Face
  forward; exit 1 on a mismatch, 3 when the architecture is refused
  (:mod:`tempo_lens.cli.verify`);
* ``findings ...`` — every claim of the research notes re-measured over a prompt suite
  (:mod:`tempo_lens.cli.findings`, the experiment ``findings``); ``findings-judge`` scores a
  run's texts with an independent model, ``findings-families`` lays several models' claims
  side by side with the combined verdict;
* ``judge`` — an independent model scores every row's text of any run table: ``judge.csv``
  (:mod:`tempo_lens.cli.judge`, the scoring ``findings-judge`` uses);
* ``quality-prediction`` — the pre-registered RQ 9.2 analysis of a findings directory of
  record: do attention features predict quality beyond the selection features
  (:mod:`tempo_lens.cli.quality_prediction`);
* ``research`` — ``docs/research.md``, every question of the research notes answered from
  the committed tables; ``record`` makes a run a directory of record
  (:mod:`tempo_lens.cli.research`).

The generation options are generated from :class:`~tempo_lens.TempoConfig`'s field docs
(:mod:`tempo_lens.cli.gen_options`). Every bad value gets one line on stderr
(``tempo-lens: error: ...``), exit code 2, and nothing is written.

Examples:
    $ tempo-lens generate --prompt "The cat sat on the" --max-steps 20 \
        --selection-threshold 0.1 --json out.json
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tempo_lens.cli import (
    analyze,
    experiment,
    findings,
    generate,
    judge,
    quality_prediction,
    research,
    stats,
    verify,
)
from tempo_lens.cli._base import run_parser
from tempo_lens.runner.options import Parser

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``tempo-lens`` parser with every subcommand."""
    parser = Parser(prog="tempo-lens", description="TEMPO generation and interpretability.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in (
        generate,
        analyze,
        stats,
        experiment,
        findings,
        judge,
        quality_prediction,
        research,
        verify,
    ):
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 bad usage or values)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] and args[0] in findings.COMMANDS:  # options go to the command's own parser
        return findings.run(args[1:], args[0])
    if args[:1] and args[0] in research.COMMANDS:
        return research.run(args[1:], args[0])
    return run_parser(build_parser(), args)
