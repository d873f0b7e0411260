"""Figures of the findings experiment (matplotlib, Agg): data in, PNG files out.

Each function takes the experiment's tables (DataFrames as written by the runner), draws
one figure and saves it; confidence bands are bootstrap-t CIs over prompts from
:func:`tempo_lens.analysis.stats.estimate`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tempo_lens.analysis.stats import estimate

__all__ = [
    "entropy_by_depth",
    "head_role_map",
    "per_layer_ratio",
    "ratio_vs_set_size",
    "survival_curve",
]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _band(frame: pd.DataFrame, x: str, y: str, seed: int) -> pd.DataFrame:
    """Mean and bootstrap CI of ``y`` over prompts at each ``x``."""
    recs = []
    for xv, g in frame.groupby(x):
        e = estimate(g[y].to_numpy(float), seed=seed, min_n=1)
        if e.n:
            recs.append({x: xv, "mean": e.mean, "lo": e.ci[0], "hi": e.ci[1], "n": e.n})
    return pd.DataFrame(recs, columns=[x, "mean", "lo", "hi", "n"])


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def per_layer_ratio(layers: pd.DataFrame, path: Path, *, seed: int = 0) -> Path:
    """Distance-matched parallel:singleton ratio per layer (shared vs distinct positions)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.axhspan(0.4, 0.6, color="0.9", label="seed claim 0.4-0.6")
    ax.axhline(1.0, color="0.5", lw=0.8, ls="--")
    for col, label, colour in (
        ("matched_ratio", "shared positions (TEMPO)", "C0"),
        ("distinct_matched_ratio", "distinct-position replay", "C1"),
    ):
        b = _band(layers.dropna(subset=[col]), "relative_depth", col, seed)
        if b.empty:
            continue
        ax.plot(b["relative_depth"], b["mean"], color=colour, label=label)
        ax.fill_between(b["relative_depth"], b["lo"], b["hi"], color=colour, alpha=0.25)
    ax.set_xlabel("relative depth (layer + 0.5) / n_layers")
    ax.set_ylabel("parallel : generated singleton")
    ax.set_title("Attention received per token at matched distance, per layer (95% CI)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def ratio_vs_set_size(sizes: pd.DataFrame, path: Path, *, seed: int = 0) -> Path:
    """Member ``r_j`` relative to the generated-singleton mean, by set size n."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.axhspan(0.4, 0.6, color="0.9")
    ax.axhline(1.0, color="0.5", lw=0.8, ls="--")
    b = _band(sizes.dropna(subset=["relative"]), "set_size", "relative", seed)
    if not b.empty:
        ax.errorbar(
            b["set_size"],
            b["mean"],
            yerr=[b["mean"] - b["lo"], b["hi"] - b["mean"]],
            fmt="o-",
            capsize=3,
        )
        for _, r in b.iterrows():
            ax.annotate(f"n={int(r['n'])}", (r["set_size"], r["hi"]), fontsize=7, ha="center")
    ax.set_xlabel("set size n (members sharing a position)")
    ax.set_ylabel("member r_j / singleton mean")
    ax.set_title("Ratio vs set size (prompt means, 95% CI)")
    return _save(fig, path)


def entropy_by_depth(layers: pd.DataFrame, path: Path, *, cuts: Any, seed: int = 0) -> Path:
    """Normalised attention entropy per layer against relative depth, both modes."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for i, ((mode, tau), g) in enumerate(layers.groupby(["mode", "tau"])):
        b = _band(g, "relative_depth", "entropy", seed)
        ax.plot(b["relative_depth"], b["mean"], color=f"C{i}", label=f"{mode}, tau {tau:g}")
        ax.fill_between(b["relative_depth"], b["lo"], b["hi"], color=f"C{i}", alpha=0.2)
    for c in cuts:
        ax.axvline(c, color="0.4", lw=0.8, ls=":")
    ax.set_xlabel("relative depth (bands: seed's early / middle / late)")
    ax.set_ylabel("entropy / log(n visible)")
    ax.set_title("Attention entropy by relative depth (95% CI)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def head_role_map(heads: pd.DataFrame, path: Path) -> Path:
    """Mean local fraction (non-sink attention within 3 positions) per layer and head."""
    plt = _plt()
    grid = heads.pivot_table(index="layer", columns="head", values="local_fraction")
    fig, ax = plt.subplots(figsize=(5, 7))
    im = ax.imshow(grid.to_numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=1)
    for (li, hi), v in np.ndenumerate(grid.to_numpy()):
        role = "L" if v >= 0.5 else ("R" if v <= 0.2 else "B")
        ax.text(hi, li, role, ha="center", va="center", fontsize=6, color="w")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(grid.shape[1]))
    ax.set_title("Head roles: L local >= 0.5, B balanced, R long-range <= 0.2", fontsize=9)
    fig.colorbar(im, ax=ax, label="local fraction (mean over prompts)")
    return _save(fig, path)


def survival_curve(members: pd.DataFrame, path: Path) -> Path:
    """Share of members a relative pruning rule with ratio r would keep.

    Kept means attention >= r x the set's best; for continuation-supported vs other members.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    r = np.linspace(0, 1, 101)
    for sup, label, colour in ((True, "supported member", "C2"), (False, "other members", "C3")):
        rel = members.loc[members["supported"].astype(bool) == sup, "relative"].to_numpy(float)
        if len(rel):
            ax.plot(r, [(rel >= x).mean() for x in r], color=colour, label=f"{label} ({len(rel)})")
    ax.set_xlabel("relative pruning ratio r")
    ax.set_ylabel("fraction kept")
    ax.set_title("Survival under attention pruning (isolated, tau 0.1)")
    ax.legend(fontsize=8)
    return _save(fig, path)
