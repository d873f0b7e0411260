"""RQ 3.1 / 3.2 / 3.3: does the attention a member receives point to the supported member?

Pre-registered in ``docs/preregistration.md`` (R2). Per prompt (one unit, no conditions):

1. TEMPO generates once (the experiment's generation settings; defaults τ = 0.1 constant,
   isolated, ``mixture`` readout, 16 steps, at most 8 members, no pruning);
2. one teacher-forced forward over the trace
   (:func:`~tempo_lens.analysis.replay.replay_attention`: the generation's attention, every
   layer and head);
3. every parallel set with ``2 * HELDOUT_WINDOW`` later steps gets the findings' claim-5
   outcome (:func:`~tempo_lens.analysis.replay.heldout_support`): per member ``m`` the
   plain model's ``log p(c_4..c_6 | prefix, m, c_1..c_3)`` (``c`` = the clean path after
   the set); the **supported member** is its argmax (ties to the lower rank);
4. each member's **vote** per layer band (``early``/``middle``/``late`` = the thirds of the
   layers, cuts ``n // 3`` and ``2n // 3``; ``all``) and window ``w``
   (:func:`~tempo_lens.analysis.replay.received_votes`): the attention it receives from
   the queries of the ``w`` steps after its set, mean over the band's layers, the heads and
   those queries.

Per prompt, band and window: the **within-set AUC** of the vote
(:func:`~tempo_lens.analysis.stats.within_group_auc`): over the prompt's sets, the fraction
of (supported, other member) pairs in which the supported member has the larger vote, ties
1/2, pooled over the prompt's pairs; and the same AUC of the selection probability (the
baseline). ``summarize`` applies the R2 rules with :func:`~tempo_lens.analysis.estimate`:

* 3.1: the ``all``/w = 1 AUC against 0.5 (95 % CI): above -> attention *predicts* the
  supported member, below -> *anti-predicts*; also AUC(vote) − AUC(probability);
* 3.2: each third's AUC against 0.5 at w = 1 and late − early (98.3 % CIs, 3 tests): the
  difference above 0 -> "late layers most predictive" *supported*, below -> *refuted*;
* 3.3: the ``all`` AUC at w = 3 and w = 5 minus w = 1 (97.5 % CIs, 2 tests): above 0 -> a
  longer window *helps*, below -> *hurts*.

Tables: ``members`` (member × band × window) and ``per_prompt`` (prompt × band × window);
``summary.json`` and the report.

Example::

    tempo-lens experiment pruning_signals --prompts-file tempo_lens/prompts/research_48.csv \
        --output-dir results/pruning_signals
    tempo-lens experiment pruning_signals --tiny --quick --output-dir /tmp/ps
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

import tempo_lens as tl
from tempo_lens.analysis.replay import heldout_support, received_votes, replay_attention
from tempo_lens.analysis.stats import Estimate, estimate, within_group_auc
from tempo_lens.experiments._common import UnprunedConfig, fmt_estimate
from tempo_lens.io import atomic_write_json, jsonable
from tempo_lens.pruning import resolve_layers
from tempo_lens.runner import ExperimentSpec, Unit, encode
from tempo_lens.runner.cli import run_cli
from tempo_lens.trace import Trace

BANDS = ("early", "middle", "late", "all")
"""Layer bands of the votes: the thirds (:func:`tempo_lens.pruning.resolve_layers`) and all."""

HELDOUT_WINDOW = 3
"""Claim 5's window: the outcome is ``log p(c_4..c_6 | prefix, m, c_1..c_3)`` (R2)."""

MEMBER_COLUMNS = [
    "set_step",
    "index",
    "rank",
    "set_size",
    "token_id",
    "text",
    "probability",
    "heldout_loglik",
    "supported",
    "band",
    "window",
    "vote",
]


@dataclass(frozen=True, kw_only=True)
class Config(UnprunedConfig):
    """Pruning-signal settings (the generation settings apply to the analysed trace).

    Attributes:
        windows: Look-ahead windows w (steps after a set whose queries vote), each in
            ``[1, 6]``: a set with an outcome has ``2 * HELDOUT_WINDOW = 6`` later steps.
            The rules of R2 read w = 1, 3 and 5.
    """

    windows: tuple[int, ...] = (1, 3, 5)

    def __post_init__(self) -> None:
        super().__post_init__()
        top = 2 * HELDOUT_WINDOW
        if not self.windows or len(set(self.windows)) != len(self.windows):
            raise ValueError(f"windows must be distinct and non-empty, got {self.windows}")
        if any(not 1 <= w <= top for w in self.windows):
            raise ValueError(f"windows must be in [1, {top}], got {self.windows}")


def band_layers(n_layers: int) -> dict[str, list[int]]:
    """``band -> layer ids`` of :data:`BANDS` for a model of ``n_layers`` layers.

    Raises:
        ValueError: a band is empty (``n_layers < 3``).
    """
    return {b: resolve_layers(b, n_layers) for b in BANDS}


def member_votes(cfg: Config, model: Any, trace: Trace) -> pd.DataFrame:
    """One row per member × band × window of every set with a held-out outcome.

    Columns :data:`MEMBER_COLUMNS`: ``index`` is the member's physical index, ``rank`` its
    place in the set (0 = most probable), ``probability`` its selection probability,
    ``heldout_loglik`` the claim-5 outcome (nats), ``supported`` the set's argmax of it,
    ``vote`` the attention received (a weight in ``[0, 1]``, see the module docstring).
    Empty (with these columns) when no set of width > 1 has ``2 * HELDOUT_WINDOW`` later
    steps (no teacher-forced forward runs then).

    Raises:
        ValueError: the trace has pruned tokens or the model fewer than 3 layers.
    """
    st = trace.state
    if any(p is not None for p in st.pruned_at):
        raise ValueError("member_votes needs a trace generated without pruning")
    bands = band_layers(model.cfg.n_layers)
    last = st.n_steps - 2 * HELDOUT_WINDOW  # sets before it have the outcome's steps
    if not any(len(st.set_indices[s]) > 1 for s in range(max(last, 0))):
        return pd.DataFrame(columns=MEMBER_COLUMNS)
    data = replay_attention(model, trace)
    held = heldout_support(model, trace, data, window=HELDOUT_WINDOW)
    held = held.dropna(subset=["heldout_loglik"])
    rows = []
    for s, g in held.groupby("set_step", sort=True):
        g = g.sort_values("rank")
        for band, layers in bands.items():
            for w in cfg.windows:
                votes = received_votes(data, int(s), w, layers)
                for m in g.itertuples():
                    i = int(m.index)
                    rows.append(
                        {
                            "set_step": int(s),
                            "index": i,
                            "rank": int(m.rank),
                            "set_size": int(m.set_size),
                            "token_id": st.token_ids[i],
                            "text": trace.texts[i],
                            "probability": float(m.probability),
                            "heldout_loglik": float(m.heldout_loglik),
                            "supported": bool(m.heldout_supported),
                            "band": band,
                            "window": w,
                            "vote": float(votes[int(m.rank)]),
                        }
                    )
    return pd.DataFrame(rows, columns=MEMBER_COLUMNS)


def prompt_aucs(cfg: Config, members: pd.DataFrame) -> list[dict[str, Any]]:
    """Per band × window: the prompt's within-set AUCs of the vote and of the probability.

    Returns:
        Rows ``band, window, n_sets, n_pairs, auc_vote, auc_probability`` (AUCs in
        ``[0, 1]``, NaN without a pair; ``n_pairs``: (supported, other member) pairs).
    """
    rows = []
    for band in BANDS:
        for w in cfg.windows:
            g = members[(members["band"] == band) & (members["window"] == w)]
            v, n_pairs = within_group_auc(g["vote"], g["supported"], g["set_step"])
            p, _ = within_group_auc(g["probability"], g["supported"], g["set_step"])
            rows.append(
                {
                    "band": band,
                    "window": w,
                    "n_sets": int(g["set_step"].nunique()),
                    "n_pairs": n_pairs,
                    "auc_vote": v,
                    "auc_probability": p,
                }
            )
    return rows


def run_unit(cfg: Config, model: Any, unit: Unit) -> dict[str, list[dict[str, Any]]]:
    """One prompt: generate, replay, score the members; the members and per-prompt rows."""
    trace = tl.generate(model, encode(model, unit.prompt), cfg.tempo_config())
    members = member_votes(cfg, model, trace)
    widths = [len(m) for m in trace.state.set_indices]
    prompt = {
        "steps": len(widths),
        "parallel_steps": sum(w > 1 for w in widths),
        "stop_reason": trace.stop_reason,
    }
    return {
        "members": members.to_dict(orient="records"),
        "per_prompt": [{**r, **prompt} for r in prompt_aucs(cfg, members)],
    }


# ------------------------------------------------------------------------------ summary
LEVEL_31 = 0.95
LEVEL_32 = 1 - 0.05 / 3  # three bands
LEVEL_33 = 1 - 0.05 / 2  # two longer windows


def _aucs(pp: pd.DataFrame, band: str, window: int) -> pd.Series:
    """``prompt_id -> auc_vote`` at one band and window (empty when not run)."""
    g = pp[(pp["band"] == band) & (pp["window"] == window)]
    return g.set_index("prompt_id")["auc_vote"].astype(float)


def _probability(pp: pd.DataFrame) -> pd.Series:
    """``prompt_id -> auc_probability`` (the same in every band × window row of a prompt)."""
    return pp.groupby("prompt_id", sort=False)["auc_probability"].first().astype(float)


def _row(
    name: str, question: str, e: Estimate | None, words: tuple[str, str] | None, missing: str = ""
) -> dict[str, Any]:
    """One verdict row; ``e`` None: not computable (``missing`` says why)."""
    if e is None:
        return {"id": name, "question": question, "verdict": f"not run ({missing})"}
    verdict = e.verdict(*words) if words else e.direction
    return {"id": name, "question": question, **asdict(e), "verdict": verdict}


def verdicts(cfg: Config, pp: pd.DataFrame) -> list[dict[str, Any]]:
    """The pre-registered R2 verdicts from the ``per_prompt`` table.

    Each row: ``id, question, mean, ci, n, null, direction, level, n_dropped, verdict``
    (:class:`~tempo_lens.analysis.stats.Estimate` fields); differences are paired by prompt
    (a prompt enters when both AUCs are finite). A row whose window is not among
    ``cfg.windows`` says "not run".
    """
    est = {"min_n": cfg.min_prompts, "seed": cfg.seed}
    have = set(cfg.windows)

    def auc_est(band: str, w: int, level: float) -> Estimate | None:
        return estimate(_aucs(pp, band, w), null=0.5, level=level, **est) if w in have else None

    def diff_est(a: pd.Series, b: pd.Series, level: float) -> Estimate:
        d = a - b.reindex(a.index)
        return estimate(d.to_numpy(float), null=0.0, level=level, **est)

    no1 = "w = 1 not in --windows"
    rows = [
        _row("3.1", "attention (all layers, w = 1) predicts the supported member",
             auc_est("all", 1, LEVEL_31), ("predicts", "anti-predicts"), no1),
        _row("3.1.vs_probability", "AUC(vote, all, w = 1) - AUC(selection probability)",
             diff_est(_aucs(pp, "all", 1), _probability(pp), LEVEL_31) if 1 in have else None,
             None, no1),
    ]  # fmt: skip
    for band in ("early", "middle", "late"):
        rows.append(
            _row(
                f"3.2.{band}",
                f"{band} layers' attention (w = 1) predicts the supported member",
                auc_est(band, 1, LEVEL_32),
                ("predicts", "anti-predicts"),
                no1,
            )
        )
    rows.append(
        _row(
            "3.2.late_minus_early",
            "late layers are more predictive than early ones (AUC late - early, w = 1)",
            diff_est(_aucs(pp, "late", 1), _aucs(pp, "early", 1), LEVEL_32) if 1 in have else None,
            ("supported", "refuted"),
            no1,
        )
    )
    for w in (3, 5):
        ok = {1, w} <= have
        rows.append(
            _row(
                f"3.3.w{w}",
                f"a window of {w} steps beats 1 (AUC all layers, w = {w} minus w = 1)",
                diff_est(_aucs(pp, "all", w), _aucs(pp, "all", 1), LEVEL_33) if ok else None,
                ("helps", "hurts"),
                f"w = 1 or {w} not in --windows",
            )
        )
    return rows


def auc_table(cfg: Config, pp: pd.DataFrame) -> list[dict[str, Any]]:
    """Descriptive: mean AUC per band × window and of the probability, 95 % CI vs 0.5."""

    def est(values: pd.Series) -> dict[str, Any]:
        return asdict(estimate(values, null=0.5, min_n=cfg.min_prompts, seed=cfg.seed))

    rows = [
        {"band": band, "window": w, **est(_aucs(pp, band, w))}
        for band in BANDS
        for w in cfg.windows
    ]
    rows.append({"band": "probability", "window": None, **est(_probability(pp))})
    return rows


def summarize(cfg: Config, tables: dict[str, pd.DataFrame], out: Path) -> str:
    """The R2 verdicts -> ``summary.json``; the report text (``report.txt``)."""
    pp = tables.get("per_prompt", pd.DataFrame(columns=["prompt_id", "band", "window", "auc_vote"]))
    pp = pp.assign(auc_vote=pp["auc_vote"].astype(float))
    if "auc_probability" not in pp:
        pp = pp.assign(auc_probability=math.nan)
    first = pp.drop_duplicates("prompt_id")
    one = pp[(pp["band"] == "all") & (pp["window"] == cfg.windows[0])]  # a row per prompt
    counts = {
        "n_prompts": int(pp["prompt_id"].nunique()),
        "n_prompts_with_sets": int((first.get("n_sets", pd.Series(dtype=int)) > 0).sum()),
        "n_sets": int(one.get("n_sets", pd.Series(dtype=int)).sum()),
        "n_pairs": int(one.get("n_pairs", pd.Series(dtype=int)).sum()),
    }
    rows, table = verdicts(cfg, pp), auc_table(cfg, pp)
    atomic_write_json(
        out / "summary.json",
        jsonable({**counts, "windows": list(cfg.windows), "verdicts": rows, "aucs": table}),
    )
    lines = [
        f"pruning_signals (R2, docs/preregistration.md): {counts['n_prompts']} prompts, "
        f"{counts['n_prompts_with_sets']} with a scored set; {counts['n_sets']} sets, "
        f"{counts['n_pairs']} (supported, other) pairs",
        "",
    ]
    for r in rows:
        if "mean" not in r:
            lines.append(f"{r['id']}: {r['question']}: {r['verdict']}")
            continue
        e = Estimate(**{k: r[k] for k in Estimate.__dataclass_fields__})
        lines.append(
            f"{r['id']}: {r['question']}: {fmt_estimate(e)} at {100 * e.level:.1f}% "
            f"vs {e.null:g} -> {r['verdict']}"
        )
    lines += ["", "AUC per band x window (descriptive, 95% CI vs 0.5):"]
    for t in table:
        e = Estimate(**{k: t[k] for k in Estimate.__dataclass_fields__})
        w = "" if t["window"] is None else f" w={t['window']}"
        lines.append(f"  {t['band']}{w}: {fmt_estimate(e)}")
    return "\n".join(lines)


SPEC = ExperimentSpec(
    name="pruning_signals",
    config=Config,
    run_unit=run_unit,
    summarize=summarize,
    prompts_resource="research_48.csv",  # the pre-registered sample (R2)
    tiny_model={"n_layers": 3},  # three layers: every third is non-empty
    quick={"max_steps": 8},
    check_model=lambda cfg, model: band_layers(model.cfg.n_layers),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run from the command line (:func:`tempo_lens.runner.run_cli`); 0 on success."""
    return run_cli(SPEC, argv)


if __name__ == "__main__":
    raise SystemExit(main())
