r"""``tempo-lens quality-prediction``: RQ 9.2 from a findings directory of record.

The pre-registered analysis (``docs/preregistration.md``, R7) of
:mod:`tempo_lens.experiments.quality_prediction`: writes ``units.csv``, ``per_prompt.csv``
and ``summary.json`` to ``--output-dir`` and prints the two verdicts. No model runs.

Example::

    tempo-lens quality-prediction --record docs/results/findings/smollm2 \
        --output-dir docs/results/quality_prediction/smollm2
"""

from __future__ import annotations

import argparse
from typing import Any

from tempo_lens.cli._base import Command

__all__ = ["COMMAND", "add_quality_options", "main", "register", "report", "run"]


def add_quality_options(p: argparse.ArgumentParser) -> None:
    """The options of ``quality-prediction``."""
    g = p.add_argument_group("quality prediction")
    g.add_argument(
        "--record",
        required=True,
        help="a findings directory of record (manifest.json, per_prompt.csv.gz, judge.csv.gz)",
    )
    g.add_argument("--output-dir", required=True, help="where the results are written")


def run(args: argparse.Namespace) -> int:
    """Compute, write and print the analysis."""
    from tempo_lens.experiments.quality_prediction import write_quality_prediction

    summary = write_quality_prediction(args.record, args.output_dir)
    print(report(summary))
    print(f"wrote {args.output_dir}/summary.json, per_prompt.csv, units.csv")
    return 0


def report(summary: dict[str, Any]) -> str:
    """A few lines: the two primary estimates with verdicts, AUC and R²."""
    u = summary["units"]
    lines = [
        f"{summary['record']}: {u['used']} of {u['total']} units, "
        f"{u['prompts_used']} of {u['prompts_total']} prompts"
    ]
    for name, extra in (("degenerate", "auc"), ("cost", "r2")):
        s = summary[name]
        p = s["primary"]
        lo, hi = p["ci"]
        d = s[extra]
        lines.append(
            f"{name}: {p['measure']} = {p['mean']:.4g} [{lo:.4g}, {hi:.4g}] "
            f"({p['level']:.1%} CI, n = {p['n']}): {p['verdict']}; "
            f"{extra} baseline {d['baseline']:.3f}, attention {d['attention']:.3f}"
        )
    return "\n".join(lines)


COMMAND = Command(
    name="quality-prediction",
    help="RQ 9.2: do attention features predict quality beyond selection (a findings record)",
    description="The pre-registered quality-prediction analysis (docs/preregistration.md R7) "
    "of a findings directory of record: out-of-fold logistic and ridge models with and "
    "without attention features.",
    options=(add_quality_options,),
    run=run,
    script_prog="tempo-lens quality-prediction",
)
register, main = COMMAND.register, COMMAND.main
