"""Text renderings of attention: heatmaps, bars, cross-parallel matrices.

Every function takes plain numbers (a tensor, an array or lists) plus labels and returns a
string, so the output works in a terminal, a log file or a test snapshot. Labels of a
trace's tokens come from :func:`tempo_lens.display.token_labels` (``text|step``).

Examples:
    >>> import torch
    >>> from tempo_lens.display.ascii import attention_heatmap, cross_parallel
    >>> attn = torch.tensor([[1.0, 0.0], [0.25, 0.75]])
    >>> print(attention_heatmap(attn, ["a", "b"], ["a", "b"], vmax=1.0))  # doctest: +SKIP
    >>> print(cross_parallel(torch.eye(2), ["mat|0", "floor|0"]).splitlines()[-1])
    verdict: ISOLATED: max sibling attention 0.000e+00 <= tol 1.0e-06

The cross-parallel verdict is :func:`tempo_lens.analysis.patterns.isolation_verdict` of the
numbers it is given (the largest off-diagonal entry against a tolerance), never assumed
from the configuration. The heatmap JSON export is
:func:`tempo_lens.analysis.export.heatmap_data`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tempo_lens.analysis._util import ArrayLike, to_numpy
from tempo_lens.analysis.patterns import isolation_verdict

__all__ = [
    "LEVELS",
    "attention_bars",
    "attention_heatmap",
    "cross_parallel",
    "parallel_bars",
]

LEVELS = " .:-=+*#%@"
"""Shade characters from lowest to highest value bin."""
MISSING = "x"
"""Character for a NaN/inf cell (e.g. a masked score)."""


def _fit(label: str, width: int) -> str:
    label = label.replace("\n", "\\n")
    return label if len(label) <= width else label[: width - 1] + "~"


def _scale(arr: np.ndarray, vmax: float | None) -> float:
    finite = arr[np.isfinite(arr)]
    top = float(finite.max()) if vmax is None and finite.size else (vmax or 1.0)
    return top if top > 0 else 1.0


def _shade(value: float, vmax: float, levels: str) -> str:
    if not math.isfinite(value):
        return MISSING
    n = len(levels)
    return levels[min(max(int(value / vmax * n + 1e-9), 0), n - 1)]


def _wrap(items: list[str], prefix: str, width: int = 100) -> list[str]:
    lines, cur = [], prefix
    for item in items:
        if len(cur) + len(item) + 2 > width and cur != prefix:
            lines.append(cur.rstrip())
            cur = " " * len(prefix)
        cur += item + "  "
    lines.append(cur.rstrip())
    return lines


def attention_heatmap(
    matrix: ArrayLike,
    source_labels: Sequence[str],
    target_labels: Sequence[str],
    *,
    title: str | None = None,
    vmax: float | None = None,
    levels: str = LEVELS,
    label_width: int = 12,
) -> str:
    """An ASCII heatmap: one row per source (query), one column per target (key).

    Args:
        matrix: Attention ``[source, target]``.
        source_labels: One label per row.
        target_labels: One label per column (listed under the map by column number).
        title: First line (default: a description of the axes).
        vmax: Value of the darkest shade (default: the largest finite value).
        levels: Shade characters from low to high.
        label_width: Row labels are cut to this width.

    Returns:
        The heatmap with a column key and a legend of the shade bins.
    """
    arr = to_numpy(matrix, ndim=2, name="matrix")
    n_src, n_tgt = arr.shape
    if len(source_labels) != n_src or len(target_labels) != n_tgt:
        raise ValueError(
            f"matrix is {n_src}x{n_tgt} but got {len(source_labels)} source and "
            f"{len(target_labels)} target labels"
        )
    top = _scale(arr, vmax)
    cell = max(2, len(str(n_tgt - 1)) + 1)
    pad = " " * (label_width + 2)
    lines = [title or "attention (rows: source/query, columns: target/key)"]
    lines.append(pad + "".join(str(j).rjust(cell) for j in range(n_tgt)))
    for i in range(n_src):
        cells = "".join(_shade(float(v), top, levels).rjust(cell) for v in arr[i])
        lines.append(f"  {_fit(source_labels[i], label_width).ljust(label_width)}{cells}".rstrip())
    lines += _wrap(
        [f"{j}={_fit(t, label_width)}" for j, t in enumerate(target_labels)], "targets: "
    )
    step = top / len(levels)
    bins = [f"'{c}' <{(k + 1) * step:.3g}" for k, c in enumerate(levels[:-1])]
    bins.append(f"'{levels[-1]}' >={(len(levels) - 1) * step:.3g}")
    if not np.isfinite(arr).all():
        bins.append(f"'{MISSING}' nan/inf")
    lines += _wrap(bins, "legend: ")
    return "\n".join(lines)


def attention_bars(
    weights: ArrayLike,
    target_labels: Sequence[str],
    *,
    source_label: str | None = None,
    top_k: int | None = None,
    width: int = 40,
    char: str = "#",
    sort: bool = True,
    label_width: int = 12,
) -> str:
    """Horizontal bars: how much one source token attends to each target.

    Args:
        weights: Attention ``[target]`` of one query (e.g. a parallel member).
        target_labels: One label per target.
        source_label: Named in the title line.
        top_k: Show only the ``top_k`` largest weights.
        width: Characters of the longest possible bar (weight 1.0, or the max if larger).
        char: Bar character.
        sort: Largest first (else in target order).
        label_width: Target labels are cut to this width.
    """
    w = to_numpy(weights, ndim=1, name="weights")
    if len(target_labels) != w.shape[0]:
        raise ValueError(f"{w.shape[0]} weights but {len(target_labels)} target labels")
    order = (
        list(np.argsort(-np.nan_to_num(w, nan=-np.inf), kind="stable"))
        if sort
        else list(range(w.shape[0]))
    )
    if top_k is not None:
        order = order[:top_k]
    finite = w[np.isfinite(w)]
    scale = max(1.0, float(finite.max()) if finite.size else 1.0)
    who = f"what {source_label} attends to" if source_label else "attention to targets"
    shown = f" (top {len(order)} of {w.shape[0]})" if len(order) < w.shape[0] else ""
    lines = [who + shown]
    for j in order:
        v = float(w[j])
        bar = char * round(v / scale * width) if math.isfinite(v) else MISSING
        label = _fit(target_labels[j], label_width).ljust(label_width)
        lines.append(f"  {label} {bar.ljust(width)} {v:.3f}")
    return "\n".join(lines)


def parallel_bars(
    rows: ArrayLike,
    member_labels: Sequence[str],
    target_labels: Sequence[str],
    *,
    top_k: int | None = 5,
    width: int = 40,
) -> str:
    """:func:`attention_bars` for every member of a parallel set, one block each.

    Args:
        rows: Attention ``[member, target]``.
        member_labels: One label per member.
        target_labels: One label per target.
        top_k: Targets shown per member.
        width: Bar width.
    """
    arr = to_numpy(rows, ndim=2, name="rows")
    if len(member_labels) != arr.shape[0]:
        raise ValueError(f"{arr.shape[0]} rows but {len(member_labels)} member labels")
    return "\n\n".join(
        attention_bars(arr[i], target_labels, source_label=m, top_k=top_k, width=width)
        for i, m in enumerate(member_labels)
    )


def cross_parallel(
    matrix: ArrayLike,
    member_labels: Sequence[str],
    *,
    title: str | None = None,
    tol: float = 1e-6,
    causal_ok: bool = False,
    expect_isolated: bool | None = None,
    label_width: int = 12,
) -> str:
    """The attention between members of one set, with an isolation verdict.

    Args:
        matrix: ``[member, member]``: row ``i`` attends to column ``j``.
        member_labels: One label per member.
        title: First line.
        tol: See :func:`isolation_verdict`.
        causal_ok: See :func:`isolation_verdict` (use for visible, non-isolated mode).
        expect_isolated: If given, the verdict also says whether it matches expectation.
        label_width: Labels are cut to this width.
    """
    arr = to_numpy(matrix, ndim=2, name="matrix")
    k = arr.shape[0]
    if len(member_labels) != k:
        raise ValueError(f"{k} members but {len(member_labels)} labels")
    isolated, worst, where = isolation_verdict(arr, tol=tol, causal_ok=causal_ok)
    labels = [_fit(m, label_width) for m in member_labels]
    col = max(8, *(len(s) + 1 for s in labels))
    lines = [title or "cross-parallel attention (row attends to column)"]
    lines.append(" " * (label_width + 2) + "".join(s.rjust(col) for s in labels))
    for i in range(k):
        cells = "".join(f"{float(v):.3f}".rjust(col) for v in arr[i])
        lines.append(f"  {labels[i].ljust(label_width)}{cells}")
    scope = "later-sibling" if causal_ok else "sibling"
    if isolated:
        verdict = f"ISOLATED: max {scope} attention {worst:.3e} <= tol {tol:.1e}"
    else:
        assert where is not None
        src, dst = member_labels[where[0]], member_labels[where[1]]
        verdict = (
            f"NOT ISOLATED: max {scope} attention {worst:.3e} ({src} -> {dst}) > tol {tol:.1e}"
        )
    if expect_isolated is not None:
        verdict += " [as expected]" if isolated == expect_isolated else " [UNEXPECTED]"
    lines.append(f"verdict: {verdict}")
    return "\n".join(lines)
