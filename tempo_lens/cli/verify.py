r"""``tempo-lens verify``: TEMPO on a model, checked step by step against Hugging Face.

Runs :func:`tempo_lens.verify` (the battery of :data:`tempo_lens.analysis.verify.CHECKS`) and
prints one line per check with its max |Δp| and a verdict.

Exit codes: 0 every check within tolerance; 1 a mismatch; 2 a bad option value; 3 the
model was refused up front (the reason is printed: an architecture the TEMPO hooks cannot
express exactly, or a non-rotary model).

Examples:
    $ tempo-lens verify                               # the default model
    $ tempo-lens verify --model gemma-3-270m --backend bridge
    $ tempo-lens verify --arch qwen3                  # a tiny random Qwen3 (bridge)
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tempo_lens.models.gguf_files import DEFAULT_MODEL
from tempo_lens.runner.options import UsageError, finite_float, int_at_least

__all__ = ["CHECK_NAMES", "register", "run"]

CHECK_NAMES = (
    "isolated",
    "visible",
    "fractional",
    "soft-prune",
    "hard-prune",
    "no-cache",
    "ragged-batch",
)
"""The battery's check names (the keys of :data:`tempo_lens.analysis.verify.CHECKS`)."""


def register(subparsers: Any) -> None:
    """Add the ``verify`` subcommand."""
    p = subparsers.add_parser(
        "verify",
        help="check TEMPO on a model against its own Hugging Face forward",
        description="Run a fixed TEMPO battery and compare every step's distribution with "
        "the model's Hugging Face implementation (explicit position_ids and 4-D masks).",
    )
    m = p.add_argument_group("model")
    m.add_argument("--model", default=DEFAULT_MODEL, help="offline model name")
    m.add_argument(
        "--backend", choices=("hooked", "bridge"), default=None, help="default: the TL line's"
    )
    m.add_argument("--tiny", action="store_true", help="the tiny random Llama test model")
    m.add_argument("--arch", default=None, help="a tiny random model of this family (bridge)")
    c = p.add_argument_group("battery")
    c.add_argument("--checks", default=None, help=f"comma-separated subset of {CHECK_NAMES}")
    c.add_argument("--max-steps", type=int_at_least(1), default=6, help="steps per generation")
    c.add_argument("--tolerance", type=finite_float, default=1e-4, help="max |dp| accepted")
    c.add_argument("--json", default=None, help="write the report as JSON here")
    p.set_defaults(func=run)


def _checks(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in names if v not in CHECK_NAMES]
    if bad or not names:
        raise UsageError(
            f"--checks: unknown {bad or value!r}; choose from {', '.join(CHECK_NAMES)}"
        )
    return names


def _load(args: argparse.Namespace) -> Any:
    from tempo_lens.models import load_model, make_tiny_model

    if args.arch is not None:
        from tempo_lens.models.zoo import tiny_architecture

        return load_model(tiny_architecture(args.arch))
    if args.tiny:
        return make_tiny_model(backend=args.backend)
    return load_model(args.model, backend=args.backend)


def run(args: argparse.Namespace) -> int:
    """Load the model, run the battery, print the lines; the exit code (see the module)."""
    checks = _checks(args.checks)
    if args.tolerance < 0:
        raise UsageError(f"--tolerance must be >= 0, got {args.tolerance}")
    if args.arch is not None:
        from tempo_lens.models.zoo import ARCHITECTURES

        if args.arch not in ARCHITECTURES:
            raise UsageError(f"--arch: unknown {args.arch!r}; choose from {sorted(ARCHITECTURES)}")
    # the model libraries only once every value is known to be good (fast usage errors)
    from tempo_lens.analysis.verify import verify
    from tempo_lens.backends import NotRotaryError, UnsupportedAttentionError

    try:
        model = _load(args)
        report = verify(model, checks=checks, max_steps=args.max_steps, tolerance=args.tolerance)
    except (NotRotaryError, UnsupportedAttentionError) as exc:
        sys.stderr.write(f"tempo-lens verify: refused: {exc}\n")
        return 3
    if args.json:
        from dataclasses import asdict

        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(asdict(report), f, indent=2)
    sys.stdout.write("\n".join(report.lines()) + "\n")
    return 0 if report.ok else 1
