"""The command line of every experiment: ``run_cli(SPEC, argv)``.

Options: ``--output-dir`` (required), ``--prompt`` (repeatable) / ``--prompts-file``,
``--limit N`` (first N prompts), ``--quick`` (the spec's smoke-run values as defaults, so
options given explicitly still win, and its first ``quick_prompts`` prompts), ``--executor
local|ray`` (``--batch-size``; with ``ray`` also ``--address``, ``--workers``,
``--num-gpus``: see :mod:`tempo_lens.runner.ray_executor`), ``-q``, ``--summarize-only`` (run
nothing; tables, summary and report again from the finished units of ``--output-dir``:
:func:`tempo_lens.runner.summarize_only`), plus one option per config field (help = the
field's doc). Bad values print one line ``PROG: error: ...`` and return 2 with nothing
written.

Example::

    python -m tempo_lens.experiments.isolation_ab --tiny --quick --output-dir /tmp/iso
    tempo-lens experiment isolation_ab --tiny --quick --output-dir /tmp/iso
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from tempo_lens.runner.executors import EXECUTORS, Job, LocalExecutor, encode, executor_class
from tempo_lens.runner.experiment import ExperimentSpec, run_experiment
from tempo_lens.runner.options import (
    Parser,
    UsageError,
    add_config_options,
    choose_prompts,
    config_from_args,
    report_usage_error,
    safe_output_streams,
)
from tempo_lens.runner.store import ManifestMismatchError, RunLockedError, summarize_only

__all__ = ["build_parser", "run_cli"]


def build_parser(spec: ExperimentSpec, prog: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``spec``'s command line (runner options + one per config field)."""
    p = Parser(prog=prog or spec.name, description=spec.summary)
    p.add_argument("--output-dir", required=True, help="directory for tables, summary, units")
    p.add_argument("--prompt", dest="prompts", action="append", help="a prompt (repeatable)")
    p.add_argument(
        "--prompts-file", help="prompts: .txt (one per line, # comments), .csv/.tsv/.jsonl"
    )
    p.add_argument("--limit", type=int, help="run only the first N prompts (resumable later)")
    p.add_argument("--quick", action="store_true", help="smoke run: few prompts, short runs")
    p.add_argument("--executor", default="local", help="local | ray (default: local)")
    p.add_argument("--address", help="Ray cluster address (with --executor ray)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=spec.batch_size if spec.run_batch is not None else 1,
        help=(
            f"units (TEMPO sequences) per batched forward (default: {spec.batch_size})"
            if spec.run_batch is not None
            else "units per batched forward (this experiment runs units one at a time)"
        ),
    )
    p.add_argument("--workers", type=int, help="Ray actors (default: as many as the cluster fits)")
    p.add_argument(
        "--num-gpus", type=float, help="GPUs per Ray actor (default: 1 with a cuda device, else 0)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no report")
    p.add_argument(
        "--summarize-only",
        action="store_true",
        help="run nothing: re-write the tables, summary and report of --output-dir from its "
        "finished units (settings from its manifest.json)",
    )
    add_config_options(p, spec.config)
    return p


def _executor(args: argparse.Namespace, model: Any) -> Any:
    if args.executor not in EXECUTORS:
        raise UsageError(f"unknown executor {args.executor!r}; known: {', '.join(EXECUTORS)}")
    if args.executor == "local":
        given = [o for o in ("address", "workers", "num_gpus") if getattr(args, o) is not None]
        if given:
            opt = "--" + given[0].replace("_", "-")
            raise UsageError(f"{opt} needs --executor ray")
        return LocalExecutor(model, batch_size=args.batch_size)
    try:
        factory = executor_class(args.executor)
    except ImportError as exc:
        raise UsageError(str(exc)) from exc
    return factory(
        address=args.address,
        batch_size=args.batch_size,
        workers=args.workers,
        num_gpus=args.num_gpus,
    )


def _check_importable_on_workers(module: str, executor: str) -> None:
    """Refuse, before any worker starts, an experiment its workers could not import.

    Workers of a distributed executor find ``SPEC`` by importing the experiment's module by
    name. A script run directly is ``__main__`` (on a worker that is the worker's own
    entry point), and a module not on the path is not found at all.

    Raises:
        UsageError: the module is ``__main__`` or cannot be found; the message says how to
            make it importable.
    """
    import importlib.util

    how = (
        "save the experiment as a module on the workers' Python path (e.g. width_vs_tau.py "
        "next to where you run it, or an installed package) and give "
        "ExperimentSpec(module='width_vs_tau'), or run with --executor local"
    )
    if module == "__main__":
        raise UsageError(
            f"--executor {executor}: the workers import the experiment by module name, and "
            f"this one is defined in a script run as __main__; {how}"
        )
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise UsageError(f"--executor {executor}: module {module!r} cannot be imported; {how}")


def run_cli(
    spec: ExperimentSpec, argv: Sequence[str] | None = None, prog: str | None = None
) -> int:
    """Run ``spec`` from the command line; 0 on success, 2 (one line on stderr) on bad input.

    Bad options, prompts or an output directory holding another run are usage errors (one
    line, exit 2, nothing written); an exception raised while the units run propagates with
    its traceback (finished units stay on disk; re-running resumes).
    """
    parser = build_parser(spec, prog)
    safe_output_streams()
    try:
        args = parser.parse_args(argv)
        if args.summarize_only:
            return _summarize_only(spec, parser, args)
        if args.quick:  # the smoke-run values become defaults: options given explicitly win
            parser.set_defaults(**spec.quick)
            args = parser.parse_args(argv)
        cfg = config_from_args(spec.config, args)
        prompts = choose_prompts(args.prompts, args.prompts_file) or spec.prompts(cfg)
        if args.quick:
            prompts = prompts[: spec.quick_prompts]
        if args.batch_size < 1:
            raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
        job = Job(spec.module_name, cfg)
        if args.executor != "local":  # workers import SPEC by module name
            _check_importable_on_workers(job.module, args.executor)
        model = job.load_model() if args.executor == "local" else None
        check = model  # every prompt must encode before anything is written
        if check is None and cfg.tiny:  # cheap here; a real model loads on the workers only
            check = Job(job.module, replace(cfg, device="cpu")).load_model()
        if check is not None:
            for q in prompts:
                encode(check, q)
            if spec.check_model is not None:
                spec.check_model(cfg, check)
        if args.limit is not None and args.limit < 1:
            raise UsageError(f"--limit must be >= 1, got {args.limit}")
        executor = _executor(args, model)
    except (ValueError, FileNotFoundError) as exc:  # UsageError too
        return report_usage_error(parser.prog, exc)
    try:  # an error inside a unit is a bug with a traceback, not a usage error
        res = run_experiment(
            spec,
            cfg,
            args.output_dir,
            prompts=prompts,
            executor=executor,
            limit=args.limit,
            progress=not args.quiet,
        )
    except (ManifestMismatchError, RunLockedError) as exc:  # another run's directory
        return report_usage_error(parser.prog, exc)
    if not args.quiet:
        sys.stdout.write(res.report + "\n")
        done = res.n_units - res.n_skipped
        batching = ""
        if res.batches:
            mean = sum(res.batches) / len(res.batches)
            batching = (
                f", {mean:.3g} sequences per forward (batches of up to {max(res.batches)})"
                if max(res.batches) > 1
                else ", one unit at a time"
            )
        sys.stdout.write(
            f"{res.n_units} units ({res.n_skipped} resumed, {done} run{batching}); "
            f"wrote {res.out_dir}\n"
        )
    return 0


def _summarize_only(spec: ExperimentSpec, parser: argparse.ArgumentParser, args: Any) -> int:
    """``--summarize-only``: tables, summary and report again from the finished units."""
    keep = ("output_dir", "summarize_only", "quiet")
    given = [k for k, v in vars(args).items() if k not in keep and v != parser.get_default(k)]
    if given:
        opt = "--" + given[0].replace("_", "-")
        raise UsageError(
            f"--summarize-only takes every setting from the run's manifest; drop {opt}"
        )
    try:
        res = summarize_only(spec, args.output_dir)
    except RunLockedError as exc:  # a live run is writing there
        return report_usage_error(parser.prog, exc)
    if not args.quiet:
        sys.stdout.write(
            f"{res.report}\nsummarized {res.n_skipped} of {res.n_units} units (nothing run); "
            f"wrote {res.out_dir}\n"
        )
    return 0
