"""RQ 7.1 / 7.3 / 8.1: TEMPO's superposition vs a token tree's ancestor-only view, same hooks.

Per prompt (one unit, no conditions):

1. TEMPO generates (:func:`tempo_lens.generate`, isolated, no pruning);
2. the **same tokens re-laid as a tree** (:func:`tree_relayout`): every member of set ``s``
   gets as parent the clean (first, most probable) member of set ``s - 1``, the last prompt
   token for ``s = 0``. Tokens, widths and logical positions are the trace's; only the
   cross-set visibility differs (``masks.py`` rule 5: ancestors only, instead of every
   member of every earlier set). Both layouts run as one forward under
   :func:`~tempo_lens.attach` (:func:`layout_forward`: every layer's and head's attention
   pattern and the logits; for the TEMPO layout this is the attention the generation
   captured, as :func:`~tempo_lens.analysis.replay.replay_attention` replays it);
3. :func:`~tempo_lens.greedy`, :func:`~tempo_lens.tree_speculative` and
   :func:`~tempo_lens.tree_beam_search` on the same prompt, forwards counted on the token
   embedding (:class:`~tempo_lens.analysis.budget.ForwardCounter`), wall time by
   ``time.perf_counter``.

Per-prompt measures (``per_prompt.csv``): ``context_share_diff`` (share of the generated
queries' attention on prompt tokens, sink excluded and rows renormalised, TEMPO − tree),
``sibling_received_diff`` (attention received by parallel-set members from later queries,
TEMPO − tree), ``kl_clean`` (KL(p_TEMPO ‖ p_tree), nats, at the clean path's tokens of steps
>= 1), ``spec_forward_ratio`` (tree speculative / greedy forwards) and per decoder forwards,
tokens, seconds. ``summarize`` applies the rules pre-registered in ``docs/experiments.md``
(``analysis.estimate`` + ``findings_rules.interval``) and writes ``summary.json`` and
``summary.md``.

Example::

    tempo-lens experiment tree_comparison --limit 48 --output-dir results/tree_comparison
    tempo-lens experiment tree_comparison --tiny --quick --output-dir /tmp/tc
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

import tempo_lens as tl
from tempo_lens.analysis import estimate
from tempo_lens.analysis.budget import ForwardCounter
from tempo_lens.backends import hook_name
from tempo_lens.experiments._common import PROMPTS, UnprunedConfig, fmt, fmt_ci
from tempo_lens.experiments.findings_rules import Verdict, interval
from tempo_lens.io import atomic_write_json, atomic_write_text, jsonable
from tempo_lens.runner import ExperimentSpec, Unit, encode
from tempo_lens.runner.cli import run_cli
from tempo_lens.state import SequenceState

DECODERS = ("greedy", "tree_spec", "tempo", "tree_beam")
"""The decoders timed per prompt, in column-prefix order."""

PRIMARY = ("context_share_diff", "sibling_received_diff", "kl_clean", "spec_forward_ratio")
"""The pre-registered primary measures, one verdict each."""

MARGINS = {"context_share_diff": 0.01, "sibling_received_diff": 0.005}
"""Half-widths of the 'no practical difference' intervals of the two-sided measures."""

KL_FLOOR = 0.01
"""nats: ``kl_clean``'s CI low at or above it -> alternatives propagate; CI high below -> not."""


@dataclass(frozen=True, kw_only=True)
class Config(UnprunedConfig):
    """Tree-comparison settings (the TEMPO settings; always isolated, never pruned).

    Attributes:
        num_beams: Beams of the tree beam search (``>= 1``).
    """

    UNPRUNED_BECAUSE: ClassVar[str] = "the tree relayout re-lays every generated token"

    num_beams: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {self.num_beams}")


def tree_relayout(state: SequenceState) -> SequenceState:
    """The TEMPO sequence's tokens as a tree under its clean path.

    Member ``j`` of set ``s`` gets as parent the first member of set ``s - 1`` (the last
    prompt token for ``s = 0``) and keeps its logical position; the isolation mode is kept.

    Raises:
        ValueError: a pruned token in ``state`` (the relayout needs the whole trace) or a
            state that already is a tree.
    """
    if state.is_tree or any(p is not None for p in state.pruned_at):
        raise ValueError("tree_relayout needs an unpruned TEMPO sequence (no tree tokens)")
    n = state.prompt_length
    tree = SequenceState(state.token_ids[:n], isolate=state.isolate, positions=state.scheme)
    parent = n - 1
    for members in state.set_indices:
        tree.append_set(
            [state.token_ids[i] for i in members],
            positions=[state.logical[i] for i in members],
            parents=[parent] * len(members),
        )
        parent = members[0]
    tree.set_logical_positions(state.logical)  # already equal; the prompt's by construction
    return tree


def layout_forward(model: Any, state: SequenceState) -> tuple[np.ndarray, torch.Tensor]:
    """One forward of ``state`` under :func:`~tempo_lens.attach`.

    Returns:
        The attention patterns ``[n_layers, n_heads, pos, pos]`` (float64) and the logits
        ``[pos, d_vocab]`` (float64).
    """
    pats: dict[str, torch.Tensor] = {}

    def keep(x: torch.Tensor, hook: Any) -> None:
        pats[str(hook.name)] = x[0].detach().double().cpu()

    names = [hook_name(layer, "pattern") for layer in range(model.cfg.n_layers)]
    with torch.no_grad(), tl.attach(model, state):
        logits = model.run_with_hooks(
            state.tokens_tensor(model.cfg.device),
            return_type="logits",
            fwd_hooks=[(n, keep) for n in names],
        )
    pattern = torch.stack([pats[n] for n in names]).numpy()
    return pattern, logits[0].detach().double().cpu()


def _renormalised(pattern: np.ndarray, queries: Sequence[int]) -> np.ndarray:
    """Rows of ``queries`` without the sink key (index 0), renormalised: ``[L, H, q, pos-1]``."""
    rows = pattern[:, :, list(queries), 1:]
    return rows / rows.sum(-1, keepdims=True)


def context_share(pattern: np.ndarray, prompt_length: int) -> float:
    """Mean over generated queries, layers and heads of the attention share on prompt tokens.

    The sink (physical index 0) is excluded and each row renormalised over the other keys.
    """
    queries = range(prompt_length, pattern.shape[-1])
    if not len(queries):
        return math.nan
    rows = _renormalised(pattern, queries)
    return float(rows[..., : prompt_length - 1].sum(-1).mean())


def sibling_received(pattern: np.ndarray, state: SequenceState) -> float:
    """Mean attention (sink-free renormalised rows) that parallel-set members receive.

    Over every member of a set of width > 1, every query of a later step, every layer and
    head; NaN without such a pair.
    """
    n = state.prompt_length
    rows = _renormalised(pattern, range(n, len(state)))  # query i -> rows[:, :, i - n]
    steps = np.asarray(state.steps[n:])
    total, count = 0.0, 0
    for s, members in enumerate(state.set_indices):
        later = np.nonzero(steps > s)[0]
        if len(members) < 2 or not len(later):
            continue
        vals = rows[:, :, later][..., [m - 1 for m in members]]
        total, count = total + float(vals.sum()), count + vals.size
    return total / count if count else math.nan


def kl_clean(logits_tempo: torch.Tensor, logits_tree: torch.Tensor, state: SequenceState) -> float:
    """Mean KL(p_TEMPO || p_tree), nats, of the next-token distributions at clean tokens.

    The clean (first) members of steps >= 1 (step 0 sees the same context in both
    layouts); NaN with one step.
    """
    clean = [members[0] for members in state.set_indices[1:]]
    if not clean:
        return math.nan
    lp = torch.log_softmax(logits_tempo[clean], -1)
    lq = torch.log_softmax(logits_tree[clean], -1)
    return float((lp.exp() * (lp - lq)).sum(-1).mean())


def compare_layouts(model: Any, state: SequenceState, tree: SequenceState) -> dict[str, float]:
    """The attention and KL measures of a TEMPO sequence and its relayout ``tree``.

    One forward each (:func:`layout_forward`); the ``*_diff`` columns are TEMPO − tree.
    """
    pat_tempo, log_tempo = layout_forward(model, state)
    pat_tree, log_tree = layout_forward(model, tree)
    n = state.prompt_length
    share = (context_share(pat_tempo, n), context_share(pat_tree, n))
    received = (sibling_received(pat_tempo, state), sibling_received(pat_tree, state))
    return {
        "context_share_tempo": share[0],
        "context_share_tree": share[1],
        "context_share_diff": share[0] - share[1],
        "sibling_received_tempo": received[0],
        "sibling_received_tree": received[1],
        "sibling_received_diff": received[0] - received[1],
        "kl_clean": kl_clean(log_tempo, log_tree, state),
    }


def _timed(model: Any, fn: Any) -> tuple[Any, int, float]:
    counter = ForwardCounter(model.embed)
    with counter.counting():
        t0 = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - t0
    return out, counter.forwards, seconds


def _efficiency(name: str, tokens: list[int], forwards: int, seconds: float) -> dict[str, Any]:
    n = len(tokens)
    return {
        f"{name}_tokens": n,
        f"{name}_forwards": forwards,
        f"{name}_seconds": seconds,
        f"{name}_forwards_per_token": forwards / n if n else math.nan,
        f"{name}_tokens_per_second": n / seconds if seconds > 0 else math.nan,
    }


def run_unit(cfg: Config, model: Any, unit: Unit) -> dict[str, list[dict[str, Any]]]:
    """One prompt: TEMPO, its tree relayout, greedy, tree speculative and tree beam search."""
    ids = encode(model, unit.prompt)
    steps = cfg.max_steps
    trace, f_tempo, s_tempo = _timed(
        model, lambda: tl.generate(model, ids, cfg.tempo_config(isolate=True))
    )
    state = trace.state
    greedy, f_greedy, s_greedy = _timed(model, lambda: tl.greedy(model, ids, max_steps=steps))
    spec, f_spec, s_spec = _timed(model, lambda: tl.tree_speculative(model, ids, max_steps=steps))
    beam, f_beam, s_beam = _timed(
        model, lambda: tl.tree_beam_search(model, ids, max_steps=steps, num_beams=cfg.num_beams)
    )
    widths = [len(m) for m in state.set_indices]
    row: dict[str, Any] = {
        "steps": len(widths),
        "parallel_steps": sum(w > 1 for w in widths),
        "mean_width": float(np.mean(widths)) if widths else math.nan,
        "generated": len(state) - state.prompt_length,
        **compare_layouts(model, state, tree_relayout(state)),
        "spec_forward_ratio": f_spec / f_greedy if f_greedy else math.nan,
        "spec_exact": spec.token_ids == greedy.clean_ids(),
        "spec_accepted_per_forward": spec.accepted_per_forward,
        **_efficiency("greedy", greedy.clean_ids(), f_greedy, s_greedy),
        **_efficiency("tree_spec", spec.token_ids, f_spec, s_spec),
        **_efficiency("tempo", trace.clean_ids(), f_tempo, s_tempo),
        **_efficiency("tree_beam", beam.token_ids, f_beam, s_beam),
        "tempo_all_tokens": len(state) - state.prompt_length,
        "stop_reason": trace.stop_reason,
        "clean_text": trace.clean_text(),
    }
    return {"per_prompt": [row]}


def two_sided(ci: Sequence[float], margin: float, n: int | None = None) -> Verdict:
    """Supported if the CI lies outside ``[-margin, margin]``; refuted if inside.

    Else inconclusive (``findings_rules.interval`` with the two outcomes swapped).
    """
    v = interval(ci, -margin, margin, n)
    return {"supported": "refuted", "refuted": "supported"}.get(v, v)  # type: ignore[return-value]


def kl_rule(ci: Sequence[float], n: int | None = None) -> Verdict:
    """Supported if the CI low is >= :data:`KL_FLOOR`; refuted if the CI high is below it."""
    return interval(ci, KL_FLOOR, math.inf, n)


def spec_rule(ci: Sequence[float], n: int | None = None) -> Verdict:
    """Supported if the CI high is < 1; refuted if the CI lies in [0.99, 1].

    A saving under 1% is negligible: "refuted" wins over "supported", as in
    ``findings_rules.direction``; else inconclusive.
    """
    v = interval(ci, 0.99, 1.0, n)
    if v == "insufficient" or not all(math.isfinite(x) for x in ci):
        return v
    if v == "supported":
        return "refuted"
    return "supported" if ci[1] < 1 else "inconclusive"


CLAIMS = {
    "context_share_diff": "visibility changes what the context receives",
    "sibling_received_diff": "visibility changes what the alternatives receive",
    "kl_clean": "alternatives propagate into later distributions",
    "spec_forward_ratio": "tree speculation saves forwards",
}


def verdict(measure: str, ci: Sequence[float], n: int) -> Verdict:
    """The pre-registered verdict of a primary measure (``docs/experiments.md``)."""
    if measure in MARGINS:
        return two_sided(ci, MARGINS[measure], n)
    return kl_rule(ci, n) if measure == "kl_clean" else spec_rule(ci, n)


def summary_of(cfg: Config, table: pd.DataFrame) -> dict[str, Any]:
    """Estimates, CIs and verdicts of the per-prompt table (``summary.json``'s content)."""
    primary = {}
    for m in PRIMARY:
        e = estimate(table[m].to_numpy(float), min_n=cfg.min_prompts, seed=cfg.seed)
        primary[m] = {
            "claim": CLAIMS[m],
            "mean": e.mean,
            "ci": list(e.ci),
            "n": e.n,
            "verdict": verdict(m, e.ci, e.n),
        }
    efficiency = {
        d: {
            k: float(table[f"{d}_{k}"].mean())
            for k in ("forwards_per_token", "tokens_per_second", "tokens", "forwards")
        }
        for d in DECODERS
    }
    return {
        "n_prompts": int(len(table)),
        "config": cfg.tempo_config(isolate=True).to_dict(),
        "num_beams": cfg.num_beams,
        "primary": primary,
        "efficiency": efficiency,
        "spec_exact": int(table["spec_exact"].astype(bool).sum()),
        "parallel_steps_mean": float(table["parallel_steps"].mean()),
        "mean_width": float(table["mean_width"].mean()),
    }


def summarize(cfg: Config, tables: dict[str, pd.DataFrame], out: Path) -> str:
    """The pre-registered verdicts -> ``summary.json`` and ``summary.md``; the report text."""
    summ = summary_of(cfg, tables["per_prompt"])
    atomic_write_json(out / "summary.json", jsonable(summ))
    lines = [
        f"# tree_comparison: {summ['n_prompts']} prompts",
        "",
        "| measure | mean | 95% CI | n | verdict | claim |",
        "|---|---|---|---|---|---|",
    ]
    for m, p in summ["primary"].items():
        lines.append(
            f"| `{m}` | {fmt(p['mean'])} | {fmt_ci(p['ci'])} | {p['n']} | {p['verdict']} "
            f"| {p['claim']} |"
        )
    lines += ["", "| decoder | forwards / token | tokens / s | tokens |", "|---|---|---|---|"]
    for d, e in summ["efficiency"].items():
        lines.append(
            f"| {d} | {fmt(e['forwards_per_token'])} | {fmt(e['tokens_per_second'])} "
            f"| {fmt(e['tokens'])} |"
        )
    lines += ["", f"tree speculative == greedy: {summ['spec_exact']} of {summ['n_prompts']}"]
    text = "\n".join(lines) + "\n"
    atomic_write_text(out / "summary.md", text)
    return text


SPEC = ExperimentSpec(
    name="tree_comparison",
    prompts_resource="suite.csv",  # n >= 48: the first 48 with --limit 48
    description=(__doc__ or "").splitlines()[0],
    config=Config,
    run_unit=run_unit,
    summarize=summarize,
    default_prompts=PROMPTS,
    quick={"max_steps": 4},
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run from the command line (:func:`tempo_lens.runner.run_cli`); 0 on success."""
    return run_cli(SPEC, argv)


if __name__ == "__main__":
    raise SystemExit(main())
