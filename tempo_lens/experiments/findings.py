"""Findings: every claim of the research notes re-measured over a prompt suite, with controls.

One unit = one prompt generated with TEMPO under one condition (isolation mode x tau), with
every layer's and head's attention captured. Per unit it measures everything a claim of
``docs/findings.md`` uses (the decision rules there were fixed before the numbers):

* received attention per token and per set, sink excluded / included, against all
  non-parallel tokens and against the generated singletons, and at matched query-key
  distance (:func:`tempo_lens.analysis.controls.distance_matched`), per layer and head;
* the same after replaying the tokens with every member at its own position (the
  distinct-position control) and with the other isolation mode (tokens held fixed);
* normalised attention entropy per layer (relative-depth bands) and per head (nats);
* head roles (local / balanced / long-range, sink removed);
* per member of a parallel set: plain-model continuation support, the pruner's attention
  score and the selection probability (claim 5);
* the exact checks: positions recovered at ``hook_k``/``hook_rot_k``, sibling isolation,
  widths recomputed from the final residual stream.

``summarize`` applies the pre-registered rules (:mod:`.findings_claims`) and writes
``claims.csv``, ``per_prompt.csv`` (by the runner), the figures and ``findings.md``.

Example::

    tempo-lens findings --output-dir results/findings     # the 96-prompt suite (suite.csv)
    python -m tempo_lens.experiments.findings --tiny --quick --output-dir /tmp/findings
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from tempo_lens.analysis import (
    head_specialisation,
    isolation_check,
    received_attention,
    repetition_score,
)
from tempo_lens.analysis._util import nanmean, safe_ratio
from tempo_lens.analysis.controls import (
    depth_bands,
    distance_matched,
    normalised_entropy,
    recovered_positions,
    relative_depth,
    size_trend,
)
from tempo_lens.analysis.patterns import attention_entropy
from tempo_lens.analysis.replay import (
    heldout_support,
    recomputed_widths,
    replay_attention,
)
from tempo_lens.analysis.stats import rank_correlation
from tempo_lens.backends import backend_of, hook_name
from tempo_lens.config import Readout, TempoConfig
from tempo_lens.experiments._common import generate_units
from tempo_lens.runner import ExperimentSpec, RunConfig, Unit
from tempo_lens.runner.cli import run_cli

MODES = ("isolated", "visible")
POSITION_TOLERANCE = 1e-3
LOCAL_WINDOW = 3


@dataclass(frozen=True, kw_only=True)
class Config(RunConfig):
    """Findings settings (pre-registered in docs/findings.md).

    Attributes:
        taus: Thresholds tau; each runs in both isolation modes.
        max_steps: Steps per generation (>= 4).
        max_parallel: Cap on members per set (0 = no cap).
        readouts: Next-step distributions after a set (last | top | mixture), each an arm
            of its own; the first is the primary arm (its controls are computed). Issue 23
            added ``last``, the research notes' setting, next to ``mixture``.
        window: Steps after a set used for continuation support and its attention score;
            the held-out outcome of claim 5 uses the ``window`` steps after those.
        degenerate: 3-gram repetition score above which a generation counts as degenerate.
    """

    taus: tuple[float, ...] = (0.1, 0.15)
    max_steps: int = 16
    max_parallel: int = 8
    readouts: tuple[Readout, ...] = ("mixture", "last")
    window: int = 3
    degenerate: float = 0.5

    def __post_init__(self) -> None:
        if not self.taus or len(set(self.taus)) != len(self.taus):
            raise ValueError(f"taus must be distinct and non-empty, got {self.taus}")
        if not self.readouts or len(set(self.readouts)) != len(self.readouts):
            raise ValueError(f"readouts must be distinct and non-empty, got {self.readouts}")
        if self.max_steps < 4:
            raise ValueError(f"max_steps must be >= 4, got {self.max_steps}")
        if self.window < 1 or self.window >= self.max_steps:
            raise ValueError(f"window must be in [1, max_steps), got {self.window}")
        if not 0 <= self.degenerate <= 1:
            raise ValueError(f"degenerate must be in [0, 1], got {self.degenerate}")
        for tau in self.taus:
            for readout in self.readouts:
                self.tempo_config(tau, True, readout)  # validates tau, steps, cap, readout

    def tempo_config(
        self, tau: float, isolate: bool, readout: Readout | None = None
    ) -> TempoConfig:
        """The generation settings of one condition (``readout`` None: the primary arm's)."""
        return TempoConfig(
            selection_threshold=tau,
            max_steps=self.max_steps,
            max_parallel=self.max_parallel or None,
            readout=readout or self.readouts[0],
            isolate=isolate,
        )


def conditions(cfg: Config) -> list[dict[str, Any]]:
    """Conditions: tau x readout x isolation mode (tau-major, then readout: the primary arm first).

    A sweep runs condition by condition in this order, so a run stopped early has the
    first tau's arms complete before the second tau's.
    """
    return [
        {"mode": m, "tau": float(t), "readout": r}
        for t in cfg.taus
        for r in cfg.readouts
        for m in MODES
    ]


def unit_readout(cfg: Config, condition: Mapping[str, Any]) -> Readout:
    """A unit's readout (units written before issue 23 have none: the primary arm's)."""
    return condition.get("readout", cfg.readouts[0])  # type: ignore[no-any-return]


def _positions_check(model: Any, data: Any) -> dict[str, Any]:
    """Logical positions recovered from layer 0's rotation (KV head 0).

    The angle between the key RoPE rotates (``hook_k`` through the layer's key norm, if
    any: :meth:`~tempo_lens.backends.base.Backend.pre_rotation_keys`) and ``hook_rot_k``.
    """
    st = data.state
    backend = backend_of(model)
    names = (hook_name(0, "k"), hook_name(0, "rot_k"))
    k_raw = np.concatenate([data.extra(s)[names[0]] for s in data.steps])
    with torch.no_grad():
        k = backend.pre_rotation_keys(0, torch.from_numpy(k_raw)[None])[0].double().numpy()
    rot = np.concatenate([data.extra(s)[names[1]] for s in data.steps])
    inv = backend.rotary_inv_freqs()[0].numpy()
    pos = recovered_positions(k[:, 0], rot[:, 0], inv, adjacent_pairs=backend.rotary_layout()[1])
    logical = np.asarray(st.logical)
    err = float(np.nanmax(np.abs(pos - logical))) if len(pos) else math.nan
    sib = max(
        (float(np.ptp(pos[m])) for m in st.set_indices if len(m) > 1),
        default=0.0,
    )
    ok = bool(np.isfinite(pos).all() and err <= POSITION_TOLERANCE and sib <= POSITION_TOLERANCE)
    return {"position_max_error": err, "position_sibling_spread": sib, "positions_ok": ok}


def role_fractions(local: np.ndarray) -> dict[str, float]:
    """Per-prompt fraction of heads per role, among the heads with generated queries.

    ``local`` is each head's local fraction (NaN for a head without generated queries:
    :func:`~tempo_lens.analysis.head_specialisation`). Local: >= 0.5; long-range: <= 0.2;
    balanced: in between. The three fractions sum to 1, or are all NaN when no head had a
    generated query (such a prompt does not enter claim 4: issue 23).

    Examples:
        >>> role_fractions(np.array([0.6, 0.1, np.nan, 0.3, 0.7]))
        {'role_local': 0.5, 'role_long_range': 0.25, 'role_balanced': 0.25}
        >>> role_fractions(np.array([np.nan, np.nan]))["role_local"]
        nan
    """
    x = np.asarray(local, dtype=np.float64)
    x = x[np.isfinite(x)]
    if not len(x):
        return {"role_local": math.nan, "role_long_range": math.nan, "role_balanced": math.nan}
    return {
        "role_local": float(np.mean(x >= 0.5)),
        "role_long_range": float(np.mean(x <= 0.2)),
        "role_balanced": float(np.mean((x > 0.2) & (x < 0.5))),
    }


def _band_means(values: np.ndarray, n_layers: int) -> dict[str, float]:
    bands = depth_bands(n_layers)
    return {b: float(np.nanmean(values[bands == b])) for b in ("early", "middle", "late")}


def _generate(cfg: Config, model: Any, units: list[Unit]) -> list[tuple[Any, Any, int]]:
    """``(trace, attention data, rows)`` per unit, generated with full capture.

    The units of one condition share one :func:`tempo_lens.generate_batch` (``rows``
    sequences per forward; :func:`~tempo_lens.experiments._common.generate_units`); each
    row equals its own ``generate`` (same tokens, indices and decisions; floats ~1e-7).
    """
    runs = generate_units(
        model,
        units,
        lambda u: cfg.tempo_config(
            float(u.condition["tau"]),
            u.condition["mode"] == "isolated",
            unit_readout(cfg, u.condition),
        ),
        capture=True,
        hook_names=[
            hook_name(0, "k"),
            hook_name(0, "rot_k"),
            backend_of(model).final_residual_hook,
        ],
    )
    rows = [sum(v.condition == u.condition for v in units) for u in units]
    return [(t, d, n) for (t, d), n in zip(runs, rows, strict=True)]


def run_batch(cfg: Config, model: Any, units: list[Unit]) -> list[dict[str, list[dict[str, Any]]]]:
    """Several units: generations batched per condition (:func:`_generate`), then measured."""
    gens = _generate(cfg, model, units)
    return [_measure(cfg, model, u, *g) for u, g in zip(units, gens, strict=True)]


def run_unit(cfg: Config, model: Any, unit: Unit) -> dict[str, list[dict[str, Any]]]:
    """Generate one prompt under one condition with full capture; measure every claim."""
    return run_batch(cfg, model, [unit])[0]


def _measure(
    cfg: Config, model: Any, unit: Unit, trace: Any, data: Any, rows: int
) -> dict[str, list[dict[str, Any]]]:
    iso = unit.condition["mode"] == "isolated"
    tau = float(unit.condition["tau"])
    n_layers = model.cfg.n_layers
    rec = received_attention(data)
    rec_sink = received_attention(data, include_sink=True)
    matched = distance_matched(data)
    # The controls of the primary condition (isolated, first tau, first readout): replays,
    # continuation support, the greedy text for the judge.
    primary = (
        iso and tau == float(cfg.taus[0]) and unit_readout(cfg, unit.condition) == cfg.readouts[0]
    )
    nan_layers = np.full(len(data.layers), np.nan)
    m_distinct = distinct_gen = other_ratio = math.nan
    distinct_layers = nan_layers
    members = pd.DataFrame()
    greedy_text = None
    if primary:
        distinct = replay_attention(model, trace, scheme="distinct")
        md = distance_matched(distinct)
        m_distinct, distinct_layers = md.ratio, md.per_layer
        distinct_gen = received_attention(distinct).ratio_generated
        other_ratio = distance_matched(replay_attention(model, trace, isolate=not iso)).ratio
        members = heldout_support(model, trace, data, window=cfg.window)  # claim 5
        greedy_text = _greedy_text(model, unit, cfg.max_steps)
    ent_norm = normalised_entropy(data)
    ent_nats = attention_entropy(data).per_head
    roles = head_specialisation(data, window=LOCAL_WINDOW, exclude_sink=True)
    local = roles["local_fraction"].to_numpy(float)
    trend = size_trend(rec)
    rho, _ = rank_correlation(trend["set_size"], trend["relative"])
    resid = backend_of(model).final_residual_hook
    widths = recomputed_widths(model, trace, {s: data.extra(s)[resid] for s in data.steps})
    iso_check = isolation_check(data)
    clean = trace.clean_ids()
    summ = trace.summary()
    row: dict[str, Any] = {
        "steps": summ["total_steps"],
        "parallel_steps": summ["parallel_steps"],
        "mean_width": summ["average_parallel_width"],
        "max_width": summ["max_parallel_width"],
        "n_parallel": rec.n_parallel,
        "n_generated_singletons": rec.n_non_parallel_generated,
        "repetition": repetition_score(clean, 3),
        "distinct_2": 1.0 - repetition_score(clean, 2),  # distinct bigrams / bigrams
        "degenerate": bool(repetition_score(clean, 3) > cfg.degenerate),
        "ratio": rec.ratio,
        "ratio_sink": rec_sink.ratio,
        "ratio_generated": rec.ratio_generated,
        "set_ratio": rec.set_ratio,
        "matched_ratio": matched.ratio,
        "matched_distances": len(matched.distances),
        "primary": primary,
        "distinct_matched_ratio": m_distinct,
        "distinct_ratio_generated": distinct_gen,
        "other_mask_matched_ratio": other_ratio,
        "size_rho": rho,
        "n_sizes": int(trend["set_size"].nunique()),
        **{f"entropy_{b}": v for b, v in _band_means(ent_norm.mean(1), n_layers).items()},
        "head_entropy_min": float(np.nanmin(ent_nats)),
        "head_entropy_max": float(np.nanmax(ent_nats)),
        **role_fractions(local),
        "max_sibling_attention": iso_check.max_sibling_attention if iso_check.n_sets else None,
        "n_parallel_sets": iso_check.n_sets,
        **_positions_check(model, data),
        "width_steps": len(widths),
        "width_judged": int(widths["judged"].sum()),
        "width_matches": int((widths["judged"] & widths["match"]).sum()),
        "stop_reason": trace.stop_reason,
        "batch_rows": rows,
        "clean_text": trace.clean_text(),
        "greedy_text": greedy_text,
        "bracket_text": trace.bracket_text(),
    }
    depth = relative_depth(n_layers)
    layers = [
        {
            "layer": layer,
            "relative_depth": float(depth[i]),
            "matched_ratio": float(matched.per_layer[i]),
            "distinct_matched_ratio": float(distinct_layers[i]),
            "entropy": float(ent_norm[i].mean()),
        }
        for i, layer in enumerate(data.layers)
    ]
    head_ratio = _head_ratio(rec)
    heads = [
        {
            "layer": data.layers[li],
            "head": data.heads[hi],
            "ratio_generated": float(head_ratio[li, hi]),
            "local_fraction": float(local[li * len(data.heads) + hi]),
            "entropy_nats": float(ent_nats[li, hi]),
        }
        for li in range(len(data.layers))
        for hi in range(len(data.heads))
    ]
    sizes = trend.groupby("set_size")["relative"].mean().reset_index()
    return {
        "per_prompt": [row],
        "layers": layers,
        "heads": heads,
        "sizes": sizes.to_dict(orient="records"),
        "members": members.to_dict(orient="records"),
    }


def _greedy_text(model: Any, unit: Unit, max_steps: int) -> str:
    """The model's greedy continuation of the unit's prompt (``max_steps`` tokens), as text."""
    from tempo_lens.generation.baselines import greedy
    from tempo_lens.runner import encode

    return greedy(model, encode(model, unit.prompt), max_steps=max_steps).clean_text()


def _head_ratio(rec: Any) -> np.ndarray:
    """``[layer, head]`` parallel : generated-singleton mean received attention."""
    tok = rec.tokens
    r = rec.per_head_received
    par = (tok["group"] == "parallel").to_numpy() & (tok["n_receivers"] > 0).to_numpy()
    gen = (
        (tok["group"] == "non_parallel").to_numpy()
        & (tok["step"] >= 0).to_numpy()
        & (tok["n_receivers"] > 0).to_numpy()
    )
    if not par.any() or not gen.any():
        return np.full(r.shape[:2], np.nan)
    return safe_ratio(nanmean(r[:, :, par], axis=2), nanmean(r[:, :, gen], axis=2))


def summarize(cfg: Config, tables: dict[str, pd.DataFrame], out: Path) -> str:
    """Claims (pre-registered rules), figures and ``findings.md`` from the unit tables.

    A unit's ``degenerate`` flag is issue 23's rule
    (:func:`~tempo_lens.experiments.findings_judge.degenerate`): with ``OUT/judge.csv``
    (``tempo-lens findings-judge``) it includes the independent judge's incoherence test.
    """
    from tempo_lens.experiments.findings_claims import claims_table
    from tempo_lens.experiments.findings_judge import degenerate, read_judge
    from tempo_lens.experiments.findings_report import write_report

    judge = tables.get("judge")
    if judge is None:
        judge = read_judge(out)
    pp = tables["per_prompt"].copy()
    pp["degenerate"] = degenerate(pp, judge).to_numpy()  # issue 23's rule
    tables = {**tables, "per_prompt": pp}
    if judge is not None:
        tables["judge"] = judge
    claims = claims_table(cfg, tables)
    claims.to_csv(out / "claims.csv", index=False)
    return write_report(cfg, tables, claims, out)


SPEC = ExperimentSpec(
    name="findings",
    config=Config,
    run_unit=run_unit,
    summarize=summarize,
    conditions=conditions,
    run_batch=run_batch,
    batch_size=8,  # units of one condition per chunk: 8 sequences per generation forward
    prompts_resource="suite.csv",  # experiments/prompts/suite.csv
    tiny_prompts=("3 1 4 1 5", "9 2 6 5 3", "5 8 9 7 9", "3 2 3 8 4", "6 2 6 4 3", "3 8 3 2 7"),
    tiny_model={"n_layers": 3, "d_vocab": 32, "init_scale": 1.0},
    quick={"max_steps": 6, "window": 2},
    quick_prompts=3,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run from the command line (:func:`tempo_lens.runner.run_cli`); 0 on success."""
    return run_cli(SPEC, argv)


if __name__ == "__main__":
    raise SystemExit(main())
