"""The ``tempo-lens`` command line.

Subcommands:

* ``generate`` — a TEMPO generation (or a baseline) on the default model: prints the
  bracket text, writes the trace JSON;
* ``analyze`` — generation with attention capture, analyses, exports and figures
  (same as ``experiments/run_attention_analysis.py``);
* ``stats`` — statistics over a directory of analysis runs
  (same as ``experiments/statistical_confidence_analysis.py``).

Every bad value gets one line on stderr (``tempo-lens: error: ...``) and exit code 2.

Example:
    $ tempo-lens generate --prompt "The cat sat on the" --max-steps 20 \\
        --selection-threshold 0.1 --json out.json
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

__all__ = ["add_generation_args", "config_from_args", "load_model_from_args", "main"]


class UsageError(Exception):
    """A bad command-line value (reported in one line, exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        raise UsageError(message)


def add_generation_args(p: argparse.ArgumentParser, *, require_prompt: bool = True) -> None:
    """The generation options shared by ``generate``, ``analyze`` and the experiments.

    Args:
        p: The parser to extend.
        require_prompt: ``--prompt`` is mandatory (``analyze`` also takes ``--prompts-file``).
    """
    g = p.add_argument_group("generation")
    g.add_argument(
        "--prompt", required=require_prompt, default=None, help="prompt text (non-empty)"
    )
    g.add_argument("--max-steps", type=int, default=20, help="maximum number of steps (>= 1)")
    g.add_argument("--min-steps", type=int, default=0, help="suppress EOS before this many steps")
    g.add_argument(
        "--selection-threshold", type=float, default=0.1, help="tau in (0, 1]: keep p >= tau"
    )
    g.add_argument("--max-parallel", type=int, default=8, help="cap on members per step (0 = none)")
    g.add_argument(
        "--isolate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="members of a set cannot attend to each other (default: isolated)",
    )
    g.add_argument("--readout", default="mixture", help="last | top | mixture (default)")
    g.add_argument(
        "--positions", default="shared", help="shared (TEMPO, default) | distinct (control)"
    )
    g.add_argument(
        "--member-offset", type=float, default=0.0, help="per-member position offset delta"
    )
    g.add_argument(
        "--schedule",
        default="constant",
        help="constant | linear | exponential | relu:ACT | bezier:C1,C2",
    )
    g.add_argument("--final-threshold", type=float, default=None, help="tau at the last step")
    g.add_argument("--prune", default=None, help="retroactive pruning: relative:R | absolute:A")
    g.add_argument("--lookahead", type=int, default=1, help="steps before a set is judged")
    g.add_argument(
        "--prune-layers", default="all", help="all | early | middle | late | 0,3,5 (layers)"
    )
    g.add_argument("--head-agg", default="mean", help="mean | max | sum over heads")
    g.add_argument("--prefilter", type=float, default=None, help="drop candidates p < R*p_top")
    g.add_argument(
        "--no-stop-at-eos", dest="stop_at_eos", action="store_false", help="do not stop at EOS"
    )
    g.add_argument("--no-kv-cache", dest="kv_cache", action="store_false", help="full forwards")
    m = p.add_argument_group("model")
    m.add_argument("--model", default="SmolLM2-135M-Instruct", help="offline model name")
    m.add_argument("--tiny", action="store_true", help="use the tiny random test model instead")
    m.add_argument("--device", default="cpu", help="torch device, e.g. cuda")


def config_from_args(args: argparse.Namespace) -> Any:
    """Build a :class:`~tempo_lens.TempoConfig` from parsed arguments (ValueError if bad)."""
    from tempo_lens.config import READOUTS, TempoConfig
    from tempo_lens.positions import PositionScheme
    from tempo_lens.pruning import ProbabilityRatioRule, PruningConfig, parse_rule
    from tempo_lens.schedules import ThresholdSchedule

    if args.prompt is None or not args.prompt.strip():
        raise ValueError("--prompt must not be empty")
    if args.readout not in READOUTS:
        raise ValueError(f"--readout must be one of {', '.join(READOUTS)}, got {args.readout!r}")
    if args.positions not in ("shared", "distinct"):
        raise ValueError(f"--positions must be shared or distinct, got {args.positions!r}")
    if args.head_agg not in ("mean", "max", "sum"):
        raise ValueError(f"--head-agg must be mean, max or sum, got {args.head_agg!r}")
    tau = args.selection_threshold
    if not 0 < tau <= 1:
        raise ValueError(f"--selection-threshold must be in (0, 1], got {tau}")
    schedule = None
    if args.schedule != "constant" or args.final_threshold is not None:
        schedule = ThresholdSchedule.parse(args.schedule, tau, args.final_threshold)
    prune = None
    rule = parse_rule(args.prune or "")
    if rule is not None:
        prune = PruningConfig(
            rule=rule,
            lookahead=args.lookahead,
            layers=args.prune_layers,
            head_agg=args.head_agg,
        )
    return TempoConfig(
        selection_threshold=tau,
        max_steps=args.max_steps,
        min_steps=args.min_steps,
        max_parallel=args.max_parallel or None,
        isolate=args.isolate,
        positions=PositionScheme(kind=args.positions, member_offset=args.member_offset),
        readout=args.readout,
        schedule=schedule,
        prune=prune,
        prefilter=ProbabilityRatioRule(ratio=args.prefilter) if args.prefilter else None,
        stop_at_eos=args.stop_at_eos,
        use_kv_cache=args.kv_cache,
    )


def load_model_from_args(args: argparse.Namespace) -> Any:
    """The model named by ``--model`` / ``--tiny``."""
    from tempo_lens.models import load_model, make_tiny_model

    if args.tiny:
        return make_tiny_model(device=args.device)
    return load_model(args.model, device=args.device)


def _prompt_for(model: Any, args: argparse.Namespace) -> Any:
    """Text prompts need a tokenizer; the tiny model takes ``--prompt "1 2 3"`` as ids."""
    if model.tokenizer is None:
        try:
            return [int(t) for t in args.prompt.replace(",", " ").split()]
        except ValueError:
            raise ValueError(
                "the tiny model has no tokenizer: give --prompt as token ids"
            ) from None
    return args.prompt


def _cmd_generate(args: argparse.Namespace) -> int:
    from tempo_lens import baselines
    from tempo_lens.generation import generate

    config = config_from_args(args)
    if args.baseline and args.baseline not in ("greedy", "sampling", "beam"):
        raise ValueError(f"--baseline must be greedy, sampling or beam, got {args.baseline!r}")
    model = load_model_from_args(args)
    prompt = _prompt_for(model, args)
    if args.baseline == "greedy":
        trace = baselines.greedy(model, prompt, max_steps=config.max_steps)
    elif args.baseline == "sampling":
        trace = baselines.sample(model, prompt, max_steps=config.max_steps, seed=args.seed)
    elif args.baseline == "beam":
        trace = baselines.beam_search(model, prompt, max_steps=config.max_steps)
    else:
        trace = generate(model, prompt, config, progress=not args.quiet)
    color = args.color if args.color is not None else sys.stdout.isatty()
    sys.stdout.write(trace.bracket_text(color=color) + "\n")
    if not args.quiet:
        s = trace.summary()
        sys.stderr.write(
            f"steps={s['total_steps']} parallel={s['parallel_steps']} "
            f"max_width={s['max_parallel_width']} pruned={s['pruned']} stop={s['stop_reason']}\n"
        )
    if args.json:
        trace.save(args.json)
        if not args.quiet:
            sys.stderr.write(f"trace written to {args.json}\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tempo-lens", description="TEMPO generation and interpretability.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    gen = sub.add_parser("generate", help="run a TEMPO generation (or a baseline)")
    add_generation_args(gen)
    gen.add_argument("--json", default=None, help="write the trace JSON here")
    gen.add_argument("--baseline", default=None, help="greedy | sampling | beam instead of TEMPO")
    gen.add_argument("--seed", type=int, default=0, help="seed for --baseline sampling")
    gen.add_argument("--color", action=argparse.BooleanOptionalAction, default=None)
    gen.add_argument("-q", "--quiet", action="store_true", help="only print the text")
    gen.set_defaults(func=_cmd_generate)
    from tempo_lens.analysis import cli as analysis_cli

    analysis_cli.register(sub, add_generation_args)
    return parser


def run_parser(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and run ``args.func``; bad values give one stderr line and exit 2."""
    try:
        args = parser.parse_args(argv)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
        return int(args.func(args))
    except (UsageError, ValueError, FileNotFoundError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        sys.stderr.write(f"{parser.prog}: error: {msg}\n")
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 bad usage/values)."""
    return run_parser(build_parser(), argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
