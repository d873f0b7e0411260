"""RQ 1.1 / 1.2: does sharing one RoPE position change the attention a parallel set gets?

Controlled sequences, built by hand with :class:`tempo_lens.SequenceState` (no
generation): ``prompt + [the model's top-n next tokens as ONE parallel set] + k greedy
continuation tokens`` (the plain model's greedy text after the top-1 member, fixed for
every ``n`` and scheme, so only the set changes). Units: prompt x n x scheme; each
sequence runs under :func:`tempo_lens.attach` with ``run_with_cache`` and, per layer, we
measure the attention the continuation's queries pay to the set's members (mean over
heads and continuation queries). Schemes:

* ``shared`` — TEMPO: every member at the same logical position (``delta = 0``);
* ``offset`` — member ``i`` at ``L + i·delta`` (``PositionScheme(member_offset=delta)``);
* ``distinct`` — every token its own consecutive position (the control).

With ``n = 1`` all schemes give the same sequence (a built-in check, reported as
``n1_max_scheme_difference``).

Example::

    python -m tempo_lens.experiments.position_sharing --output-dir results/position_sharing
    python -m tempo_lens.experiments.position_sharing --tiny --quick --output-dir /tmp/ps
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

import tempo_lens as tl
from tempo_lens.analysis.position_effects import position_effects
from tempo_lens.backends import hook_name
from tempo_lens.experiments._common import PROMPTS, StatsConfig, fmt, fmt_ci
from tempo_lens.generation.text import eos_token_id
from tempo_lens.io import atomic_write_json, jsonable
from tempo_lens.runner import ExperimentSpec, Unit, encode
from tempo_lens.runner.cli import run_cli


@dataclass(frozen=True, kw_only=True)
class Config(StatsConfig):
    """Position-sharing settings.

    Attributes:
        n_values: Set sizes n (the model's top-n next tokens form the set), each >= 1.
        deltas: Member offsets delta >= 0 (member i at L + i*delta); 0 (shared) is always included.
        distinct: Also run the distinct-positions control.
        continuation: Greedy continuation tokens after the set (>= 1); they are the queries.
        isolate: Members of the set cannot attend to each other.
        recovery: Fraction of the shared-to-distinct gap an offset must close to count as recovered (0, 1].
    """

    n_values: tuple[int, ...] = (1, 2, 3, 5, 8)
    deltas: tuple[float, ...] = (0.0, 0.001, 0.01, 0.1, 0.5, 1.0)
    distinct: bool = True
    continuation: int = 4
    isolate: bool = True
    recovery: float = 0.9

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.n_values or min(self.n_values) < 1:
            raise ValueError(f"n_values must be a non-empty list of ints >= 1, got {self.n_values}")
        if any(not math.isfinite(d) or d < 0 for d in self.deltas):
            raise ValueError(f"deltas must be finite and >= 0, got {self.deltas}")
        if self.continuation < 1:
            raise ValueError(f"continuation must be >= 1, got {self.continuation}")
        if not 0 < self.recovery <= 1:
            raise ValueError(f"recovery must be in (0, 1], got {self.recovery}")


def schemes(cfg: Config) -> list[dict[str, Any]]:
    """``shared`` (delta 0), each ``offset`` delta (ascending), then ``distinct``."""
    out = [{"scheme": "offset" if d else "shared", "delta": d} for d in sorted({0.0, *cfg.deltas})]
    return out + ([{"scheme": "distinct", "delta": None}] if cfg.distinct else [])


@torch.no_grad()
def _next_logits(model: Any, ids: list[int]) -> torch.Tensor:
    tokens = torch.tensor([ids], device=model.cfg.device)
    # an explicit all-ones mask: a prompt is never padding, whatever the tokenizer's side
    return model(tokens, attention_mask=torch.ones_like(tokens), return_type="logits")[0, -1]


_PREFIXES: dict[tuple[int, tuple[int, ...], int], tuple[Any, list[int], list[int]]] = {}
"""Per (model, prompt, continuation length): the ranked next tokens and the continuation."""


def _ranked_and_continuation(
    model: Any, prompt: list[int], continuation: int
) -> tuple[list[int], list[int]]:
    """The plain model's next tokens by rank (EOS excluded) and its greedy continuation.

    The same for every (n, scheme, delta) unit of a prompt, so computed once per prompt
    (the last few are kept, checked by a weak reference to the model; a unit's result does
    not depend on the cache).
    """
    key = (id(model), tuple(prompt), continuation)
    hit = _PREFIXES.get(key)
    if hit is None or hit[0]() is not model:
        logits = _next_logits(model, prompt).clone()
        if (eos := eos_token_id(model)) is not None:
            logits[eos] = -math.inf
        ranked = torch.argsort(logits, descending=True, stable=True).tolist()
        cont: list[int] = []
        for _ in range(continuation):
            cont.append(int(torch.argmax(_next_logits(model, prompt + ranked[:1] + cont))))
        if len(_PREFIXES) >= 8:
            _PREFIXES.clear()
        _PREFIXES[key] = (weakref.ref(model), ranked, cont)
    _, ranked, cont = _PREFIXES[key]
    return ranked, list(cont)


def _sequence(model: Any, prompt: list[int], cfg: Config, unit: Unit) -> tl.SequenceState:
    """The unit's sequence: prompt, one set of the top-n next tokens, greedy continuation.

    The set holds the top-n next tokens (EOS excluded), the continuation is greedy after
    the top-1 member, both under the plain model, at the unit's positions.
    """
    n, delta = unit.condition["n"], unit.condition["delta"]
    ranked, cont = _ranked_and_continuation(model, prompt, cfg.continuation)
    top = ranked[:n]
    if len(prompt) + max(cfg.n_values) + len(cont) > model.cfg.n_ctx:
        raise ValueError(f"prompt {unit.prompt.id} is too long for the model context")
    positions = tl.PositionScheme(kind="distinct") if delta is None else None
    state = tl.SequenceState(
        prompt,
        isolate=cfg.isolate,
        positions=positions or tl.PositionScheme(member_offset=delta),
    )
    for ids in [top, *([t] for t in cont)]:
        state.append_set(ids)
    return state


def run_unit(cfg: Config, model: Any, unit: Unit) -> dict[str, list[dict[str, Any]]]:
    """Per layer: the continuation queries' attention to the set (mean over heads)."""
    with tl.fast_weights(model), torch.no_grad():  # bit-identical, no per-forward copies
        state = _sequence(model, encode(model, unit.prompt), cfg, unit)
        tokens = state.tokens_tensor(model.cfg.device)
        with tl.attach(model, state):
            _, cache = model.run_with_cache(
                tokens,
                attention_mask=torch.ones_like(tokens),  # never padded (docs/gotchas.md)
                names_filter=[hook_name(layer, "pattern") for layer in range(model.cfg.n_layers)],
            )
    members, queries = state.set_indices[0], [i for s in state.set_indices[1:] for i in s]
    rows = []
    for layer in range(model.cfg.n_layers):
        a = cache["pattern", layer][0].mean(0).to(torch.float64)[queries]  # [query, key]
        to_set = a[:, members]
        rows.append(
            {
                "layer": layer,
                "attention_set_total": float(to_set.sum(-1).mean()),
                "attention_per_member": float(to_set.mean()),
                "attention_top_member": float(to_set[:, 0].mean()),
                "attention_prompt": float(a[:, : state.prompt_length].sum(-1).mean()),
                "n_queries": len(queries),
            }
        )
    return {"attention": rows}


def summarize(cfg: Config, tables: dict[str, pd.DataFrame], out: Path) -> str:
    """Trends of the set's total attention with n and the scheme -> ``summary.json``."""
    df = tables["attention"]
    effects = position_effects(df, recovery=cfg.recovery, min_n=cfg.min_prompts, seed=cfg.seed)
    summary = {
        "n_prompts": int(df["prompt_id"].nunique()),
        "n_layers": int(df["layer"].nunique()),
        "isolate": cfg.isolate,
        **effects,
    }
    atomic_write_json(out / "summary.json", jsonable(summary))
    lines = [
        f"{r['scheme']:>8} delta={r['delta']:<6g} set-total vs n: rho={fmt(r['rho_mean'])} CI "
        f"{fmt_ci(r['rho_ci'])}; T(n={r['n_max']})/T(n={r['n_min']})={fmt(r['ratio_mean'])} "
        f"CI {fmt_ci(r['ratio_ci'])} -> {r['verdict']}"
        for r in effects["n_effect"]
    ]
    n_max = int(df["n"].max())
    lines += [
        f"n={r['n']} {r['scheme']:>8} delta={r['delta']:<6g} T/T(shared)={fmt(r['ratio_mean'])}"
        f" CI {fmt_ci(r['ratio_ci'])} recovery={fmt(r['recovery_mean'])} -> {r['verdict']}"
        for r in effects["scheme_effect"]
        if r["n"] == n_max
    ]
    lines.append(f"critical delta: {effects['critical_delta']['text']}")
    lines.append(f"layers most affected by n: {effects['layers_most_affected']}")
    return "\n".join(lines)


SPEC = ExperimentSpec(
    name="position_sharing",
    config=Config,
    conditions=lambda cfg: [{"n": n, **s} for n in sorted(set(cfg.n_values)) for s in schemes(cfg)],
    run_unit=run_unit,
    summarize=summarize,
    default_prompts=PROMPTS[:4],
    quick={"n_values": (1, 2, 3), "deltas": (0.01, 1.0), "continuation": 2},
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run from the command line (:func:`tempo_lens.runner.run_cli`); 0 on success."""
    return run_cli(SPEC, argv)


if __name__ == "__main__":
    raise SystemExit(main())
