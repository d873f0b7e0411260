"""The generation and model options of ``tempo-lens generate`` / ``analyze``.

Generated from :class:`~tempo_lens.TempoConfig`: every scalar field becomes an option
whose help is the field's documentation (``--selection-threshold``, ``--max-steps``,
``--min-steps``, ``--max-parallel``, ``--isolate/--no-isolate``, ``--readout``,
``--stop-at-eos/--no-stop-at-eos``, ``--use-kv-cache/--no-use-kv-cache``,
``--fast-weights/--no-fast-weights``). The nested fields are spelled flat, each option
documented by the field it sets:

=====================  =====================================================
option                 sets
=====================  =====================================================
``--positions``         ``PositionScheme.kind``
``--member-offset``     ``PositionScheme.member_offset``
``--schedule``          ``ThresholdSchedule`` (``ThresholdSchedule.parse`` spec)
``--final-threshold``   ``ThresholdSchedule.tau_final``
``--prune``             ``PruningConfig.rule`` (``relative:R`` | ``absolute:A``)
``--lookahead``         ``PruningConfig.lookahead``
``--prune-layers``      ``PruningConfig.layers``
``--head-agg``          ``PruningConfig.head_agg``
``--prune-mode``        ``PruningConfig.mode`` (``soft`` | ``hard``)
``--prefilter``         ``ProbabilityRatioRule.ratio`` of ``TempoConfig.prefilter``
=====================  =====================================================

``--max-parallel 0`` means no cap (``max_parallel=None``). Values are validated by the
config classes themselves, so the command line and the Python API accept and refuse the
same values with the same messages.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

from tempo_lens.config import TempoConfig
from tempo_lens.models import DEFAULT_MODEL
from tempo_lens.positions import PositionScheme
from tempo_lens.pruning import ProbabilityRatioRule, PruningConfig, parse_rule
from tempo_lens.runner.options import add_config_options, field_docs, plain_text
from tempo_lens.schedules import ThresholdSchedule

__all__ = ["add_generation_options", "load_model_from_args", "tempo_config_from_args"]

NESTED = ("positions", "schedule", "prune", "prefilter")

# (option, class documenting it, field, type, syntax appended to the doc)
_FLAT: tuple[tuple[str, type, str, type, str], ...] = (
    ("--positions", PositionScheme, "kind", str, ""),
    ("--member-offset", PositionScheme, "member_offset", float, ""),
    (
        "--schedule",
        TempoConfig,
        "schedule",
        str,
        "constant | linear | exponential | relu[:ACT] | bezier[:C1,C2]",
    ),
    ("--final-threshold", ThresholdSchedule, "tau_final", float, ""),
    ("--prune", TempoConfig, "prune", str, "none | relative:R | absolute:A"),
    ("--lookahead", PruningConfig, "lookahead", int, ""),
    ("--prune-layers", PruningConfig, "layers", str, "all | early | middle | late | 0,3,5"),
    ("--head-agg", PruningConfig, "head_agg", str, "mean | max | sum"),
    ("--prune-mode", PruningConfig, "mode", str, "soft | hard"),
    ("--prefilter", TempoConfig, "prefilter", float, "R: drop candidates with p < R * p_top"),
)
_FLAT_DEFAULTS = {"--schedule": "constant", "--prune": None, "--prefilter": None}


def _default(cls: type, name: str) -> Any:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return None if f.default is dataclasses.MISSING else f.default
    raise KeyError(name)


def add_generation_options(parser: argparse.ArgumentParser, *, require_prompt: bool = True) -> None:
    """Add ``--prompt``, the generation options and the model options to ``parser``.

    Args:
        parser: The parser to extend.
        require_prompt: ``--prompt`` is mandatory (``analyze`` also takes ``--prompts-file``).
    """
    g = parser.add_argument_group("generation (TempoConfig)")
    g.add_argument("--prompt", required=require_prompt, help="prompt text (token ids with --tiny)")
    add_config_options(g, TempoConfig, exclude=NESTED)
    for option, cls, name, kind, syntax in _FLAT:
        doc = plain_text(field_docs(cls)[name])
        default = _FLAT_DEFAULTS.get(option, _default(cls, name))
        help_text = f"{doc}{' Syntax: ' + syntax + '.' if syntax else ''} (default: {default!r})"
        hint = typing.get_type_hints(cls)[name]
        choices = typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else None
        g.add_argument(option, type=kind, default=default, choices=choices, help=help_text)
    g.add_argument(  # the spelling of earlier versions
        "--no-kv-cache", dest="use_kv_cache", action="store_false", help=argparse.SUPPRESS
    )
    m = parser.add_argument_group("model")
    m.add_argument("--model", default=DEFAULT_MODEL, help="offline model name")
    m.add_argument("--tiny", action="store_true", help="use the tiny random test model instead")
    m.add_argument("--device", default="cpu", help="torch device, e.g. cuda")


def tempo_config_from_args(args: argparse.Namespace) -> TempoConfig:
    """The :class:`TempoConfig` the parsed options describe.

    Raises:
        ValueError: A value the config classes refuse (one-line message).
    """
    kw = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TempoConfig)
        if f.name not in NESTED
    }
    if kw["max_parallel"] == 0:
        kw["max_parallel"] = None
    schedule = None
    if args.schedule != "constant" or args.final_threshold is not None:
        schedule = ThresholdSchedule.parse(
            args.schedule, args.selection_threshold, args.final_threshold
        )
    rule = parse_rule(args.prune or "")
    prune = None
    if rule is not None:
        prune = PruningConfig(
            rule=rule,
            lookahead=args.lookahead,
            layers=args.prune_layers,
            head_agg=args.head_agg,
            mode=args.prune_mode,
        )
    return TempoConfig(
        **kw,
        positions=PositionScheme(kind=args.positions, member_offset=args.member_offset),
        schedule=schedule,
        prune=prune,
        prefilter=ProbabilityRatioRule(ratio=args.prefilter) if args.prefilter else None,
    )


def load_model_from_args(args: argparse.Namespace) -> Any:
    """The model named by ``--model`` / ``--tiny`` on ``--device``."""
    from tempo_lens.models import load_model, make_tiny_model

    if args.tiny:
        return make_tiny_model(device=args.device)
    return load_model(args.model, device=args.device)
