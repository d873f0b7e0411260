"""RQ 1.1 / 1.2: does sharing one RoPE position change the attention a parallel set gets?

Controlled sequences, built by hand with :class:`tempo_lens.SequenceState` (no
generation): ``prompt + [the model's top-n next tokens as ONE parallel set] + k greedy
continuation tokens`` (the continuation is the plain model's greedy text after the top-1
member, fixed for every ``n`` and scheme, so only the set changes). Each sequence runs
under :func:`tempo_lens.attach` with ``run_with_cache``; per layer we measure how much
attention the continuation's queries pay to the set's members (mean over heads and
continuation queries). Schemes:

* ``shared`` — TEMPO: every member at the same logical position (``delta = 0``);
* ``offset`` — member ``i`` at ``L + i·delta`` (``PositionScheme(member_offset=delta)``);
* ``distinct`` — every token its own consecutive position (the control).

With ``n = 1`` all schemes give the same sequence (a built-in check, reported as
``n1_max_scheme_difference``).

Example::

    python experiments/position_sharing.py --output-dir results/position_sharing
    python experiments/position_sharing.py --tiny --n-values 1,2,3 --output-dir /tmp/ps
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats as sps

import tempo_lens as tl
from tempo_lens import experiment_cli
from tempo_lens.analysis._util import jsonable
from tempo_lens.analysis.stats import bootstrap_ci
from tempo_lens.experiment_cli import ExperimentSpec, fmt, fmt_ci
from tempo_lens.io import atomic_write_json, atomic_write_text
from tempo_lens.text import eos_token_id

DEFAULT_PROMPTS = (
    "The cat sat on the",
    "Once upon a time, there was a",
    "The capital of France is",
    "To make a cup of tea, first",
)
TINY_PROMPTS = ("3 14 15 9 26", "5 35 8 9 7 9", "2 7 18 28")
TINY_MODEL: dict[str, Any] = {}  # make_tiny_model() keywords for --tiny


@dataclass(frozen=True, kw_only=True)
class Config:
    """Position-sharing experiment settings.

    Attributes:
        prompts: Prompts (text; token ids like "3 14 15" for --tiny). Default: a few built-in prompts.
        n_values: Set sizes n (the model's top-n next tokens form the set), each >= 1.
        deltas: Member offsets delta >= 0 (member i at L + i*delta); 0 (shared) is always included.
        distinct: Also run the distinct-positions control.
        continuation: Greedy continuation tokens after the set (>= 1); they are the queries.
        isolate: Members of the set cannot attend to each other.
        recovery: Fraction of the shared-to-distinct gap an offset must close to count as recovered (0, 1].
        min_prompts: Fewest prompts before a trend or difference is claimed.
        seed: Bootstrap seed.
        tiny: Use the tiny random test model (prompts are token ids).
        model: Offline model name (ignored with --tiny).
        device: Torch device.
    """

    prompts: tuple[str, ...] = ()
    n_values: tuple[int, ...] = (1, 2, 3, 5, 8)
    deltas: tuple[float, ...] = (0.0, 0.001, 0.01, 0.1, 0.5, 1.0)
    distinct: bool = True
    continuation: int = 4
    isolate: bool = True
    recovery: float = 0.9
    min_prompts: int = 3
    seed: int = 0
    tiny: bool = False
    model: str = tl.DEFAULT_MODEL
    device: str = "cpu"

    def __post_init__(self) -> None:
        if any(not p.strip() for p in self.prompts):
            raise ValueError("prompts must not be empty")
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


@dataclass
class Results:
    """``attention``: one row per (prompt, n, scheme, delta, layer); ``summary``: trends."""

    attention: pd.DataFrame
    summary: dict[str, Any]

    def write(self, out_dir: str | Path) -> list[Path]:
        out = Path(out_dir)
        paths = [out / "attention.csv", out / "summary.json"]
        atomic_write_text(paths[0], self.attention.to_csv(index=False))
        atomic_write_json(paths[1], jsonable(self.summary))  # last: marks a complete run
        return paths

    def report(self) -> str:
        lines = []
        for r in self.summary["n_effect"]:
            lines.append(
                f"{r['scheme']:>8} delta={r['delta']:<6g} set-total vs n: rho={_f(r['rho_mean'])} "
                f"CI {_ci(r['rho_ci'])}; T(n={r['n_max']})/T(n={r['n_min']})="
                f"{_f(r['ratio_mean'])} CI {_ci(r['ratio_ci'])} -> {r['verdict']}"
            )
        n_max = max((r["n"] for r in self.summary["scheme_effect"]), default=None)
        for r in [r for r in self.summary["scheme_effect"] if r["n"] == n_max]:
            lines.append(
                f"n={r['n']} {r['scheme']:>8} delta={r['delta']:<6g} T/T(shared)="
                f"{_f(r['ratio_mean'])} CI {_ci(r['ratio_ci'])} recovery={_f(r['recovery_mean'])}"
                f" -> {r['verdict']}"
            )
        lines.append(f"critical delta: {self.summary['critical_delta']['text']}")
        lines.append(f"layers most affected by n: {self.summary['layers_most_affected']}")
        return "\n".join(lines)


# ---------------------------------------------------------------------- experiment
def _schemes(cfg: Config) -> list[tuple[str, float, tl.PositionScheme]]:
    deltas = sorted({0.0, *cfg.deltas})
    out = [
        ("shared" if d == 0 else "offset", d, tl.PositionScheme(member_offset=d)) for d in deltas
    ]
    if cfg.distinct:
        out.append(("distinct", float("nan"), tl.PositionScheme(kind="distinct")))
    return out


@torch.no_grad()
def _plain_logits(model: Any, ids: list[int]) -> torch.Tensor:
    return model(torch.tensor([ids], device=model.cfg.device), return_type="logits")[0, -1]


def _set_and_continuation(
    model: Any, prompt: list[int], cfg: Config
) -> tuple[list[int], list[int]]:
    """Top-max(n) next tokens of the prompt (EOS excluded) and the greedy continuation
    after the top-1 member, both under the plain model."""
    logits = _plain_logits(model, prompt).clone()
    eos = eos_token_id(model)
    if eos is not None:
        logits[eos] = -math.inf
    top = torch.argsort(logits, descending=True, stable=True)[: max(cfg.n_values)].tolist()
    cont: list[int] = []
    for _ in range(cfg.continuation):
        cont.append(int(torch.argmax(_plain_logits(model, prompt + top[:1] + cont))))
    return top, cont


def _measure(model: Any, state: tl.SequenceState) -> list[dict[str, float]]:
    """Per layer: attention of the continuation queries to the set (mean over heads)."""
    members = state.set_indices[0]
    queries = [i for s in state.set_indices[1:] for i in s]
    L = state.prompt_length
    with torch.no_grad(), tl.attach(model, state):
        _, cache = model.run_with_cache(
            state.tokens_tensor(model.cfg.device),
            names_filter=lambda name: name.endswith("hook_pattern"),
        )
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
                "attention_prompt": float(a[:, :L].sum(-1).mean()),
            }
        )
    return rows


def run(cfg: Config, model: Any = None) -> Results:
    """Build the sequences, measure attention, summarise (see the module docstring)."""
    model = model if model is not None else experiment_cli.load(SPEC, cfg)
    prompts = experiment_cli.resolve_prompts(SPEC, cfg, model)
    with tl.fast_weights(model):  # bit-identical forwards without per-forward weight copies
        rows = _rows(model, prompts, cfg)
    df = pd.DataFrame(rows)
    return Results(df, summarise(df, cfg))


def _rows(model: Any, prompts: list[tuple[str, list[int]]], cfg: Config) -> list[dict[str, Any]]:
    rows = []
    for p_id, (text, prompt) in enumerate(prompts):
        top, cont = _set_and_continuation(model, prompt, cfg)
        if len(prompt) + max(cfg.n_values) + len(cont) > model.cfg.n_ctx:
            raise ValueError(f"prompt {p_id} is too long for the model context")
        for n in sorted(set(cfg.n_values)):
            for scheme, delta, positions in _schemes(cfg):
                state = tl.SequenceState(prompt, isolate=cfg.isolate, positions=positions)
                state.append_set(top[:n])
                for t in cont:
                    state.append_set([t])
                for r in _measure(model, state):
                    rows.append(
                        {
                            "prompt_id": p_id,
                            "prompt": text,
                            "n": n,
                            "scheme": scheme,
                            "delta": delta,
                            **r,
                            "n_queries": len(cont),
                        }
                    )
    return rows


# ---------------------------------------------------------------------- statistics
def _estimate(values: Sequence[float], null: float, cfg: Config) -> tuple[float, list[float], str]:
    """Mean, bootstrap CI and a direction computed from them (None = too few values)."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    mean = float(x.mean()) if len(x) else float("nan")
    lo, hi = bootstrap_ci(x, seed=cfg.seed)
    if len(x) < cfg.min_prompts:
        return mean, [lo, hi], f"insufficient data ({len(x)} < {cfg.min_prompts} prompts)"
    if lo > null:
        return mean, [lo, hi], "above"
    if hi < null:
        return mean, [lo, hi], "below"
    return mean, [lo, hi], "no clear difference (CI includes the null)"


def summarise(df: pd.DataFrame, cfg: Config) -> dict[str, Any]:
    """Trends of the set's total attention (layer mean) with n and with the scheme."""
    key = ["prompt_id", "n", "scheme", "delta"]
    lm = df.groupby(key, dropna=False)["attention_set_total"].mean().reset_index()
    n_min, n_max = int(df["n"].min()), int(df["n"].max())
    n_effect = []
    for scheme, delta, _ in _schemes(cfg):
        g = lm[(lm["scheme"] == scheme) & ((lm["delta"] == delta) | (scheme == "distinct"))]
        rhos, ratios = [], []
        for _, gp in g.groupby("prompt_id"):
            gp = gp.sort_values("n")
            if len(gp) >= 2 and gp["attention_set_total"].nunique() > 1:
                rhos.append(float(sps.spearmanr(gp["n"], gp["attention_set_total"]).statistic))
            t = gp.set_index("n")["attention_set_total"]
            ratios.append(float(t[n_max] / t[n_min]) if t[n_min] > 0 else float("nan"))
        rho, rho_ci, rho_dir = _estimate(rhos, 0.0, cfg)
        ratio, ratio_ci, _ = _estimate(ratios, 1.0, cfg)
        verdict = {
            "above": "set total attention increases with n",
            "below": "set total attention decreases with n",
        }.get(rho_dir, rho_dir)
        n_effect.append(
            {
                "scheme": scheme,
                "delta": 0.0 if scheme == "distinct" else float(delta),
                "n_min": n_min,
                "n_max": n_max,
                "rho_mean": rho,
                "rho_ci": rho_ci,
                "ratio_mean": ratio,
                "ratio_ci": ratio_ci,
                "verdict": verdict,
            }
        )
    wide = lm.assign(
        col=[_label(s, d) for s, d in zip(lm["scheme"], lm["delta"], strict=True)]
    ).pivot_table(index=["prompt_id", "n"], columns="col", values="attention_set_total")
    shared = wide[_label("shared", 0.0)]
    scheme_effect, n1_diff = [], 0.0
    for scheme, delta, _ in _schemes(cfg)[1:]:
        col = wide[_label(scheme, delta)]
        if n_min == 1:
            n1_diff = max(n1_diff, float((col - shared).xs(1, level="n").abs().max()))
        for n in sorted(x for x in df["n"].unique() if x > 1):
            r = (col / shared).xs(n, level="n")
            rec = pd.Series(np.nan, index=r.index)
            if cfg.distinct:
                gap = (wide[_label("distinct", 0.0)] - shared).xs(n, level="n")
                ok = gap.abs() > 1e-9
                rec[ok] = ((col - shared).xs(n, level="n") / gap)[ok]
            mean, ci, direction = _estimate(r.tolist(), 1.0, cfg)
            rmean, rci, _ = _estimate(rec.tolist(), 0.0, cfg)
            verdict = {
                "above": "more set attention than shared",
                "below": "less set attention than shared",
            }.get(direction, direction)
            scheme_effect.append(
                {
                    "n": int(n),
                    "scheme": scheme,
                    "delta": 0.0 if scheme == "distinct" else float(delta),
                    "ratio_mean": mean,
                    "ratio_ci": ci,
                    "recovery_mean": rmean,
                    "recovery_ci": rci,
                    "verdict": verdict,
                }
            )
    return {
        "n_prompts": int(df["prompt_id"].nunique()),
        "n_layers": int(df["layer"].nunique()),
        "isolate": cfg.isolate,
        "n_effect": n_effect,
        "scheme_effect": scheme_effect,
        "critical_delta": _critical_delta(scheme_effect, n_max, cfg),
        "layers_most_affected": _layers_most_affected(df, n_min, n_max),
        "n1_max_scheme_difference": n1_diff if n_min == 1 else None,
    }


def _label(scheme: str, delta: float) -> str:
    return f"offset:{delta!r}" if scheme == "offset" else scheme


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
            f"'{control['verdict']}' (ratio {_f(control['ratio_mean'])})",
        }
    hit = [
        r for r in rows if math.isfinite(r["recovery_mean"]) and r["recovery_mean"] >= cfg.recovery
    ]
    if not hit:
        best = max(
            (r["recovery_mean"] for r in rows if math.isfinite(r["recovery_mean"])),
            default=float("nan"),
        )
        return {
            "delta": None,
            "text": f"no offset recovers {cfg.recovery:.0%} at n={n} (best {_f(best)})",
        }
    r = min(hit, key=lambda r: r["delta"])
    return {
        "delta": r["delta"],
        "text": f"delta={r['delta']:g} recovers {_f(r['recovery_mean'])} of the gap at n={n} "
        f"(CI {_ci(r['recovery_ci'])})",
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
    config=Config,
    prog=Path(__file__).name,
    description=(__doc__ or "").splitlines()[0],
    default_prompts=DEFAULT_PROMPTS,
    tiny_prompts=TINY_PROMPTS,
    tiny_model=TINY_MODEL,
)
_f, _ci = fmt, fmt_ci


def main(argv: Sequence[str] | None = None) -> int:
    """Run from the command line; 0 on success, 2 (one line on stderr) on bad values."""
    return experiment_cli.script_main(SPEC, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
