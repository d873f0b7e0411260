"""Figures of the intervention experiments (layer x head maps, per-layer curves).

Analysis returns tables; these functions only render them (matplotlib, Agg canvas, no
global state) and write PNGs atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tempo_lens.display.figures import literal, save_png

__all__ = ["layer_bands_figure", "layer_curves_figure", "layer_head_heatmaps_figure"]


def layer_head_heatmaps_figure(
    table: pd.DataFrame,
    columns: Sequence[str],
    path: str | os.PathLike[str] | None = None,
    *,
    facet: str = "ablation",
) -> Figure:
    """One layer x head heatmap per ``(facet value, column)`` of a per-head table.

    Args:
        table: Rows with ``layer``, ``head``, ``facet`` and the ``columns``.
        columns: Value columns to map (e.g. ``kl_parallel``).
        path: Write a PNG there when given.
        facet: Column splitting the rows into panels.
    """
    facets = list(dict.fromkeys(table[facet])) if facet in table else [None]
    fig = Figure(figsize=(3.2 * len(columns) * len(facets), 4.5), layout="constrained")
    axes = fig.subplots(1, len(columns) * len(facets), squeeze=False)[0]
    n_l, n_h = int(table["layer"].max()) + 1, int(table["head"].max()) + 1
    for k, (fv, col) in enumerate((f, c) for f in facets for c in columns):
        sub = table if fv is None else table[table[facet] == fv]
        grid = np.full((n_l, n_h), np.nan)
        grid[sub["layer"].to_numpy(int), sub["head"].to_numpy(int)] = sub[col].to_numpy(float)
        ax = axes[k]
        im = ax.imshow(grid, aspect="auto", cmap="viridis", origin="lower")
        ax.set_title(f"{fv}: {col}" if fv is not None else col, fontsize=9, usetex=False)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        fig.colorbar(im, ax=ax, shrink=0.8)
    if path is not None:
        save_png(fig, path)
    return fig


def layer_curves_figure(
    table: pd.DataFrame,
    x: str,
    y: str,
    hue: str,
    path: str | os.PathLike[str] | None = None,
    *,
    ci: tuple[str, str] | None = ("ci_low", "ci_high"),
) -> Figure:
    """``y`` against ``x`` with one line per ``hue`` value and optional CI bands."""
    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.subplots()
    for value, g in table.groupby(hue, sort=True):
        g = g.sort_values(x)
        ax.plot(g[x], g[y], marker="o", ms=3, label=f"{hue}={value}")
        if ci is not None and set(ci) <= set(g.columns):
            lo, hi = (g[c].astype(float).where(np.isfinite(g[c].astype(float))) for c in ci)
            ax.fill_between(g[x], lo, hi, alpha=0.2)  # no band where a CI is unbounded
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.legend(fontsize=8)
    if path is not None:
        save_png(fig, Path(path))
    return fig


def layer_bands_figure(
    table: pd.DataFrame,
    path: str | os.PathLike[str] | None = None,
    *,
    facet: str = "measure",
    x: str = "layer",
    y: str = "mean",
    ci: tuple[str, str] = ("ci_low", "ci_high"),
    ylabel: str = "mean over prompts, 95% CI",
) -> Figure:
    """One panel per ``facet`` value: ``y`` against ``x`` with its CI band.

    Args:
        table: Long table with ``facet``, ``x``, ``y`` and the two ``ci`` columns (e.g. a
            mean over prompts per measure and layer). Non-finite CI bounds leave a gap in
            the band.
        path: Write a PNG there when given.
        facet: Column splitting the rows into panels (panel titles: its values).
        x: Horizontal axis column.
        y: Vertical axis column.
        ci: ``(low, high)`` columns of the band.
        ylabel: Vertical axis label (literal text).
    """
    facets = list(dict.fromkeys(table[facet]))
    fig = Figure(figsize=(4.2 * max(1, len(facets)), 3.6), layout="constrained")
    axes = fig.subplots(1, max(1, len(facets)), squeeze=False)[0]
    for ax, value in zip(axes, facets, strict=False):
        g = table[table[facet] == value].sort_values(x)
        ax.plot(g[x], g[y], marker="o", ms=3)
        lo, hi = (g[c].astype(float).where(np.isfinite(g[c].astype(float))) for c in ci)
        ax.fill_between(g[x], lo, hi, alpha=0.25)
        ax.set_title(literal(value), fontsize=10)
        ax.set_xlabel(literal(x))
        ax.set_ylabel(literal(ylabel))
    if path is not None:
        save_png(fig, Path(path))
    return fig
