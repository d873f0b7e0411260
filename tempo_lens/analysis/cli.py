"""The ``analyze`` and ``stats`` subcommands (also the two experiment scripts).

* ``tempo-lens analyze --prompt ... --output-dir DIR`` (or ``--prompts-file FILE``): the
  generation options of ``tempo-lens generate`` plus capture options; writes one run
  directory (several prompts: ``DIR/run_000``, ``DIR/run_001``, ... and ``DIR/runs.json``).
* ``tempo-lens stats --data-dir DIR``: statistics over every run under ``DIR``; prints a
  table with confidence intervals and writes ``stats.json``.

Every bad value gets one line on stderr and exit code 2; all values are checked (and the
model loaded) before the first file is written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["analyze_main", "register", "stats_main"]


def add_analyze_args(p: argparse.ArgumentParser) -> None:
    """Capture/analysis options (the generation options are added separately)."""
    a = p.add_argument_group("analysis")
    a.add_argument("--output-dir", required=True, help="directory for the run(s)")
    a.add_argument("--prompts-file", default=None, help="one prompt per line (# comments)")
    a.add_argument("--layers", default="all", help="all | early | middle | late | 0,3,5")
    a.add_argument("--heads", default=None, help="query heads to capture, e.g. 0,2 (all)")
    a.add_argument("--float16", action="store_true", help="store attention as float16")
    a.add_argument("--spool", action="store_true", help="stream captured steps to disk")
    a.add_argument("--top-k", type=int, default=5, help="context keys per member")
    a.add_argument("--window", type=float, default=3.0, help="local window (logical positions)")
    a.add_argument("--include-sink", action="store_true", help="count token 0 as non-parallel")
    a.add_argument("--no-figures", dest="figures", action="store_false", help="skip figures")
    a.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")


def add_stats_args(p: argparse.ArgumentParser) -> None:
    s = p.add_argument_group("statistics")
    s.add_argument("--data-dir", required=True, help="directory holding analysis runs")
    s.add_argument("--output", default=None, help="stats JSON path (default DATA_DIR/stats.json)")
    s.add_argument("--reference", default="all", help="non-parallel group: all | generated")
    s.add_argument("--min-samples", type=int, default=5, help="fewest runs for a verdict")
    s.add_argument("--alpha", type=float, default=0.05, help="significance level")
    s.add_argument("--n-boot", type=int, default=10_000, help="bootstrap resamples")
    s.add_argument("--level", type=float, default=0.95, help="confidence level")
    s.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    s.add_argument("--include-degenerate", action="store_true", help="keep repetition loops")
    s.add_argument("--repetition-n", type=int, default=3, help="n-gram size of the filter")
    s.add_argument("--repetition-threshold", type=float, default=0.5, help="flag above this")
    s.add_argument("--plain", action="store_true", help="plain-text table (no rich)")


def _read_prompts(args: argparse.Namespace) -> list[str]:
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise FileNotFoundError(f"prompts file not found: {path}")
        lines = path.read_text(encoding="utf-8").splitlines()
        prompts = [x for x in lines if x.strip() and not x.lstrip().startswith("#")]
        if not prompts:
            raise ValueError(f"no prompts in {path}")
        return prompts
    if args.prompt is None:
        raise ValueError("give --prompt or --prompts-file")
    return [args.prompt]


def _model_prompt(model: Any, prompt: str) -> Any:
    if model.tokenizer is not None:
        return prompt
    try:  # the tiny model has no tokenizer: prompts are token ids
        return [int(t) for t in prompt.replace(",", " ").split()]
    except ValueError:
        raise ValueError("the tiny model has no tokenizer: give prompts as token ids") from None


def _heads(spec: str | None, n_heads: int) -> list[int] | None:
    if spec is None:
        return None
    try:
        heads = sorted({int(h) for h in spec.split(",")})
    except ValueError:
        raise ValueError(f"--heads must be indices like 0,2, got {spec!r}") from None
    if not heads or heads[0] < 0 or heads[-1] >= n_heads:
        raise ValueError(f"--heads must be in [0, {n_heads}), got {spec!r}")
    return heads


def cmd_analyze(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from tempo_lens.analysis.run import analyze_prompt
    from tempo_lens.cli import config_from_args, load_model_from_args
    from tempo_lens.io import atomic_write_json
    from tempo_lens.pruning import resolve_layers

    prompts = _read_prompts(args)
    args.prompt = prompts[0]
    config = config_from_args(args)
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output-dir is a file: {out}")
    if args.top_k < 1 or args.window < 0:
        raise ValueError("--top-k must be >= 1 and --window >= 0")
    model = load_model_from_args(args)
    layers = resolve_layers(args.layers, model.cfg.n_layers)
    heads = _heads(args.heads, model.cfg.n_heads)
    inputs = [_model_prompt(model, p) for p in prompts]
    dirs = [out] if len(prompts) == 1 else [out / f"run_{i:03d}" for i in range(len(prompts))]
    summaries = []
    bar = tqdm(
        list(zip(inputs, dirs, strict=True)),
        desc="prompts",
        unit="prompt",
        disable=args.quiet or len(prompts) == 1,
    )
    for prompt, d in bar:
        summaries.append(
            analyze_prompt(
                model,
                prompt,
                config,
                d,
                layers=layers,
                heads=heads,
                float16=args.float16,
                spool=args.spool,
                top_k=args.top_k,
                window=args.window,
                include_sink=args.include_sink,
                figures=args.figures,
            )
        )
    if len(prompts) > 1:
        index = [{"dir": d.name, "prompt": p} for d, p in zip(dirs, prompts, strict=True)]
        atomic_write_json(out / "runs.json", index)
    if not args.quiet:
        for d, s in zip(dirs, summaries, strict=True):
            r, iso = s["received"], s["isolation"]
            sys.stdout.write(
                f"{d}: {s['summary']['bracket_text']!r}\n"
                f"  parallel:non-parallel ratio={_fmt(r['ratio'])} "
                f"(vs generated {_fmt(r['ratio_generated'])}, per set {_fmt(r['set_ratio'])}) "
                f"n_parallel={r['n_parallel']} max_sibling_attention="
                f"{_fmt(iso['max_sibling_attention'])}\n"
            )
    return 0


def _fmt(x: Any, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}g}"


def _table_rows(report: Any) -> list[tuple[str, str]]:
    t = report.tests
    ci = report.ratio_ci
    sci = report.set_ratio_ci
    return [
        ("runs (used / total)", f"{report.n_used} / {report.n_runs}"),
        ("degenerate / missing", f"{report.n_degenerate} / {report.n_missing}"),
        ("reference group", report.reference),
        ("parallel mean", _fmt(report.parallel_mean, 4)),
        ("non-parallel mean", _fmt(report.non_parallel_mean, 4)),
        ("ratio mean [CI]", f"{_fmt(report.ratio_mean)} [{_fmt(ci[0])}, {_fmt(ci[1])}]"),
        ("set ratio mean [CI]", f"{_fmt(report.set_ratio_mean)} [{_fmt(sci[0])}, {_fmt(sci[1])}]"),
        ("Wilcoxon W, p", f"{_fmt(t.wilcoxon_statistic)}, {_fmt(t.wilcoxon_p)}"),
        ("paired t, p", f"{_fmt(t.t_statistic)}, {_fmt(t.t_p)}"),
        ("Cohen's d_z", _fmt(t.cohens_dz)),
        ("rank-biserial r", _fmt(t.rank_biserial)),
    ]


def cmd_stats(args: argparse.Namespace) -> int:
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
        raise ValueError(f"no analysis runs (summary.json) under {args.data_dir}")
    out = Path(args.output) if args.output else Path(args.data_dir) / "stats.json"
    atomic_write_json(out, report.to_dict())
    rows = _table_rows(report)
    try:
        if args.plain:
            raise ImportError
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        width = max(len(k) for k, _ in rows)
        text = "".join(f"{k:<{width}}  {v}\n" for k, v in rows)
        sys.stdout.write(f"{text}verdict: {report.verdict}\nstats written to {out}\n")
        return 0
    table = Table(title="parallel vs non-parallel attention received")
    table.add_column("quantity")
    table.add_column("value")
    for k, v in rows:
        table.add_row(k, v)
    console = Console(file=sys.stdout)
    console.print(table)
    console.print(f"verdict: {report.verdict}", markup=False)
    console.print(f"stats written to {out}", markup=False)
    return 0


def register(subparsers: Any, add_generation_args: Callable[..., None]) -> None:
    """Add ``analyze`` and ``stats`` to the ``tempo-lens`` subcommands."""
    ana = subparsers.add_parser("analyze", help="generate with attention capture and analyse")
    add_generation_args(ana, require_prompt=False)  # --prompts-file can replace --prompt
    add_analyze_args(ana)
    ana.set_defaults(func=cmd_analyze)
    st = subparsers.add_parser("stats", help="statistics over a directory of analysis runs")
    add_stats_args(st)
    st.set_defaults(func=cmd_stats)


def _script_main(
    argv: Sequence[str] | None, prog: str, description: str, build: Callable[[Any], None]
) -> int:
    from tempo_lens.cli import _Parser, run_parser

    parser = _Parser(prog=prog, description=description)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    build(parser)
    return run_parser(parser, argv)


def analyze_main(argv: Sequence[str] | None = None, prog: str = "run_attention_analysis") -> int:
    """``run_attention_analysis`` as a function (returns the exit code)."""
    from tempo_lens.cli import add_generation_args

    def build(p: argparse.ArgumentParser) -> None:
        add_generation_args(p, require_prompt=False)
        add_analyze_args(p)
        p.set_defaults(func=cmd_analyze)

    return _script_main(argv, prog, "TEMPO generation with attention capture and analyses.", build)


def stats_main(argv: Sequence[str] | None = None, prog: str = "statistical_confidence") -> int:
    """``statistical_confidence_analysis`` as a function (returns the exit code)."""

    def build(p: argparse.ArgumentParser) -> None:
        add_stats_args(p)
        p.set_defaults(func=cmd_stats)

    return _script_main(argv, prog, "Statistics over a directory of attention analyses.", build)
