"""Matplotlib figures of TEMPO runs (Agg backend, PNG written atomically).

One function per view; each takes plain numbers (tensors, arrays, DataFrames, records)
and returns a ``matplotlib.figure.Figure`` (pass ``path=`` to also save it as a PNG):

* :func:`attention_heatmap_figure` — an attention matrix with parallel sets outlined;
* :func:`layer_entropy_figure` — entropy per layer (one line per series);
* :func:`head_entropy_figure` — entropy per layer x head;
* :func:`widths_figure` — parallel width (kept / pruned) and threshold per step;
* :func:`parallel_vs_nonparallel_figure` — a per-layer statistic for two token groups;
* :func:`pruning_scores_figure` — pruning scores of each judged set, pruned members red.

Figures are built with the object-oriented API on an Agg canvas (no ``pyplot``, no global
backend switch, nothing to close); in a notebook, display one with ``IPython.display``
or save it and show the PNG.

Examples:
    >>> from tempo_lens.display.figures import widths_figure
    >>> fig = widths_figure([1, 3, 2], thresholds=[0.1, 0.1, 0.1], path="/tmp/w.png")
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from tempo_lens.display._common import ArrayLike, to_numpy
from tempo_lens.io import atomic_write_bytes
from tempo_lens.trace import PruneDecision

__all__ = [
    "attention_heatmap_figure",
    "head_entropy_figure",
    "layer_entropy_figure",
    "parallel_vs_nonparallel_figure",
    "png_bytes",
    "pruning_scores_figure",
    "save_png",
    "widths_figure",
]

SET_COLOURS = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")
KEPT, PRUNED = "#2ca02c", "#d62728"


def save_png(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 120) -> Path:
    """Save ``fig`` as a PNG atomically; returns the path."""
    atomic_write_bytes(path, png_bytes(fig, dpi=dpi))
    return Path(path)


def png_bytes(fig: Figure, *, dpi: int = 120) -> bytes:
    """The PNG encoding of ``fig``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _figure(width: float, height: float) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _finish(fig: Figure, path: str | os.PathLike[str] | None) -> Figure:
    if path is not None:
        save_png(fig, path)
    return fig


def literal(text: object) -> str:
    """``text`` as matplotlib literal text.

    ``$`` is escaped, so token text such as ``$$`` or ``$x^2$`` is shown as typed instead
    of being parsed as mathtext.
    """
    return str(text).replace("$", "\\$")


def _short(label: str, width: int = 14) -> str:
    label = label.replace("\n", "\\n")
    return literal(label if len(label) <= width else label[: width - 1] + "…")


def attention_heatmap_figure(
    matrix: ArrayLike,
    source_labels: Sequence[str],
    target_labels: Sequence[str],
    *,
    row_groups: Sequence[Sequence[int]] = (),
    col_groups: Sequence[Sequence[int]] = (),
    title: str = "attention",
    vmax: float | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """An attention heatmap (rows: source/query, columns: target/key).

    Args:
        matrix: Attention ``[source, target]``; NaN cells are drawn grey.
        source_labels: One label per row.
        target_labels: One label per column.
        row_groups: Row indices of each parallel set (tick labels coloured per set).
        col_groups: Column indices of each parallel set (edges drawn, labels coloured).
            Where the ``g``-th row and column groups are the same set, the block they
            share (siblings attending to siblings) is outlined.
        title: Axes title.
        vmax: Colour-scale maximum (default: the largest finite value).
        path: Also save the PNG here.
    """
    arr = to_numpy(matrix, ndim=2, name="matrix")
    n_src, n_tgt = arr.shape
    if (len(source_labels), len(target_labels)) != (n_src, n_tgt):
        raise ValueError(f"matrix {arr.shape} does not match the labels")
    w = min(16.0, 2.5 + 0.32 * n_tgt)
    h = min(16.0, 2.0 + 0.3 * n_src)
    fig, ax = _figure(w, h)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#bbbbbb")
    im = ax.imshow(np.ma.masked_invalid(arr), cmap=cmap, vmin=0.0, vmax=vmax, aspect="auto")
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="attention")
    ax.set_xticks(range(n_tgt), [_short(t) for t in target_labels], rotation=90, fontsize=7)
    ax.set_yticks(range(n_src), [_short(s) for s in source_labels], fontsize=7)
    ax.set_xlabel("target (key)")
    ax.set_ylabel("source (query)")
    ax.set_title(literal(title))
    for g, cols in enumerate(col_groups):
        colour = SET_COLOURS[g % len(SET_COLOURS)]
        lo, hi = min(cols), max(cols)
        for edge in (lo - 0.5, hi + 0.5):
            ax.axvline(edge, color=colour, lw=0.8, alpha=0.7)
        for c in cols:
            ax.get_xticklabels()[c].set_color(colour)
    for g, rows in enumerate(row_groups):
        colour = SET_COLOURS[g % len(SET_COLOURS)]
        for r in rows:
            ax.get_yticklabels()[r].set_color(colour)
        if g < len(col_groups):  # the set's own block: sibling attention lives here
            cols = col_groups[g]
            lo_c, hi_c, lo_r, hi_r = min(cols), max(cols), min(rows), max(rows)
            ax.add_patch(
                Rectangle(
                    (lo_c - 0.5, lo_r - 0.5), hi_c - lo_c + 1, hi_r - lo_r + 1,
                    fill=False, ec=colour, lw=2.0,
                )
            )  # fmt: skip
    return _finish(fig, path)


def _series(data: Mapping[str, ArrayLike] | ArrayLike, default: str) -> dict[str, np.ndarray]:
    if isinstance(data, pd.DataFrame):
        return {str(c): data[c].to_numpy(dtype=float) for c in data.columns}
    if isinstance(data, Mapping):
        return {str(k): to_numpy(v, ndim=1, name=str(k)) for k, v in data.items()}
    return {default: to_numpy(data, ndim=1, name=default)}


def layer_entropy_figure(
    entropy: Mapping[str, ArrayLike] | ArrayLike,
    *,
    title: str = "attention entropy by layer",
    ylabel: str = "entropy (nats)",
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """Entropy per layer: one line per series (e.g. ``{"parallel": ..., "other": ...}``).

    Args:
        entropy: ``[layer]`` values, a mapping name -> ``[layer]``, or a DataFrame whose
            index is the layer and whose columns are series.
        title: Axes title.
        ylabel: Y-axis label.
        path: Also save the PNG here.
    """
    series = _series(entropy, "entropy")
    fig, ax = _figure(6.5, 3.6)
    for name, vals in series.items():
        ax.plot(range(len(vals)), vals, marker="o", label=literal(name))
    n = max(len(v) for v in series.values())
    ax.set_xticks(range(n))
    ax.set_ylim(bottom=0)
    ax.set_xlabel("layer")
    ax.set_ylabel(literal(ylabel))
    ax.set_title(literal(title))
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend()
    return _finish(fig, path)


def head_entropy_figure(
    entropy: ArrayLike,
    *,
    title: str = "attention entropy by head",
    annotate: bool | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """A layer x head grid of entropies (or any per-head statistic).

    Args:
        entropy: ``[layer, head]``.
        title: Axes title.
        annotate: Write the value in each cell (default: when the grid has <= 400 cells).
        path: Also save the PNG here.
    """
    arr = to_numpy(entropy, ndim=2, name="entropy")
    n_layers, n_heads = arr.shape
    fig, ax = _figure(min(14.0, 2.5 + 0.55 * n_heads), min(14.0, 1.6 + 0.4 * n_layers))
    im = ax.imshow(np.ma.masked_invalid(arr), cmap="magma", aspect="auto")
    fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02, label="entropy (nats)")
    ax.set_xticks(range(n_heads))
    ax.set_yticks(range(n_layers))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(literal(title))
    if annotate if annotate is not None else arr.size <= 400:
        lo, hi = np.nanmin(arr), np.nanmax(arr)
        for (i, j), v in np.ndenumerate(arr):
            light = hi == lo or (v - lo) / (hi - lo) < 0.6
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if light else "black")  # fmt: skip
    return _finish(fig, path)


def widths_figure(
    widths: ArrayLike,
    *,
    thresholds: ArrayLike | None = None,
    pruned: ArrayLike | None = None,
    title: str = "parallel width per step",
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """Members appended per step (pruned ones stacked in red) and the threshold.

    Args:
        widths: Members appended at each step.
        thresholds: ``tau`` at each step (drawn on a right-hand axis).
        pruned: Members of each step's set that were pruned later.
        title: Axes title.
        path: Also save the PNG here.
    """
    w = to_numpy(widths, ndim=1, name="widths")
    steps = np.arange(len(w))
    fig, ax = _figure(min(14.0, 4.0 + 0.25 * len(w)), 3.6)
    if pruned is not None:
        p = to_numpy(pruned, ndim=1, name="pruned")
        ax.bar(steps, w - p, color="#4c72b0", label="kept")
        ax.bar(steps, p, bottom=w - p, color=PRUNED, alpha=0.75, label="pruned")
    else:
        ax.bar(steps, w, color="#4c72b0", label="width")
    ax.set_xlabel("step")
    ax.set_ylabel("members")
    ax.set_ylim(0, max(1.0, float(w.max(initial=1))) + 0.5)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title(literal(title))
    handles, labels = ax.get_legend_handles_labels()
    if thresholds is not None:
        tau = to_numpy(thresholds, ndim=1, name="thresholds")
        ax2 = ax.twinx()
        (line,) = ax2.plot(steps[: len(tau)], tau, color="black", marker=".", label="threshold")
        ax2.set_ylabel("threshold tau")
        ax2.set_ylim(0, max(float(np.nanmax(tau)) * 1.25, 1e-3))
        handles, labels = handles + [line], labels + ["threshold"]
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    return _finish(fig, path)


def parallel_vs_nonparallel_figure(
    parallel: ArrayLike,
    nonparallel: ArrayLike,
    *,
    ylabel: str = "attention",
    title: str = "parallel vs non-parallel tokens by layer",
    labels: tuple[str, str] = ("parallel", "non-parallel"),
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """A per-layer statistic for parallel-set tokens next to the other tokens.

    Args:
        parallel: ``[layer]`` values for tokens in sets with several members.
        nonparallel: ``[layer]`` values for the other generated tokens.
        ylabel: What the values are (e.g. ``"mean attention to prompt"``).
        title: Axes title.
        labels: Legend names of the two groups.
        path: Also save the PNG here.
    """
    a = to_numpy(parallel, ndim=1, name="parallel")
    b = to_numpy(nonparallel, ndim=1, name="nonparallel")
    n = max(len(a), len(b))
    x = np.arange(n)
    fig, ax = _figure(min(14.0, 3.5 + 0.35 * n), 3.6)
    ax.bar(x[: len(a)] - 0.2, a, width=0.4, label=literal(labels[0]), color="#dd8452")
    ax.bar(x[: len(b)] + 0.2, b, width=0.4, label=literal(labels[1]), color="#4c72b0")
    ax.set_xticks(x)
    ax.set_xlabel("layer")
    ax.set_ylabel(literal(ylabel))
    ax.set_title(literal(title))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig, path)


def _decision_frame(decisions: Sequence[PruneDecision] | pd.DataFrame) -> pd.DataFrame:
    if isinstance(decisions, pd.DataFrame):
        df = decisions.copy()
    else:
        df = pd.DataFrame([d.__dict__ for d in decisions])
    if df.empty:
        return pd.DataFrame(columns=["set_step", "text", "score", "pruned"])
    if "text" not in df.columns:
        df["text"] = df["label"] if "label" in df.columns else df.get("index", "").astype(str)
    missing = {"set_step", "score", "pruned"} - set(df.columns)
    if missing:
        raise ValueError(f"pruning decisions need columns {sorted(missing)}")
    return df


def pruning_scores_figure(
    decisions: Sequence[PruneDecision] | pd.DataFrame,
    *,
    title: str = "retroactive pruning scores",
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """One bar per judged member, grouped by set; pruned members red, kept green.

    Args:
        decisions: ``PruneDecision`` records (``trace.steps[i].pruning``) or a DataFrame
            with columns ``set_step``, ``score``, ``pruned`` and ``text`` (or ``label``).
        title: Axes title.
        path: Also save the PNG here.
    """
    df = _decision_frame(decisions)
    fig, ax = _figure(min(16.0, 3.5 + 0.28 * max(len(df), 1)), 3.8)
    if df.empty:
        ax.text(0.5, 0.5, "no pruning decisions", ha="center", va="center")
        ax.set_axis_off()
        return _finish(fig, path)
    xs, ticks, names, x = [], [], [], 0.0
    for step, grp in df.groupby("set_step", sort=True):
        start = x
        for _, row in grp.iterrows():
            xs.append((x, float(row["score"]), bool(row["pruned"]), str(row["text"])))
            x += 1.0
        ticks.append((start + x - 1.0) / 2)
        names.append(literal(f"set {step}"))
        x += 0.7
        ax.axvline(x - 0.85, color="#cccccc", lw=0.8)
    for px, score, was_pruned, text in xs:
        ax.bar(px, score, color=PRUNED if was_pruned else KEPT, width=0.85)
        ax.text(px, 0, _short(text, 10), rotation=90, ha="center", va="bottom", fontsize=6)
    sec = ax.secondary_xaxis("bottom")
    sec.set_xticks(ticks, names, fontsize=8)
    ax.set_xticks([])
    ax.set_ylabel("score (attention received)")
    ax.set_title(literal(title))
    ax.legend(
        handles=[Rectangle((0, 0), 1, 1, color=KEPT), Rectangle((0, 0), 1, 1, color=PRUNED)],
        labels=["kept", "pruned"],
        fontsize=8,
        loc="upper right",
    )
    return _finish(fig, path)
