r"""``tempo-lens generate``: one TEMPO generation (or a baseline); prints the bracket text.

Examples:
    $ tempo-lens generate --prompt "The cat sat on the" --max-steps 20 \
        --selection-threshold 0.1 --json out.json
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tempo_lens.cli.gen_options import (
    add_generation_options,
    load_model_from_args,
    tempo_config_from_args,
)
from tempo_lens.runner.options import UsageError

__all__ = ["BASELINES", "register"]

BASELINES = ("greedy", "sampling", "beam", "tree-beam", "tree-spec")
"""``tree-beam``: beam search as one token tree (4 beams); ``tree-spec``: greedy decoding by
tree speculative decoding (n-gram drafts); see ``tempo_lens.generation.trees``."""


def register(subparsers: Any) -> None:
    """Add the ``generate`` subcommand."""
    p = subparsers.add_parser("generate", help="run a TEMPO generation (or a baseline)")
    add_generation_options(p)
    o = p.add_argument_group("output")
    o.add_argument("--json", default=None, help="write the trace JSON here")
    o.add_argument(
        "--baseline",
        choices=BASELINES,
        help="run this baseline instead of TEMPO (tree-beam: beam search as one token tree; "
        "tree-spec: greedy by tree speculative decoding)",
    )
    o.add_argument("--seed", type=int, default=0, help="seed for --baseline sampling")
    o.add_argument("--color", action=argparse.BooleanOptionalAction, default=None)
    o.add_argument("-q", "--quiet", action="store_true", help="only print the text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Generate, write the trace, then print (every value is checked before the model loads).

    The trace is written before anything is printed, so a terminal that cannot show the
    text never costs the result.
    """
    if not args.prompt.strip():
        raise UsageError("--prompt must not be empty")
    config = tempo_config_from_args(args)
    # the model libraries only once every value is known to be good (fast usage errors)
    from tempo_lens.generation import baselines, generate, trees
    from tempo_lens.generation.text import prompt_input

    model = load_model_from_args(args)
    prompt = prompt_input(model, args.prompt)
    if args.baseline == "greedy":
        trace = baselines.greedy(model, prompt, max_steps=config.max_steps)
    elif args.baseline == "sampling":
        trace = baselines.sample(model, prompt, max_steps=config.max_steps, seed=args.seed)
    elif args.baseline == "beam":
        trace = baselines.beam_search(model, prompt, max_steps=config.max_steps)
    elif args.baseline == "tree-beam":
        trace = trees.tree_beam_search(model, prompt, max_steps=config.max_steps).trace
    elif args.baseline == "tree-spec":
        trace = trees.tree_speculative(model, prompt, max_steps=config.max_steps).trace
    else:
        trace = generate(model, prompt, config, progress=not args.quiet)
    if args.json:  # the result first: printing comes after, and cannot lose it
        trace.save(args.json)
    color = args.color if args.color is not None else sys.stdout.isatty()
    sys.stdout.write(trace.bracket_text(color=color) + "\n")
    if not args.quiet:
        s = trace.summary()
        sys.stderr.write(
            f"steps={s['total_steps']} parallel={s['parallel_steps']} "
            f"max_width={s['max_parallel_width']} pruned={s['pruned']} stop={s['stop_reason']}\n"
        )
        accepted = trace.extra.get("accepted") if trace.method == "tree_spec" else None
        if accepted:
            sys.stderr.write(f"accepted per forward={sum(accepted) / len(accepted):.2f}\n")
        if args.json:
            sys.stderr.write(f"trace written to {args.json}\n")
    return 0
