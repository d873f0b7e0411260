"""RQ 4.x / 5.1 / 7.x: TEMPO against greedy, beam search, sampling and prompt-lookup decoding.

For every prompt, in one process and one after another (so wall times are measured side
by side), the same model decodes ``max_steps`` tokens with:

* **TEMPO** for every combination of ``modes`` (isolated / visible siblings), ``taus``
  and ``prunes`` (retroactive pruning rules, ``none`` for off);
* **greedy** and **beam search** (``beams``; Hugging Face ``generate`` semantics, KV cache);
* **sampling**: ``n_samples`` seeded samples at temperature 1, plain and nucleus ``top_p``;
* **Hugging Face** ``generate`` on the same weights as a ``LlamaForCausalLM``: greedy, and
  prompt-lookup decoding (``prompt_lookup_num_tokens``; a speculative method that needs no
  draft model; its output must equal greedy's).

Measured per method (tables ``runs``, ``steps``): the alternatives considered at each step
(TEMPO's set, beam search's k best continuations, the samples' draws), their mean pairwise
cosine distance in the model's embedding matrix, distinct-n of the outputs (and pooled over
a method's outputs), the NLL of the primary text under the plain model, forwards, tokens
forwarded, peak KV-cache positions and bytes, wall time per generated token and per
explored alternative, the mean attention entropy of each step's queries. For TEMPO every
member of every multi-member set is replayed as its own plain sequence and continued
greedily for ``horizon`` tokens (tables ``members``, ``sets``): which member has the best
continuation NLL, whether the kept member / the readout's next token / pruning chose it,
and after how many tokens the members' continuations agree (convergence depth). Table
``coverage``: the share of beam search's final hypotheses whose first token off TEMPO's
clean path was in TEMPO's set at that step. The summary (``summary.json``,
``methods.csv``, ``report.txt``, ``trees.png``, ``compute.png``) gives means with bootstrap
CIs over prompts and paired tests (:mod:`tempo_lens.analysis.stats`).

Example::

    python -m tempo_lens.experiments.compare_decoders --output-dir results/compare
    python -m tempo_lens.experiments.compare_decoders --tiny --quick --output-dir /tmp/cmp
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

import tempo_lens.experiments._decoder_methods as dm
from tempo_lens.analysis.budget import kv_bytes_per_position
from tempo_lens.analysis.decoders import (
    convergence_depth,
    covered,
    pairwise_cosine_distance,
    pooled_distinct_n,
)
from tempo_lens.analysis.paths import continuation_nlls, member_paths, replay_sets
from tempo_lens.analysis.quality import distinct_n
from tempo_lens.backends.fast import enable_fast_path
from tempo_lens.config import Readout, TempoConfig
from tempo_lens.experiments._common import PROMPTS, StatsConfig
from tempo_lens.experiments._compare_summary import summarize
from tempo_lens.pruning import PruningConfig, parse_rule
from tempo_lens.runner import ExperimentSpec, Unit, encode, unit_seed
from tempo_lens.runner.cli import run_cli

MODES = ("isolated", "visible")


@dataclass(frozen=True, kw_only=True)
class Config(StatsConfig):
    """Decoder comparison settings (every method gets the same prompts and max_steps).

    Attributes:
        max_steps: Tokens (steps) each method generates at most.
        taus: TEMPO thresholds (comma-separated), each in (0, 1].
        modes: TEMPO sibling modes: isolated and/or visible.
        prunes: TEMPO pruning rules: none | relative:R | absolute:A (comma-separated).
        grid: TEMPO conditions: full (every mode x tau x prune) or axes (the first mode,
            tau and rule as the base condition, then each other value varied alone).
        readout: TEMPO next-step distribution after a set: last | top | mixture.
        max_parallel: Cap on TEMPO's members per set (0 = no cap).
        beams: Beam widths k (comma-separated).
        n_samples: Seeded samples per sampling variant.
        top_p: Nucleus of the second sampling variant (the first samples the full softmax).
        lookup_tokens: prompt_lookup_num_tokens of Hugging Face prompt-lookup decoding.
        horizon: Greedy tokens each replayed TEMPO member is continued for.
    """

    max_steps: int = 12
    taus: tuple[float, ...] = (0.05, 0.1, 0.2)
    modes: tuple[str, ...] = MODES
    prunes: tuple[str, ...] = ("none", "relative:0.5")
    grid: Literal["full", "axes"] = "full"
    readout: Readout = "mixture"
    max_parallel: int = 8
    beams: tuple[int, ...] = (2, 4, 8)
    n_samples: int = 4
    top_p: float = 0.9
    lookup_tokens: int = 10
    horizon: int = 6

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, lo in (("max_steps", 1), ("n_samples", 1), ("lookup_tokens", 1)):
            if getattr(self, name) < lo:
                raise ValueError(f"{name} must be >= {lo}, got {getattr(self, name)}")
        if self.horizon < 1 or self.max_parallel < 0:
            raise ValueError(
                f"need horizon >= 1, max_parallel >= 0; got {self.horizon}, {self.max_parallel}"
            )
        if self.grid not in ("full", "axes"):
            raise ValueError(f"grid must be 'full' or 'axes', got {self.grid!r}")
        if not self.taus or not self.modes or not self.prunes or not self.beams:
            raise ValueError("taus, modes, prunes and beams need at least one value each")
        bad = [m for m in self.modes if m not in MODES]
        if bad:
            raise ValueError(f"modes must be among {MODES}, got {bad}")
        if any(k < 1 for k in self.beams):
            raise ValueError(f"beam widths must be >= 1, got {self.beams}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        for tau, mode, prune in self.tempo_grid():
            self.tempo_config(tau, mode, prune)  # validates tau and the pruning rule

    def tempo_grid(self) -> list[tuple[float, str, str]]:
        """``(tau, mode, prune)`` of every TEMPO condition, in run order."""
        if self.grid == "full":
            return [(t, m, p) for m in self.modes for t in self.taus for p in self.prunes]
        t0, m0, p0 = self.taus[0], self.modes[0], self.prunes[0]
        return [
            (t0, m0, p0),
            *[(t0, m, p0) for m in self.modes[1:]],
            *[(t, m0, p0) for t in self.taus[1:]],
            *[(t0, m0, p) for p in self.prunes[1:]],
        ]

    def tempo_config(self, tau: float, mode: str, prune: str) -> TempoConfig:
        """The :class:`TempoConfig` of one TEMPO condition."""
        rule = parse_rule(prune)
        return TempoConfig(
            selection_threshold=tau,
            max_steps=self.max_steps,
            max_parallel=self.max_parallel or None,
            readout=self.readout,
            isolate=mode == "isolated",
            prune=None if rule is None else PruningConfig(rule=rule),
        )


_HF: dict[int, Any] = {}


def hf_model(cfg: Config, model: Any) -> Any:
    """The same weights as a Hugging Face Llama (cached per model object).

    The dequantized copy of the default model, or the tiny model's weights exported
    (:func:`tempo_lens.models.hf_export.hf_causal_lm`, either backend).
    """
    if id(model) not in _HF:
        if cfg.tiny:
            from tempo_lens.models.hf_export import hf_causal_lm

            _HF[id(model)] = hf_causal_lm(model)
        else:
            from tempo_lens.models.gguf_loader import load_hf_model

            _HF[id(model)] = load_hf_model(cfg.model)[0]
    return _HF[id(model)]


def run_methods(cfg: Config, model: Any, prompt: list[int], key: str) -> list[dm.MethodRun]:
    """Every method on one prompt, in a fixed order (see the module docs)."""
    enable_fast_path(model)  # the layout TEMPO uses, for every method alike
    eos = dm.model_eos(model)
    hf = hf_model(cfg, model)
    continuation_nlls(model, prompt, [[0]])  # warm-up forward, not timed
    runs = [dm.run_greedy(model, prompt, cfg.max_steps)]
    for tau, mode, prune in cfg.tempo_grid():
        params = {"mode": mode, "tau": tau, "prune": prune}
        runs.append(dm.run_tempo(model, prompt, cfg.tempo_config(tau, mode, prune), params))
    runs += [dm.run_beam(model, prompt, cfg.max_steps, k) for k in cfg.beams]
    seeds = [unit_seed(cfg.seed, f"{key}/sample/{i}") for i in range(cfg.n_samples)]
    for top_p in dict.fromkeys((1.0, cfg.top_p)):
        runs.append(
            dm.run_sampling(model, prompt, cfg.max_steps, n=cfg.n_samples, top_p=top_p, seeds=seeds)
        )
    for lookup in (0, cfg.lookup_tokens):
        runs.append(dm.run_hf(hf, prompt, cfg.max_steps, eos=eos, lookup_tokens=lookup))
    return runs


def _run_row(run: dm.MethodRun, nlls: list[list[float]], kv_bytes: int, w_e: Any) -> dict:
    primary = run.outputs[0]
    per_out = [float(np.mean(x)) if x else math.nan for x in nlls]
    n_alt = [len(a) for a in run.alternatives]
    cos = [pairwise_cosine_distance(w_e, a) for a in run.alternatives]
    explored = sum(n_alt)
    gen = sum(len(o) for o in run.outputs) if run.family == "sampling" else len(primary)
    b = run.budget
    row = {
        "method": run.name,
        "family": run.family,
        **{k: run.params.get(k) for k in ("mode", "tau", "prune", "k", "top_p")},
        "n_outputs": len(run.outputs),
        "generated": len(primary),
        "nll": per_out[0] if run.family != "sampling" else float(np.nanmean(per_out)),
        "distinct_1": distinct_n(primary, 1),
        "distinct_2": distinct_n(primary, 2),
        "pooled_distinct_2": pooled_distinct_n(run.outputs, 2) if len(run.outputs) > 1 else None,
        "alternatives_per_step": float(np.mean(n_alt)) if n_alt else math.nan,
        "distinct_alternatives_per_step": (
            float(np.mean([len(set(a)) for a in run.alternatives])) if n_alt else math.nan
        ),
        "cos_distance": float(np.nanmean(cos)) if any(np.isfinite(cos)) else math.nan,
        "forwards": run.counted[0] if b is None else b.forwards,
        "tokens_forwarded": run.counted[1] if b is None else b.tokens_forwarded,
        "counted_forwards": run.counted[0],
        "counted_tokens": run.counted[1],
        "budget_matches_count": None
        if b is None
        else (b.forwards, b.tokens_forwarded) == run.counted,
        "peak_kv_positions": run.peak_kv_positions,
        "peak_kv_bytes": run.peak_kv_positions * kv_bytes,
        "seconds": run.seconds,
        "seconds_per_token": run.seconds / gen if gen else math.nan,
        "seconds_per_alternative": run.seconds / explored if explored else math.nan,
        "explored": explored,
        "mean_width": float(np.mean(n_alt)) if run.family == "tempo" and n_alt else None,
        "parallel_steps": sum(n > 1 for n in n_alt) if run.family == "tempo" else None,
        "pruned": sum(p is not None for p in run.traces[0].state.pruned_at)
        if run.family == "tempo"
        else None,
        "output_ids": " ".join(map(str, primary)),
    }
    if run.traces:
        row["text"] = run.traces[0].bracket_text() if run.family == "tempo" else None
    return row


def _set_jobs(run: dm.MethodRun) -> list[tuple[list[int], list[int]]]:
    """``(prefix, members)`` of every multi-member set of a TEMPO run."""
    trace = run.traces[0]
    prompt, clean = trace.state.token_ids[: trace.prompt_length], trace.clean_ids()
    return [
        (prompt + clean[:s], [trace.state.token_ids[i] for i in rec.indices])
        for s, rec in enumerate(trace.steps)
        if len(rec.indices) > 1
    ]


def _tempo_sets(cfg: Config, model: Any, prompt: list[int], run: dm.MethodRun, cache: dict):
    """Replay rows (``members``, ``sets``) of one TEMPO run's multi-member sets."""
    trace = run.traces[0]
    clean, st = trace.clean_ids(), trace.state
    members_rows, set_rows = [], []
    for s, rec in enumerate(trace.steps):
        if len(rec.indices) < 2:
            continue
        toks = [st.token_ids[i] for i in rec.indices]
        paths = member_paths(model, prompt + clean[:s], toks, horizon=cfg.horizon, cache=cache)
        cont = [p.mean_continuation_nll for p in paths]
        kept_rank = rec.indices.index(trace.clean_indices()[s])
        pruned = [st.pruned_at[i] is not None for i in rec.indices]
        best = int(np.argmin(cont))
        nxt = clean[s + 1] if s + 1 < len(clean) else None
        followed = [r for r, p in enumerate(paths) if nxt is not None and p.continuation[0] == nxt]
        survivors = [c for c, p in zip(cont, pruned, strict=True) if not p]
        worse = [c > min(survivors) for c, p in zip(cont, pruned, strict=True) if p and survivors]
        for r, p in enumerate(paths):
            members_rows.append(
                {
                    "method": run.name, "step": s, "rank": r, "token_id": p.token_id,
                    "probability": rec.probabilities[r] if rec.probabilities else None,
                    "pruned": pruned[r], "kept": r == kept_rank, "member_nll": p.member_nll,
                    "continuation_nll": cont[r], "path_nll": p.path_nll,
                    "continuation": " ".join(map(str, p.continuation)),
                }
            )  # fmt: skip
        depth = convergence_depth([p.continuation for p in paths])
        set_rows.append(
            {
                "method": run.name, "step": s, "width": len(toks), "best_rank": best,
                "kept_rank": kept_rank, "kept_is_best": kept_rank == best,
                "top_is_best": best == 0, "chance": 1 / len(toks),
                "followed": " ".join(map(str, followed)),
                "readout_follows_best": (best in followed) if followed else None,
                "n_pruned": sum(pruned),
                "pruned_worse": float(np.mean(worse)) if worse else None,
                "converged": depth is not None, "convergence_depth": depth,
            }
        )  # fmt: skip
    return members_rows, set_rows


def run_unit(cfg: Config, model: Any, unit: Unit) -> dict[str, list[dict[str, Any]]]:
    """All methods on one prompt, then quality, replay, coverage and per-step rows."""
    prompt = encode(model, unit.prompt)
    runs = run_methods(cfg, model, prompt, unit.key)
    flat = [(i, o) for i, r in enumerate(runs) for o in r.outputs]
    nlls = continuation_nlls(model, prompt, [o for _, o in flat])
    by_run: dict[int, list[list[float]]] = {}
    for (i, _), x in zip(flat, nlls, strict=True):
        by_run.setdefault(i, []).append(x)
    kv_bytes, w_e = kv_bytes_per_position(model), model.W_E
    tables: dict[str, list[dict[str, Any]]] = {k: [] for k in ("runs", "steps", "members")}
    tables |= {"sets": [], "coverage": []}
    for i, run in enumerate(runs):
        n_out = len(run.outputs) if run.family in ("beam", "sampling") else 1
        tables["runs"].append(_run_row(run, by_run[i][:n_out], kv_bytes, w_e))
        for s, alts in enumerate(run.alternatives):
            ent = run.entropy[s] if s < len(run.entropy) else None
            tables["steps"].append(
                {
                    "method": run.name, "family": run.family, "step": s,
                    "alternatives": len(alts), "distinct": len(set(alts)),
                    "cos_distance": pairwise_cosine_distance(w_e, alts), "entropy": ent,
                }
            )  # fmt: skip
    cache: dict = {}
    replay_sets(model, [job for r in runs if r.family == "tempo" for job in _set_jobs(r)],
                horizon=cfg.horizon, cache=cache)  # fmt: skip
    beams = [r for r in runs if r.family == "beam"]
    for run in (r for r in runs if r.family == "tempo"):
        m_rows, s_rows = _tempo_sets(cfg, model, prompt, run, cache)
        tables["members"] += m_rows
        tables["sets"] += s_rows
        clean = run.outputs[0]
        for beam in beams:
            cov = [covered(h, clean, run.alternatives) for h in beam.outputs]
            hit = [c for c in cov if c is not None]
            tables["coverage"].append(
                {
                    "method": run.name, "beam": beam.name, "k": beam.params["k"],
                    "hypotheses": len(cov), "divergent": len(hit), "covered": sum(hit),
                    "coverage": float(np.mean(hit)) if hit else None,
                }
            )  # fmt: skip
    return tables


SPEC = ExperimentSpec(
    name="compare_decoders",
    config=Config,
    run_unit=run_unit,
    summarize=summarize,
    default_prompts=PROMPTS,
    quick={"max_steps": 4, "taus": (0.1,), "beams": (2, 4), "n_samples": 2, "horizon": 2},
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run from the command line (:func:`tempo_lens.runner.run_cli`); 0 on success."""
    return run_cli(SPEC, argv)


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["SPEC", "Config", "hf_model", "main", "run_methods", "run_unit"]
