"""An independent judge for a findings run: another model scores the generated texts.

Issue 23: scoring a generation's quality with the model that produced it (its own NLL)
builds "worse than greedy" into the measure, and a 3-gram repetition filter misses the
failure mode TEMPO's text shows (incoherence, not loops). Here a model of another family
scores, per unit, the clean text given the prompt text, and per prompt the generating
model's greedy text (``greedy_text`` of the primary unit), both as the judge's mean
negative log-likelihood per judge token (:func:`tempo_lens.analysis.token_nll`, the judge's
own tokenizer, prompt with its BOS, text without). The table holds each text as the prompt
followed by the generated tokens (:meth:`tempo_lens.trace.Trace.clean_text`); only the
generated part is scored (:func:`~tempo_lens.experiments.judge.continuation_of`). The
issue-23 judge scored the whole text, reading the prompt twice; the committed findings
records' ``judge`` tables are from that judge (``docs/preregistration.md``, amendments).
The scoring is :mod:`tempo_lens.experiments.judge`'s, shared with ``tempo-lens judge``.

``judge.csv`` (one row per unit) then feeds the pre-registered degeneration rule
(:func:`degenerate`) in ``findings.summarize``.

Example::

    tempo-lens findings --output-dir runs/smollm2                    # the run
    tempo-lens findings-judge --output-dir runs/smollm2 --judge-model gemma-3-270m
    tempo-lens findings --summarize-only --output-dir runs/smollm2   # verdicts with the judge
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tempo_lens.experiments.judge import (
    JUDGE_FILE,
    judge_table,
    judge_text,
    judge_texts,
    read_table,
)
from tempo_lens.io import atomic_write_text

__all__ = [
    "JUDGE_FILE",
    "NLL_MARGIN",
    "degenerate",
    "judge_run",
    "judge_text",
    "main",
    "quality_table",
    "read_judge",
]

NLL_MARGIN = 1.0
"""Judge NLL per token (nats) above the prompt's greedy text that makes a unit incoherent."""
MIN_DISTINCT_2 = 0.5
"""Distinct-2 below which a unit is looping."""
MAX_REPETITION_3 = 0.5
"""3-gram repetition above which a unit is looping (the rule before issue 23)."""


def judge_run(out_dir: str | Path, judge: Any, judge_name: str, *, progress: bool = True) -> Path:
    """Score every unit of a findings run with ``judge``; write ``OUT/judge.csv``.

    Columns: the unit's ``prompt_id``, ``readout``, ``mode``, ``tau``; ``judge``;
    ``judge_nll``, ``judge_tokens`` (its clean text); ``greedy_judge_nll``,
    ``greedy_judge_tokens`` (its prompt's greedy text, from the primary unit's
    ``greedy_text``; NaN where no primary unit has finished). The units are scored by
    :func:`tempo_lens.experiments.judge.judge_table` (the implementation of
    ``tempo-lens judge``), the greedy texts by its :func:`~tempo_lens.experiments.judge.judge_texts`.

    Raises:
        FileNotFoundError: ``out_dir`` has no ``per_prompt.csv`` (a summarized run) or
            ``per_prompt.csv.gz`` (a directory of record).
    """
    out = Path(out_dir)
    pp = read_table(_per_prompt(out))
    greedy = pp.dropna(subset=["greedy_text"]).groupby("prompt_id")["greedy_text"].first()
    prompt_of = pp.groupby("prompt_id")["prompt"].first()
    scored_greedy = dict(
        zip(
            greedy.index,
            judge_texts(
                judge,
                ((prompt_of[pid], text) for pid, text in greedy.items()),
                total=len(greedy),
                progress=progress,
                desc="greedy",
            ),
            strict=True,
        )
    )
    keys = [k for k in ("readout", "mode", "tau") if k in pp]
    rows = judge_table(pp, judge, judge_name, keys, progress=progress, desc="units")
    g = [scored_greedy.get(pid, (math.nan, 0)) for pid in rows["prompt_id"]]
    rows["greedy_judge_nll"] = [nll for nll, _ in g]
    rows["greedy_judge_tokens"] = [n for _, n in g]
    target = out / JUDGE_FILE
    atomic_write_text(target, rows.to_csv(index=False))
    return target


def _per_prompt(out: Path) -> Path:
    """``OUT/per_prompt.csv`` (a run) or ``OUT/per_prompt.csv.gz`` (a directory of record).

    Raises:
        FileNotFoundError: neither exists.
    """
    for name in ("per_prompt.csv", "per_prompt.csv.gz"):
        if (out / name).is_file():
            return out / name
    raise FileNotFoundError(
        f"{out} has no per_prompt.csv(.gz): run or summarize the findings first"
    )


def degenerate(pp: pd.DataFrame, judge: pd.DataFrame | None) -> pd.Series:
    """The pre-registered degeneration rule of issue 23, per row of ``pp``.

    Degenerate when the judge's NLL per token exceeds the prompt's greedy text's by more
    than :data:`NLL_MARGIN` (incoherent), or distinct-2 < :data:`MIN_DISTINCT_2`, or the
    3-gram repetition > :data:`MAX_REPETITION_3` (looping). Without a judge table (or for
    a unit it lacks) only the looping parts apply; per-prompt tables from before issue 23
    have no ``distinct_2`` and keep their ``degenerate`` column.
    """
    if "distinct_2" not in pp:
        return pp["degenerate"].astype(bool)
    looping = (pp["distinct_2"].astype(float) < MIN_DISTINCT_2) | (
        pp["repetition"].astype(float) > MAX_REPETITION_3
    )
    if judge is None or judge.empty:
        return looping
    keys = [k for k in ("prompt_id", "readout", "mode", "tau") if k in pp and k in judge]
    j = pp[keys].merge(judge, on=keys, how="left", validate="one_to_one")
    gap = j["judge_nll"].astype(float) - j["greedy_judge_nll"].astype(float)
    incoherent = (gap > NLL_MARGIN).to_numpy()
    return looping | pd.Series(incoherent, index=pp.index)


def read_judge(out: Path) -> pd.DataFrame | None:
    """``OUT/judge.csv`` (or its ``.gz``), or None."""
    for name in (JUDGE_FILE, JUDGE_FILE + ".gz"):
        if (out / name).is_file():
            return pd.read_csv(out / name)
    return None


def quality_table(pp: pd.DataFrame, judge: pd.DataFrame | None, seed: int) -> pd.DataFrame:
    """Per condition: judge NLL of TEMPO's text minus greedy's (paired by prompt), distinct-2.

    Columns ``readout, mode, tau, n, judge_nll, greedy_judge_nll, difference, ci_low,
    ci_high, distinct_2`` (means over prompts; the CI is
    :func:`~tempo_lens.analysis.stats.estimate`'s). Empty without a judge table.
    """
    from tempo_lens.analysis.stats import estimate

    if judge is None or judge.empty:
        return pd.DataFrame()
    keys = [k for k in ("readout", "mode", "tau") if k in pp and k in judge]
    j = pp.merge(judge, on=["prompt_id", *keys], how="inner")
    rows = []
    for cond, g in j.groupby(keys, sort=False):
        cond = cond if isinstance(cond, tuple) else (cond,)
        d = (g["judge_nll"] - g["greedy_judge_nll"]).to_numpy(np.float64)
        e = estimate(d, seed=seed, min_n=1)
        rows.append(
            {
                **dict(zip(keys, cond, strict=True)),
                "n": e.n,
                "judge_nll": float(g["judge_nll"].mean()),
                "greedy_judge_nll": float(g["greedy_judge_nll"].mean()),
                "difference": e.mean,
                "ci_low": e.ci[0],
                "ci_high": e.ci[1],
                "distinct_2": float(g["distinct_2"].mean()),
            }
        )
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> int:
    """``tempo-lens findings-judge``: score a findings run's texts with another model."""
    from tempo_lens.models import load_model

    p = argparse.ArgumentParser(
        prog="tempo-lens findings-judge",
        description="Score a findings run's texts (and its greedy texts) with an independent "
        "judge model; writes OUT/judge.csv, which --summarize-only then uses for the "
        "degeneration rule (docs/findings.md, issue-23 amendment).",
    )
    p.add_argument("--output-dir", required=True, help="the findings run's output directory")
    p.add_argument(
        "--judge-model",
        required=True,
        help="the judge (a model name load_model knows, e.g. gemma-3-270m for a SmolLM2 run)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    out = Path(args.output_dir)
    try:
        _per_prompt(out)
        judge = load_model(args.judge_model)
    except (FileNotFoundError, ValueError) as e:
        p.error(str(e))
    path = judge_run(out, judge, args.judge_model, progress=not args.quiet)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
