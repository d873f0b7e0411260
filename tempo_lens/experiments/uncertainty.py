"""RQ 2.2 / 2.3 / 10.1: does attention track uncertainty, and do similar alternatives read alike?

Per prompt TEMPO generates once (no pruning, so one teacher-forced forward reproduces the
generation's distributions; :func:`tempo_lens.analysis.uncertainty.step_uncertainty`).
Per step: the entropy of the next-token distribution the set was selected from, the set
width, and the attention entropy of the readout queries (the rows whose logits made that
distribution) per layer and head, normalised by ``log`` of the keys each query may see.
Per prompt, Spearman's rho over steps (:func:`tempo_lens.analysis.rank_correlation`) of

* next-token entropy vs normalised attention entropy (RQ 10.1, attention as uncertainty
  quantification; RQ 2.3),
* set width vs normalised attention entropy (RQ 2.3),

for every (layer, head), every layer (mean over its heads) and the whole model (mean over
layers and heads). Per parallel set, every sibling pair: the Jensen–Shannon divergence
(bits) of their attention over the context before the set and the cosine similarity of
their embeddings (``W_E``); per prompt, Spearman's rho of the two over its pairs (RQ 2.2,
"context clustering": similar alternatives attend to similar context <=> rho < 0). The top
context keys of every member are listed in ``top_keys.csv``.

Verdict rule (stated in ``docs/experiments.md`` before the first run): each rho is
averaged over prompts with a seeded bootstrap 95% CI; a relation is claimed when the CI
excludes 0 with at least ``--min-prompts`` prompts (per head: Wilcoxon against 0 and a
Benjamini–Hochberg adjustment over the heads, ``p_bh < 0.05`` and the CI away from 0).

Example::

    python -m tempo_lens.experiments.uncertainty --tiny --quick --output-dir /tmp/unc
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import false_discovery_control

import tempo_lens as tl
from tempo_lens.analysis import estimate, paired_tests, rank_correlation
from tempo_lens.analysis.uncertainty import step_uncertainty
from tempo_lens.display.experiment_figures import layer_head_heatmaps_figure
from tempo_lens.experiments._common import GenerationConfig, fmt_estimate
from tempo_lens.io import atomic_write_json, atomic_write_text
from tempo_lens.runner import ExperimentSpec, Unit, encode
from tempo_lens.runner.cli import run_cli

MEASURES = ("next_entropy", "width")


@dataclass(frozen=True, kw_only=True)
class Config(GenerationConfig):
    """Uncertainty settings (generation settings apply to the analysed trace).

    Attributes:
        top_k: Context keys listed per member of a parallel set (>= 1).
    """

    top_k: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")


def run_unit(cfg: Config, model: Any, unit: Unit) -> dict[str, list[dict[str, Any]]]:
    """One prompt: step rows, per-head rank correlations, sibling pairs, top keys."""
    trace = tl.generate(model, encode(model, unit.prompt), cfg.tempo_config(prune=None))
    if trace.state.n_steps == 0:  # EOS at once: no step to correlate (the prompt gives no rho)
        return {"steps": [], "correlations": [], "pairs": [], "top_keys": []}
    u = step_uncertainty(model, trace, top_k=cfg.top_k)
    ent = u.head_entropy_norm  # step layer head
    n_l, n_h = ent.shape[1], ent.shape[2]
    series: list[tuple[int, int, np.ndarray]] = [(-1, -1, np.nanmean(ent, axis=(1, 2)))]
    series += [(la, -1, np.nanmean(ent[:, la], axis=1)) for la in range(n_l)]
    series += [(la, h, ent[:, la, h]) for la in range(n_l) for h in range(n_h)]
    corr = []
    for m in MEASURES:
        x = u.steps[m].to_numpy(float)
        for la, h, y in series:
            rho, p = rank_correlation(x, y)
            corr.append({"measure": m, "layer": la, "head": h, "rho": rho, "p": p})
    return {
        "steps": u.steps.to_dict("records"),
        "correlations": corr,
        "pairs": u.pairs.to_dict("records"),
        "top_keys": u.top_keys.to_dict("records"),
    }


def _per_head(cfg: Config, corr: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (m, la, h), g in corr.groupby(["measure", "layer", "head"], sort=True):
        rho = g["rho"].to_numpy(float)
        rho = rho[np.isfinite(rho)]
        e = estimate(rho, min_n=cfg.min_prompts, seed=cfg.seed)
        rows.append(
            {
                "measure": m,
                "layer": la,
                "head": h,
                "rho": e.mean,
                "ci_low": e.ci[0],
                "ci_high": e.ci[1],
                "n_prompts": e.n,
                "direction": e.direction,
                "wilcoxon_p": paired_tests(rho, np.zeros_like(rho)).wilcoxon_p,
            }
        )
    res = pd.DataFrame(rows)
    res["p_bh"] = np.nan
    for m in MEASURES:
        sel = ((res["measure"] == m) & (res["head"] >= 0)).to_numpy()
        sel = sel & np.isfinite(res["wilcoxon_p"].to_numpy(float))
        if sel.any():
            res.loc[sel, "p_bh"] = false_discovery_control(res.loc[sel, "wilcoxon_p"].to_numpy())
    away = (res["ci_low"] > 0) | (res["ci_high"] < 0)
    res["significant"] = (res["head"] >= 0) & (res["p_bh"] < 0.05) & away
    return res


def summarize(cfg: Config, tables: dict[str, pd.DataFrame], out: Path) -> str:
    """Correlations over prompts -> ``correlations_summary.csv``, a map, ``summary.json``."""
    corr = tables.get("correlations", pd.DataFrame(columns=["measure", "layer", "head", "rho"]))
    pairs = tables.get("pairs", pd.DataFrame(columns=["prompt_id", "jsd_bits", "cos_similarity"]))
    res = _per_head(cfg, corr) if len(corr) else pd.DataFrame()
    atomic_write_text(out / "correlations_summary.csv", res.to_csv(index=False))
    sib_rows = []
    for pid, g in pairs.groupby("prompt_id", sort=True):
        rho, _ = rank_correlation(g["cos_similarity"], g["jsd_bits"])
        sib_rows.append({"prompt_id": pid, "n_pairs": len(g), "rho": rho})
    sib = pd.DataFrame(sib_rows, columns=["prompt_id", "n_pairs", "rho"])
    atomic_write_text(out / "sibling_correlation.csv", sib.to_csv(index=False))
    sib_e = estimate(sib["rho"].to_numpy(float), min_n=cfg.min_prompts, seed=cfg.seed)
    pooled = rank_correlation(pairs["cos_similarity"], pairs["jsd_bits"]) if len(pairs) else None
    lines, summary = [], {"sibling_rho": asdict(sib_e), "pooled_sibling_rho": pooled}
    for m in MEASURES:
        if res.empty:
            break
        r = res[res["measure"] == m]
        e = estimate(
            corr[(corr["measure"] == m) & (corr["layer"] == -1)]["rho"].to_numpy(float),
            min_n=cfg.min_prompts,
            seed=cfg.seed,
        )
        layers = r[(r["layer"] >= 0) & (r["head"] == -1)]
        sig_layers = layers[layers["direction"].isin(["above", "below"])]
        heads = r[r["head"] >= 0]
        summary[m] = {
            "model_rho": asdict(e),
            "layers_with_ci_away_from_0": sig_layers["layer"].astype(int).tolist(),
            "significant_heads": int(heads["significant"].sum()),
            "n_heads": len(heads),
        }
        lines.append(f"rho({m}, attention entropy), whole model: {fmt_estimate(e)}")
        lines.append(
            f"  layers with CI away from 0: {len(sig_layers)}/{len(layers)} "
            f"{sig_layers['layer'].astype(int).tolist()}; "
            f"heads significant after BH: {int(heads['significant'].sum())}/{len(heads)}"
        )
        top = heads.reindex(heads["rho"].abs().sort_values(ascending=False).index).head(3)
        lines.append(
            "  strongest heads: "
            + ", ".join(
                f"L{int(t.layer)}H{int(t.head)} {t.rho:+.2f} [{t.ci_low:+.2f}, {t.ci_high:+.2f}]"
                for t in top.itertuples()
            )
        )
    if not res.empty:
        layer_head_heatmaps_figure(
            res[res["head"] >= 0], ["rho"], out / "uncertainty.png", facet="measure"
        )
    lines.append(
        f"rho(embedding cosine, sibling attention JSD) per prompt: {fmt_estimate(sib_e)}"
        f" over {int(sib['n_pairs'].sum())} pairs"
        + (f"; pooled rho {pooled[0]:.3g} (p={pooled[1]:.2g})" if pooled else "")
    )
    lines.append(
        "similar alternatives attend to similar context: "
        + sib_e.verdict("refuted (CI above 0)", "supported (CI below 0)")
    )
    atomic_write_json(out / "summary.json", summary)
    return "\n".join(lines)


SPEC = ExperimentSpec(
    name="uncertainty",
    config=Config,
    run_unit=run_unit,
    summarize=summarize,
    quick={"max_steps": 6},
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run from the command line (:func:`tempo_lens.runner.run_cli`); 0 on success."""
    return run_cli(SPEC, argv)


if __name__ == "__main__":
    raise SystemExit(main())
