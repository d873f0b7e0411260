"""Figures of the decoder comparison (``compare_decoders``): tree shape and budget vs quality.

* :func:`branching_figure` — TEMPO's branching factor per step (mean set width over
  prompts, one line per condition) and the distribution of convergence depths (after a
  set, tokens until the members' greedy continuations agree; "none" = not within the
  horizon);
* :func:`budget_quality_figure` — each method's tokens forwarded against the NLL of its
  primary text, means with bootstrap CIs over prompts.

Examples:
    >>> fig = branching_figure({"tempo": [[2, 1], [1, 3]]}, {"tempo": [1, None]}, horizon=2)
    >>> len(fig.axes)
    2
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tempo_lens.display.figures import save_png

__all__ = ["branching_figure", "budget_quality_figure"]

FAMILY_COLOURS = {
    "tempo": "#1f77b4",
    "greedy": "#2ca02c",
    "beam": "#d62728",
    "sampling": "#9467bd",
    "hf_greedy": "#8c564b",
    "pld": "#ff7f0e",
}


def branching_figure(
    widths: Mapping[str, Sequence[Sequence[int]]],
    depths: Mapping[str, Sequence[int | None]],
    *,
    horizon: int,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """Branching factor per step and convergence-depth distributions.

    Args:
        widths: ``condition -> [per prompt: set width per step]`` (ragged: runs may stop early).
        depths: ``condition -> convergence depth of every multi-member set`` (None: the
            continuations did not agree within ``horizon`` tokens).
        horizon: Replay horizon (the last bucket is "none").
        path: Also save the PNG here.
    """
    fig = Figure(figsize=(11, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax_w, ax_d = fig.subplots(1, 2)
    cmap = matplotlib.colormaps["tab10"]
    names = list(widths)
    for c, name in enumerate(names):
        runs = widths[name]
        n = max((len(r) for r in runs), default=0)
        mean = [np.mean([r[s] for r in runs if s < len(r)]) for s in range(n)]
        ax_w.plot(range(n), mean, marker=".", color=cmap(c % 10), label=name)
    ax_w.set_xlabel("step")
    ax_w.set_ylabel("mean set width (over prompts)")
    ax_w.set_title("branching factor per step")
    ax_w.legend(fontsize=7)
    buckets = list(range(1, horizon + 1))
    bar = 0.8 / max(len(depths), 1)
    for c, (name, ds) in enumerate(depths.items()):
        counts = [sum(d == b for d in ds) for b in buckets] + [sum(d is None for d in ds)]
        share = np.asarray(counts, float) / max(len(ds), 1)
        x = np.arange(len(buckets) + 1) + (c - (len(depths) - 1) / 2) * bar
        ax_d.bar(x, share, width=bar, color=cmap(names.index(name) % 10 if name in names else c))
    ax_d.set_xticks(range(len(buckets) + 1), [str(b) for b in buckets] + ["none"])
    ax_d.set_xlabel("convergence depth (tokens after the set)")
    ax_d.set_ylabel("share of multi-member sets")
    ax_d.set_title("when do the members' continuations agree?")
    if path is not None:
        save_png(fig, path)
    return fig


def budget_quality_figure(
    table: pd.DataFrame, *, path: str | os.PathLike[str] | None = None
) -> Figure:
    """Tokens forwarded vs NLL of the primary text, one point per method.

    Args:
        table: Rows with ``method``, ``family``, ``tokens_forwarded`` / ``nll`` means and
            their ``*_lo`` / ``*_hi`` CI bounds.
        path: Also save the PNG here.
    """
    fig = Figure(figsize=(8, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for _, r in table.iterrows():
        colour = FAMILY_COLOURS.get(str(r["family"]), "black")
        x, y = r["tokens_forwarded"], r["nll"]
        xerr = [[x - r["tokens_forwarded_lo"]], [r["tokens_forwarded_hi"] - x]]
        yerr = [[y - r["nll_lo"]], [r["nll_hi"] - y]]
        # an undefined or unbounded CI (too few prompts) draws no bar
        xerr = np.nan_to_num(np.asarray(xerr, dtype=float), nan=0.0, posinf=0.0, neginf=0.0)
        yerr = np.nan_to_num(np.asarray(yerr, dtype=float), nan=0.0, posinf=0.0, neginf=0.0)
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", color=colour, ms=4, lw=0.8)
        ax.annotate(str(r["method"]), (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("tokens forwarded per prompt (log)")
    ax.set_ylabel("NLL of the primary text under the plain model (nats/token)")
    ax.set_title("compute budget vs quality (mean, 95% bootstrap CI over prompts)")
    if path is not None:
        save_png(fig, path)
    return fig
