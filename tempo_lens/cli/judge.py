r"""``tempo-lens judge``: an independent model scores every row of a run's table.

Reads ``OUT/<--table>`` (columns ``prompt_id``, ``prompt``, ``clean_text`` and the
``--keys``), scores each row's ``clean_text`` after its ``prompt`` with ``--judge-model``
and writes ``OUT/judge.csv`` (``prompt_id``, the keys, ``judge``, ``judge_nll``,
``judge_tokens``; :func:`tempo_lens.experiments.judge.judge_file`, the implementation
``findings-judge`` shares). The table and keys are checked before the judge is loaded.

Example::

    tempo-lens judge --output-dir runs/ts --table runs.csv --keys schedule,threshold \
        --judge-model gemma-3-270m
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tempo_lens.cli._base import Command

__all__ = ["COMMAND", "add_judge_options", "main", "register", "run"]


def add_judge_options(p: argparse.ArgumentParser) -> None:
    """The options of ``judge``."""
    g = p.add_argument_group("judge")
    g.add_argument("--output-dir", required=True, help="the run's output directory")
    g.add_argument(
        "--table",
        required=True,
        help="the table to judge, relative to --output-dir (e.g. runs.csv; .csv.gz too)",
    )
    g.add_argument(
        "--keys",
        default="",
        help="comma-separated columns that with prompt_id identify a row (e.g. "
        "schedule,threshold); copied into judge.csv",
    )
    g.add_argument(
        "--judge-model",
        required=True,
        help="the judge (a model name load_model knows, e.g. gemma-3-270m for a SmolLM2 run)",
    )
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Validate the table and keys, load the judge, write ``OUT/judge.csv``."""
    from tempo_lens.experiments.judge import judge_file, parse_keys, read_table, validate_table

    keys = parse_keys(args.keys)
    path = Path(args.output_dir) / args.table
    validate_table(read_table(path), keys, str(path))  # before the (slow) model load
    from tempo_lens.models import load_model

    judge = load_model(args.judge_model)
    out = judge_file(args.output_dir, args.table, keys, judge, args.judge_model,
                     progress=not args.quiet)  # fmt: skip
    print(f"wrote {out}")
    return 0


COMMAND = Command(
    name="judge",
    help="score a run table's texts with an independent judge model (judge.csv)",
    description="Score every row's clean_text after its prompt with an independent judge "
    "model; writes OUTPUT_DIR/judge.csv (prompt_id, the keys, judge, judge_nll, judge_tokens).",
    options=(add_judge_options,),
    run=run,
    script_prog="tempo-lens judge",
)
register, main = COMMAND.register, COMMAND.main
