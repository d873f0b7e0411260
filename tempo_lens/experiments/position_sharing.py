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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import tempo_lens as tl
from tempo_lens.analysis import estimate, rank_correlation
from tempo_lens.analysis._util import jsonable
from tempo_lens.experiments._common import PROMPTS, fmt, fmt_ci
from tempo_lens.io import atomic_write_json
from tempo_lens.runner import ExperimentSpec, RunConfig, Unit, encode
from tempo_lens.text import eos_token_id


@dataclass(frozen=True, kw_only=True)
class Config(RunConfig):
    """Position-sharing settings.

    Attributes:
        n_values: Set sizes n (the model's top-n next tokens form the set), each >= 1.
        deltas: Member offsets delta >= 0 (member i at L + i*delta); 0 (shared) is always included.
        distinct: Also run the distinct-positions control.
        continuation: Greedy continuation tokens after the set (>= 1); they are the queries.
        isolate: Members of the set cannot attend to each other.
        recovery: Fraction of the shared-to-distinct gap an offset must close to count as recovered (0, 1].
        min_prompts: Fewest prompts before a trend or difference is claimed.
    """

    n_values: tuple[int, ...] = (1, 2, 3, 5, 8)
    deltas: tuple[float, ...] = (0.0, 0.001, 0.01, 0.1, 0.5, 1.0)
    distinct: bool = True
    continuation: int = 4
    isolate: bool = True
    recovery: float = 0.9
    min_prompts: int = 3

    def __post_init__(self) -> None:
        if not self.n_values or min(self.n_values) < 1:
            raise ValueError(f"n_values must be a non-empty list of ints >= 1, got {self.n_values}")
        if any(not math.isfinite(d) or d < 0 for d in self.deltas):
            raise ValueError(f"deltas must be finite and >= 0, got {self.deltas}")
        if self.continuation < 1:
            raise ValueError(f"continuation must be >= 1, got {self.continuation}")
        if not 0 < self.recovery <= 1:
            raise ValueError(f"recovery must be in (0, 1], got {self.recovery}")
        if self.min_prompts < 1:
            raise ValueError(f"min_prompts must be >= 1, got {self.min_prompts}")


def schemes(cfg: Config) -> list[dict[str, Any]]:
    """``shared`` (delta 0), each ``offset`` delta (ascending), then ``distinct``."""
    out = [{"scheme": "offset" if d else "shared", "delta": d} for d in sorted({0.0, *cfg.deltas})]
    return out + ([{"scheme": "distinct", "delta": None}] if cfg.distinct else [])


@torch.no_grad()
def _next_logits(model: Any, ids: list[int]) -> torch.Tensor:
    return model(torch.tensor([ids], device=model.cfg.device), return_type="logits")[0, -1]


def _sequence(model: Any, prompt: list[int], cfg: Config, unit: Unit) -> tl.SequenceState:
    """prompt + the top-n next tokens (EOS excluded) as one set + the greedy continuation
    after the top-1 member, both under the plain model, at the unit's positions."""
    logits = _next_logits(model, prompt).clone()
    if (eos := eos_token_id(model)) is not None:
        logits[eos] = -math.inf
    n, delta = unit.condition["n"], unit.condition["delta"]
    top = torch.argsort(logits, descending=True, stable=True)[:n].tolist()
    cont: list[int] = []
    for _ in range(cfg.continuation):
        cont.append(int(torch.argmax(_next_logits(model, prompt + top[:1] + cont))))
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
        with tl.attach(model, state):
            _, cache = model.run_with_cache(
                state.tokens_tensor(model.cfg.device),
                names_filter=lambda name: name.endswith("hook_pattern"),
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


def _label(scheme: str, delta: float) -> str:
    return f"offset:{delta!r}" if scheme == "offset" else scheme


def _verdict(e: Any, up: str, down: str) -> str:
    return {"above": up, "below": down}.get(e.direction, e.direction)


def summarize(cfg: Config, tables: dict[str, pd.DataFrame], out: Path) -> str:
    """Trends of the set's total attention (layer mean) with n and with the scheme."""
    df, est = tables["attention"], {"min_n": cfg.min_prompts, "seed": cfg.seed}
    lm = df.groupby(["prompt_id", "n", "scheme", "delta"], dropna=False)["attention_set_total"]
    lm = lm.mean().reset_index()
    lm["label"] = [_label(s, d) for s, d in zip(lm["scheme"], lm["delta"], strict=True)]
    wide = lm.pivot_table(index=["prompt_id", "n"], columns="label", values="attention_set_total")
    n_min, n_max = int(df["n"].min()), int(df["n"].max())
    grid = [(s["scheme"], s["delta"] or 0.0) for s in schemes(cfg)]
    n_effect, scheme_effect, n1_diff, lines = [], [], 0.0, []
    for scheme, delta in grid:
        t = wide[_label(scheme, delta)].unstack("n")  # prompt x n
        rho = estimate([rank_correlation(t.columns, row)[0] for row in t.to_numpy()], **est)
        ratio = estimate((t[n_max] / t[n_min]).where(t[n_min] > 0), null=1.0, **est)
        n_effect.append(
            {
                "scheme": scheme,
                "delta": delta,
                "n_min": n_min,
                "n_max": n_max,
                "rho_mean": rho.mean,
                "rho_ci": list(rho.ci),
                "ratio_mean": ratio.mean,
                "ratio_ci": list(ratio.ci),
                "verdict": _verdict(
                    rho,
                    "set total attention increases with n",
                    "set total attention decreases with n",
                ),
            }
        )
        lines.append(
            f"{scheme:>8} delta={delta:<6g} set-total vs n: rho={fmt(rho.mean)} CI {fmt_ci(rho.ci)}; "
            f"T(n={n_max})/T(n={n_min})={fmt(ratio.mean)} CI {fmt_ci(ratio.ci)} -> {n_effect[-1]['verdict']}"
        )
    shared = wide["shared"]
    for scheme, delta in grid[1:]:
        diff = wide[_label(scheme, delta)] - shared
        if n_min == 1:
            n1_diff = max(n1_diff, float(diff.xs(1, level="n").abs().max()))
        for n in sorted(x for x in df["n"].unique() if x > 1):
            r = estimate((wide[_label(scheme, delta)] / shared).xs(n, level="n"), null=1.0, **est)
            gap = (wide["distinct"] - shared).xs(n, level="n") if cfg.distinct else None
            rec = estimate(
                [] if gap is None else (diff.xs(n, level="n") / gap).where(gap.abs() > 1e-9), **est
            )
            scheme_effect.append(
                {
                    "n": int(n),
                    "scheme": scheme,
                    "delta": delta,
                    "ratio_mean": r.mean,
                    "ratio_ci": list(r.ci),
                    "recovery_mean": rec.mean,
                    "recovery_ci": list(rec.ci),
                    "verdict": _verdict(
                        r, "more set attention than shared", "less set attention than shared"
                    ),
                }
            )
            if n == n_max:
                lines.append(
                    f"n={n} {scheme:>8} delta={delta:<6g} T/T(shared)={fmt(r.mean)} CI "
                    f"{fmt_ci(r.ci)} recovery={fmt(rec.mean)} -> {scheme_effect[-1]['verdict']}"
                )
    critical = _critical_delta(scheme_effect, n_max, cfg)
    layers = _layers_most_affected(df, n_min, n_max)
    summary = {
        "n_prompts": int(df["prompt_id"].nunique()),
        "n_layers": int(df["layer"].nunique()),
        "isolate": cfg.isolate,
        "n_effect": n_effect,
        "scheme_effect": scheme_effect,
        "critical_delta": critical,
        "layers_most_affected": layers,
        "n1_max_scheme_difference": n1_diff if n_min == 1 else None,
    }
    atomic_write_json(out / "summary.json", jsonable(summary))
    lines += [f"critical delta: {critical['text']}", f"layers most affected by n: {layers}"]
    return "\n".join(lines)


def _critical_delta(effect: list[dict[str, Any]], n: int, cfg: Config) -> dict[str, Any]:
    """Smallest offset whose mean recovery (toward distinct) reaches ``cfg.recovery``."""
    rows = [r for r in effect if r["n"] == n and r["scheme"] == "offset"]
    if not cfg.distinct or not rows:
        return {"delta": None, "text": "not computed (needs offsets, distinct control, n > 1)"}
    control = next(r for r in effect if r["n"] == n and r["scheme"] == "distinct")
    if not control["verdict"].endswith("than shared"):
        return {
            "delta": None,
            "text": f"no gap to recover: distinct vs shared at n={n} is "
            f"'{control['verdict']}' (ratio {fmt(control['ratio_mean'])})",
        }
    finite = [r for r in rows if math.isfinite(r["recovery_mean"])]
    hit = [r for r in finite if r["recovery_mean"] >= cfg.recovery]
    if not hit:
        best = max((r["recovery_mean"] for r in finite), default=math.nan)
        return {
            "delta": None,
            "text": f"no offset recovers {cfg.recovery:.0%} at n={n} (best {fmt(best)})",
        }
    r = min(hit, key=lambda r: r["delta"])
    return {
        "delta": r["delta"],
        "text": f"delta={r['delta']:g} recovers {fmt(r['recovery_mean'])} of the gap at n={n} "
        f"(CI {fmt_ci(r['recovery_ci'])})",
    }


def _layers_most_affected(
    df: pd.DataFrame, n_min: int, n_max: int, k: int = 3
) -> list[dict[str, Any]]:
    """Shared scheme: layers with the largest |log T(n_max)/T(n_min)| (mean over prompts)."""
    if n_min == n_max:
        return []
    s = df[df["scheme"] == "shared"].pivot_table(
        index=["prompt_id", "layer"], columns="n", values="attention_set_total"
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        lr = np.log(s[n_max] / s[n_min]).groupby(level="layer").mean()
    lr = lr[np.isfinite(lr)]
    top = lr.abs().sort_values(ascending=False).index[:k]
    return [{"layer": int(layer), "ratio": float(np.exp(lr[layer]))} for layer in top]


SPEC = ExperimentSpec(
    name="position_sharing",
    description=(__doc__ or "").splitlines()[0],
    config=Config,
    conditions=lambda cfg: [{"n": n, **s} for n in sorted(set(cfg.n_values)) for s in schemes(cfg)],
    run_unit=run_unit,
    summarize=summarize,
    default_prompts=PROMPTS[:4],
    quick={"n_values": (1, 2, 3), "deltas": (0.01, 1.0), "continuation": 2},
)
main = SPEC.main


if __name__ == "__main__":
    raise SystemExit(main())
