"""``tempo-lens stats``: statistics over a directory of ``analyze`` runs.

Prints a table with confidence intervals (rich, or plain text with ``--plain``) and writes
``stats.json`` (see :func:`tempo_lens.analysis.run_stats.analyze_runs`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tempo_lens.cli._base import Command, fmt
from tempo_lens.runner.options import (
    UsageError,
    finite_float,
    int_at_least,
    open_unit_interval,
)

__all__ = ["COMMAND", "add_stats_options", "main", "register", "run"]


def add_stats_options(p: argparse.ArgumentParser) -> None:
    """The options of ``stats``."""
    s = p.add_argument_group("statistics")
    s.add_argument("--data-dir", required=True, help="directory holding analysis runs")
    s.add_argument("--output", default=None, help="stats JSON path (default DATA_DIR/stats.json)")
    s.add_argument("--reference", default="all", help="non-parallel group: all | generated")
    s.add_argument(
        "--min-samples", type=int_at_least(2), default=5, help="fewest runs for a verdict (>= 2)"
    )
    s.add_argument(
        "--alpha", type=open_unit_interval, default=0.05, help="significance level, in (0, 1)"
    )
    s.add_argument("--n-boot", type=int_at_least(1), default=10_000, help="bootstrap resamples")
    s.add_argument(
        "--level", type=open_unit_interval, default=0.95, help="confidence level, in (0, 1)"
    )
    s.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    s.add_argument("--include-degenerate", action="store_true", help="keep repetition loops")
    s.add_argument(
        "--repetition-n", type=int_at_least(1), default=3, help="n-gram size of the filter"
    )
    s.add_argument("--repetition-threshold", type=finite_float, default=0.5, help="flag above this")
    s.add_argument("--plain", action="store_true", help="plain-text table (no rich)")


def _table_rows(report: Any) -> list[tuple[str, str]]:
    t = report.tests
    ci = report.ratio_ci
    sci = report.set_ratio_ci
    return [
        ("runs (used / total)", f"{report.n_used} / {report.n_runs}"),
        ("degenerate / missing", f"{report.n_degenerate} / {report.n_missing}"),
        ("reference group", report.reference),
        ("parallel mean", fmt(report.parallel_mean, 4)),
        ("non-parallel mean", fmt(report.non_parallel_mean, 4)),
        ("ratio mean [CI]", f"{fmt(report.ratio_mean)} [{fmt(ci[0])}, {fmt(ci[1])}]"),
        ("set ratio mean [CI]", f"{fmt(report.set_ratio_mean)} [{fmt(sci[0])}, {fmt(sci[1])}]"),
        ("Wilcoxon W, p", f"{fmt(t.wilcoxon_statistic)}, {fmt(t.wilcoxon_p)}"),
        ("paired t, p", f"{fmt(t.t_statistic)}, {fmt(t.t_p)}"),
        ("Cohen's d_z", fmt(t.cohens_dz)),
        ("rank-biserial r", fmt(t.rank_biserial)),
    ]


def run(args: argparse.Namespace) -> int:
    """Compute the statistics, write ``stats.json``, print the table and the verdict."""
    from rich.console import Console

    from tempo_lens.analysis.run_stats import analyze_runs
    from tempo_lens.io import atomic_write_json

    report = analyze_runs(
        args.data_dir,
        reference=args.reference,
        min_samples=args.min_samples,
        alpha=args.alpha,
        n_boot=args.n_boot,
        level=args.level,
        seed=args.seed,
        exclude_degenerate=not args.include_degenerate,
        repetition_n=args.repetition_n,
        repetition_threshold=args.repetition_threshold,
    )
    if report.n_runs == 0:
        raise UsageError(f"no analysis runs (summary.json) under {args.data_dir}")
    out = Path(args.output) if args.output else Path(args.data_dir) / "stats.json"
    atomic_write_json(out, report.to_dict())
    rows = _table_rows(report)
    if args.plain:
        width = max(len(k) for k, _ in rows)
        text = "".join(f"{k:<{width}}  {v}\n" for k, v in rows)
        sys.stdout.write(f"{text}verdict: {report.verdict}\nstats written to {out}\n")
        return 0
    console = Console(file=sys.stdout)
    console.print(rich_table("parallel vs non-parallel attention received", rows))
    console.print(f"verdict: {report.verdict}", markup=False)
    console.print(f"stats written to {out}", markup=False)
    return 0


def rich_table(title: str, rows: Sequence[tuple[str, str]]) -> Any:
    """A two-column ``rich`` table whose cells are literal text.

    ``[nan, nan]`` or ``[bold]`` in a value is shown as typed, never read as rich markup.
    """
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title))
    table.add_column("quantity")
    table.add_column("value")
    for k, v in rows:
        table.add_row(Text(k), Text(v))
    return table


COMMAND = Command(
    name="stats",
    help="statistics over a directory of analysis runs",
    description="Statistics over a directory of attention analyses.",
    options=(add_stats_options,),
    run=run,
    script_prog="statistical_confidence",
)
register, main = COMMAND.register, COMMAND.main
