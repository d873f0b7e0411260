"""``tempo-lens analyze``: generation with attention capture, analyses, exports, figures.

``tempo-lens analyze --prompt ... --output-dir DIR`` (or ``--prompts-file FILE``) takes
the generation options of ``tempo-lens generate`` plus capture options and writes one run
directory (several prompts: ``DIR/run_000``, ``DIR/run_001``, ... and ``DIR/runs.json``).
All values are checked (and the model loaded) before the first file is written.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

from tempo_lens.cli._base import Command, fmt
from tempo_lens.cli.gen_options import (
    add_generation_options,
    load_model_from_args,
    tempo_config_from_args,
)
from tempo_lens.runner.options import UsageError, choose_prompts

__all__ = ["COMMAND", "add_analyze_options", "main", "register", "run"]


def add_analyze_options(p: argparse.ArgumentParser) -> None:
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


def _prompts(args: argparse.Namespace) -> list[str]:
    texts = None if args.prompt is None else [args.prompt]
    prompts = choose_prompts(texts, args.prompts_file)
    if prompts is None:
        raise UsageError("give --prompt or --prompts-file")
    return [p.text for p in prompts]


def _heads(spec: str | None, n_heads: int) -> list[int] | None:
    if spec is None:
        return None
    try:
        heads = sorted({int(h) for h in spec.split(",")})
    except ValueError:
        raise UsageError(f"--heads must be indices like 0,2, got {spec!r}") from None
    if not heads or heads[0] < 0 or heads[-1] >= n_heads:
        raise UsageError(f"--heads must be in [0, {n_heads}), got {spec!r}")
    return heads


def run(args: argparse.Namespace) -> int:
    """Check everything, then analyse each prompt into its run directory."""
    from tqdm.auto import tqdm

    from tempo_lens.analysis.run import analyze_prompt
    from tempo_lens.display import render_run
    from tempo_lens.generation.text import encode_prompt, prompt_input
    from tempo_lens.io import atomic_write_json
    from tempo_lens.pruning import resolve_layers

    prompts = _prompts(args)
    config = tempo_config_from_args(args)
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output-dir is a file: {out}")
    if args.top_k < 1 or args.window < 0:
        raise UsageError("--top-k must be >= 1 and --window >= 0")
    model = load_model_from_args(args)
    layers = resolve_layers(args.layers, model.cfg.n_layers)
    heads = _heads(args.heads, model.cfg.n_heads)
    inputs = [prompt_input(model, p) for p in prompts]
    for x in inputs:
        encode_prompt(model, x)  # every prompt must encode before anything is written
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
                render=render_run if args.figures else None,
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
                f"  parallel:non-parallel ratio={fmt(r['ratio'])} "
                f"(vs generated {fmt(r['ratio_generated'])}, per set {fmt(r['set_ratio'])}) "
                f"n_parallel={r['n_parallel']} max_sibling_attention="
                f"{fmt(iso['max_sibling_attention'])}\n"
            )
    return 0


COMMAND = Command(
    name="analyze",
    help="generate with attention capture and analyse",
    description="TEMPO generation with attention capture and analyses.",
    # --prompts-file can replace --prompt
    options=(partial(add_generation_options, require_prompt=False), add_analyze_options),
    run=run,
    script_prog="run_attention_analysis",
)
register, main = COMMAND.register, COMMAND.main
