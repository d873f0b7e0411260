"""Shared command line for the research-question experiment scripts (``experiments/``).

Each script declares a frozen config dataclass (Google-style ``Attributes:`` docs become
``--help``), a ``run(cfg, model)`` returning a results object (``write(out_dir)``,
``report()``), and an :class:`ExperimentSpec`; :func:`script_main` does the rest: parse,
validate (one-line errors, exit 2, nothing written), load the model (``--tiny`` for the
tiny random model), run, write, report.

Usage (inside ``experiments/my_question.py``)::

    SPEC = ExperimentSpec(config=Config, prog="my_question.py", description="...",
                          default_prompts=("The cat sat on the",), tiny_prompts=("1 2 3",))

    def main(argv=None) -> int:
        return script_main(SPEC, run, argv)
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import math
import re
import sys
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import tempo_lens as tl
from tempo_lens.text import encode_prompt

__all__ = [
    "ExperimentSpec",
    "build_parser",
    "config_from_args",
    "field_docs",
    "fmt",
    "fmt_ci",
    "load",
    "resolve_prompts",
    "script_main",
]


@dataclass(frozen=True)
class ExperimentSpec:
    """What distinguishes one experiment script's command line.

    Attributes:
        config: The frozen config dataclass (fields: ``prompts``, ``tiny``, ``model``,
            ``device`` and the experiment's own).
        prog: Program name for ``--help`` and error lines.
        description: First line of ``--help``.
        default_prompts: Prompts used on a model with a tokenizer when none are given.
        tiny_prompts: Token-id prompts used on the tiny model when none are given.
        tiny_model: Keywords for :func:`tempo_lens.make_tiny_model` with ``--tiny``.
    """

    config: type
    prog: str
    description: str
    default_prompts: tuple[str, ...]
    tiny_prompts: tuple[str, ...]
    tiny_model: dict[str, Any] = field(default_factory=dict)


def fmt(x: float | None) -> str:
    return "nan" if x is None or not math.isfinite(x) else f"{x:.3g}"


def fmt_ci(ci: Sequence[float]) -> str:
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]"


class UsageError(ValueError):
    """A bad command-line value (one line on stderr, exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def field_docs(cls: type) -> dict[str, str]:
    """``name -> text`` from the Google-style ``Attributes:`` section of the docstring."""
    docs: dict[str, str] = {}
    name, inside = None, False
    for line in inspect.cleandoc(cls.__doc__ or "").splitlines():
        if line.strip() == "Attributes:":
            inside = True
        elif inside and line and not line.startswith(" "):
            break
        elif inside and (m := re.match(r"^    (\w+): (.*)$", line)):
            name, docs[m[1]] = m[1], m[2]
        elif inside and name and line.startswith("        "):
            docs[name] += " " + line.strip()
    return docs


def _tuple_of(elem: type) -> Any:
    def parse(text: str) -> tuple[Any, ...]:
        return tuple(elem(x) for x in text.replace(" ", "").split(",") if x)

    parse.__name__ = f"list of {elem.__name__}"
    return parse


def build_parser(spec: ExperimentSpec) -> argparse.ArgumentParser:
    """Every field of ``spec.config`` as an option; its attribute doc is the help."""
    Config = spec.config
    p = _Parser(prog=spec.prog, description=spec.description)
    p.add_argument("--output-dir", required=True, help="directory for the CSV/JSON results")
    p.add_argument("--prompts-file", default=None, help="one prompt per line (# comments)")
    p.add_argument("-q", "--quiet", action="store_true", help="do not print the summary")
    docs, hints = field_docs(Config), typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        help_text = f"{docs[f.name]} (default: {f.default!r})"
        if f.name == "prompts":
            p.add_argument("--prompt", dest="prompts", action="append", help=help_text)
        elif hints[f.name] is bool:
            flag = "--" + f.name.replace("_", "-")
            p.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_text
            )
        elif typing.get_origin(hints[f.name]) is tuple:
            elem = typing.get_args(hints[f.name])[0]
            p.add_argument(
                "--" + f.name.replace("_", "-"),
                type=_tuple_of(elem),
                default=f.default,
                help=help_text + ", comma-separated",
            )
        else:
            p.add_argument(
                "--" + f.name.replace("_", "-"),
                type=hints[f.name],
                default=f.default,
                help=help_text,
            )
    return p


def config_from_args(spec: ExperimentSpec, args: argparse.Namespace) -> Any:
    """The ``spec.config`` instance the parsed arguments describe."""
    Config = spec.config
    prompts = list(args.prompts or [])
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise FileNotFoundError(f"prompts file not found: {path}")
        lines = path.read_text(encoding="utf-8").splitlines()
        prompts += [x for x in lines if x.strip() and not x.lstrip().startswith("#")]
    kw = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if f.name != "prompts"}
    return Config(prompts=tuple(prompts), **kw)


def load(spec: ExperimentSpec, cfg: Any) -> Any:
    """The model named by the config (the tiny random model with ``tiny``)."""
    if cfg.tiny:
        return tl.make_tiny_model(device=cfg.device, **spec.tiny_model)
    return tl.load_model(cfg.model, device=cfg.device)


def resolve_prompts(spec: ExperimentSpec, cfg: Any, model: Any) -> list[tuple[str, list[int]]]:
    """``(text, token ids)`` per prompt; without a tokenizer prompts are token ids."""
    texts = cfg.prompts or (spec.tiny_prompts if model.tokenizer is None else spec.default_prompts)
    out = []
    for text in texts:
        ids: str | list[int] = text
        if model.tokenizer is None:
            try:
                ids = [int(t) for t in text.replace(",", " ").split()]
            except ValueError:
                raise ValueError(
                    f"this model has no tokenizer: give prompts as token ids, got {text!r}"
                ) from None
        out.append((text, encode_prompt(model, ids)))
    return out


def script_main(
    spec: ExperimentSpec, run: Callable[[Any, Any], Any], argv: Sequence[str] | None
) -> int:
    """Run an experiment from the command line; 0 on success, 2 (one line) on bad values.

    ``run(cfg, model)`` returns a results object with ``write(out_dir) -> paths`` and
    ``report() -> str``.
    """
    parser = build_parser(spec)
    try:
        args = parser.parse_args(argv)
        cfg = config_from_args(spec, args)
        model = load(spec, cfg)
        resolve_prompts(spec, cfg, model)
    except (ValueError, FileNotFoundError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        sys.stderr.write(f"{parser.prog}: error: {msg}\n")
        return 2
    results = run(cfg, model)
    paths = results.write(args.output_dir)
    if not args.quiet:
        sys.stdout.write(results.report() + "\n")
        sys.stdout.write(f"wrote {', '.join(str(p) for p in paths)}\n")
    return 0
