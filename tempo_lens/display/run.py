"""Render an analysis run directory: figures, text views, tree, and ``report.html``.

:func:`render_run` is what :func:`tempo_lens.analysis.run.analyze_prompt` calls. It only
lays out data it is given (the trace, the captured :class:`~tempo_lens.hooks.capture.AttentionData`
and the analysis results of :func:`tempo_lens.analysis.run.analyze_data`); a result that
is missing is skipped, so it also renders a bare trace (``data=None, results=None``).

Files written under ``out_dir`` (each atomically):

=============================  ==============================================
``figures/*.png``              widths, attention heatmaps, entropy, received, pruning
``tree.txt`` / ``tree.html``   the token lattice
``attention_ascii.txt``        ASCII heatmap, cross-parallel verdicts, member bars
``heatmap.json``               the attention matrix for external plotting
``attention_full.npz``         long runs only: the full data behind thinned views
``report.html``                everything above in one self-contained file
=============================  ==============================================

Long runs. The dense attention views grow with the square of the sequence: the
circuitsvis heads view embeds ``head * n**2`` numbers as JSON and ``heatmap.json`` ``n**2``.
Up to ``max_tokens`` (:data:`REPORT_MAX_TOKENS`) tokens they hold every position, as they
always did. Beyond it both show the last ``max_tokens`` tokens only (queries and keys),
the view's values rounded to :data:`THINNED_DECIMALS` decimals; the full matrices go to
``attention_full.npz`` (float32, exact) and a line at the top of the report says what was
thinned and where the full data is. Nothing is densified over every layer: the report's
memory is ``O(n**2)`` floats for the mean matrix plus one ``[head, n, n]`` layer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import tempo_lens.display.ascii as tx
import tempo_lens.display.cv as cv
import tempo_lens.display.figures as fg
from tempo_lens.analysis.export import save_heatmap_json
from tempo_lens.display._common import parallel_groups, token_labels
from tempo_lens.display.report import write_report
from tempo_lens.display.tree import tree_text, tree_view
from tempo_lens.io import atomic_write, atomic_write_text
from tempo_lens.trace import Trace

__all__ = ["render_run"]

log = logging.getLogger(__name__)

ASCII_MAX_TOKENS = 64
"""The full-sequence ASCII heatmap is written only up to this many tokens."""

REPORT_MAX_TOKENS = 256
"""Beyond this many tokens the report's attention views and ``heatmap.json`` are thinned."""

THINNED_DECIMALS = 4
"""Decimals kept in a thinned circuitsvis view (the side file keeps float32)."""

FULL_DATA_NAME = "attention_full.npz"
"""The side file of a thinned report: ``mean`` ``[n, n]``, ``layer{L}`` ``[head, n, n]``
(float32, exactly :meth:`AttentionData.full_matrix` / :meth:`AttentionData.full_tensor`)
and ``labels`` ``[n]``."""


def render_run(
    out_dir: str | os.PathLike[str],
    trace: Trace,
    data: Any = None,
    results: dict[str, Any] | None = None,
    *,
    cv_layers: Sequence[int] | None = None,
    title: str | None = None,
    max_tokens: int = REPORT_MAX_TOKENS,
) -> list[Path]:
    """Write the figures, text views and ``report.html`` of one run; returns their paths.

    Args:
        out_dir: The run directory.
        trace: The generation.
        data: Its :class:`~tempo_lens.hooks.capture.AttentionData` (``None``: no attention views).
        results: :func:`~tempo_lens.analysis.run.analyze_data` output (any subset).
        cv_layers: Model layers shown with circuitsvis (default: the last captured one).
        title: Report title (default: the prompt, shortened).
        max_tokens: Sequences longer than this (in tokens) get thinned attention views
            and ``heatmap.json`` (the last ``max_tokens`` tokens) and the full data in
            ``attention_full.npz`` (see the module docstring).

    Raises:
        ValueError: ``max_tokens < 1``, or a ``cv_layers`` entry that was not captured.

    A figure that fails to render is not silently dropped: the failure is logged as a
    warning and named at the top of ``report.html``.
    """
    out = Path(out_dir)
    results = dict(results or {})
    labels = token_labels(trace)
    written: list[Path] = []
    figs: dict[str, Path] = {}
    failures: list[str] = []
    thinned: list[str] = []
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens!r}")

    def fig(name: str, caption: str, make: Any) -> None:
        path = out / "figures" / f"{name}.png"
        try:
            make(path)
        except Exception as exc:  # one bad view must not lose the report: report it instead
            msg = str(exc).splitlines()[0] if str(exc) else ""
            failures.append(f"figure {name}.png ({caption}) failed: {type(exc).__name__}: {msg}")
            log.warning("%s", failures[-1], exc_info=True)
            return
        figs[caption] = path
        written.append(path)

    # --- steps: widths and threshold, pruning
    widths = results.get("widths")
    if widths is not None and len(widths):
        fig("widths", "parallel width and threshold per step", lambda p: fg.widths_figure(
            widths["width"], thresholds=widths["threshold"].astype(float),
            pruned=widths["pruned_later"], path=p))  # fmt: skip
    elif trace.steps:
        fig("widths", "parallel width and threshold per step", lambda p: fg.widths_figure(
            trace.widths(), thresholds=[s.threshold for s in trace.steps], path=p))  # fmt: skip
    pruning = results.get("pruning")
    decisions = (
        pruning.decisions if pruning is not None else [d for s in trace.steps for d in s.pruning]
    )
    if len(decisions):
        fig("pruning", "retroactive pruning scores per set",
            lambda p: fg.pruning_scores_figure(decisions, path=p))  # fmt: skip

    # --- attention
    texts: dict[str, str] = {"token tree (text)": tree_text(trace)}
    views: dict[str, cv.CvView] = {}
    if data is not None:
        groups = parallel_groups(trace)
        full = data.full_matrix()
        fig("attention_full", "attention (mean over captured layers and heads), sets outlined",
            lambda p: fg.attention_heatmap_figure(full, labels, labels, row_groups=groups,
                                                  col_groups=groups, path=p))  # fmt: skip
        widest = max(groups, key=len, default=None)
        if widest is not None:
            step = trace.state.steps[widest[0]]
            m = data.step_matrix(step)
            fig(f"attention_step{step}", f"attention of step {step}'s members",
                lambda p: fg.attention_heatmap_figure(
                    m, [labels[i] for i in widest], labels[: m.shape[1]],
                    row_groups=[list(range(len(widest)))],
                    col_groups=[list(widest)], title=f"step {step}: members -> keys", path=p))  # fmt: skip
        texts["attention (ASCII)"] = _ascii(trace, data, labels, full)
        layers = list(cv_layers) if cv_layers is not None else data.layers[-1:]
        n = len(labels)
        start = max(0, n - max_tokens)
        if start:  # long run: thin the dense views, keep the full data beside the report
            written.append(_save_full(out / FULL_DATA_NAME, data, full, labels, layers))
            thinned.append(_thinned_note(out, n, start, max_tokens))
        else:  # a side file from an earlier, longer run into this directory is not this run's
            (out / FULL_DATA_NAME).unlink(missing_ok=True)
        window = labels[start:]
        written.append(save_heatmap_json(
            out / "heatmap.json", full[start:, start:], window, window, layers=data.layers,
            heads=data.heads, agg="mean",
            **({"thinned": {"first_token": start, "n_tokens": n, "full_data": FULL_DATA_NAME,
                            "full_data_key": "mean"}} if start else {})))  # fmt: skip
        del full
        for layer in layers:
            heading = f"layer {layer}: attention heads"
            if start:
                heading += f" (last {n - start} of {n} tokens)"
            views[heading] = cv.attention_heads(
                data.full_tensor([layer], start)[0], window,
                head_names=[f"L{layer}H{h}" for h in data.heads],
                decimals=THINNED_DECIMALS if start else None,
            )  # fmt: skip
    views["tokens by selection probability"] = cv.probability_tokens(trace)

    entropy = results.get("entropy")
    if entropy is not None:
        fig("entropy_layers", f"attention entropy per layer ({entropy.unit})",
            lambda p: fg.layer_entropy_figure(entropy.per_layer, ylabel=f"entropy ({entropy.unit})",
                                              path=p))  # fmt: skip
        fig("entropy_heads", f"attention entropy per layer and head ({entropy.unit})",
            lambda p: fg.head_entropy_figure(entropy.per_head, path=p))  # fmt: skip
    received = results.get("received")
    if received is not None:
        par = np.nanmean(received.per_head_parallel, axis=1)
        non = np.nanmean(received.per_head_non_parallel, axis=1)
        fig("received", "attention received: parallel vs non-parallel tokens by layer",
            lambda p: fg.parallel_vs_nonparallel_figure(par, non, ylabel="mean attention received",
                                                        path=p))  # fmt: skip
        per_token = received.tokens.set_index("index")["received"]
        vals = [float(per_token.get(i, np.nan)) for i in range(len(trace.state))]
        views["tokens by attention received"] = cv.colored_tokens(
            labels, np.nan_to_num(np.asarray(vals), nan=0.0), min_value=0.0
        )

    atomic_write_text(out / "tree.txt", tree_text(trace) + "\n")
    written.append(out / "tree.txt")
    written.append(tree_view(trace).save(out / "tree.html"))
    if "attention (ASCII)" in texts:
        atomic_write_text(out / "attention_ascii.txt", texts["attention (ASCII)"] + "\n")
        written.append(out / "attention_ascii.txt")
    written.append(
        write_report(
            out / "report.html",
            trace,
            title=title or f"TEMPO run: {_short(trace)}",
            summary=results.get("summary"),
            figures=figs,
            views=views,
            texts=texts,
            notes=thinned + _notes(results) + [f"Rendering failure: {f}" for f in failures],
        )
    )
    return written


def _save_full(
    path: Path, data: Any, full: np.ndarray, labels: list[str], layers: Sequence[int]
) -> Path:
    """Write :data:`FULL_DATA_NAME`: the exact matrices behind the thinned views."""
    arrays = {"mean": full, "labels": np.asarray(labels, dtype=str)}
    for layer in layers:
        arrays[f"layer{layer}"] = data.full_tensor([layer])[0]

    def write(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]

    atomic_write(path, write)
    return path


def _thinned_note(out: Path, n: int, start: int, max_tokens: int) -> str:
    rows = " and attention.npz (every captured row: analysis.export.load_attention)" if (
        out / "attention.npz").exists() else ""  # fmt: skip
    return (
        f"Thinned: this run has {n} tokens (more than {max_tokens}), so the circuitsvis "
        f"attention views and heatmap.json show only the last {n - start} tokens "
        f"(physical {start}-{n - 1}), the views' values rounded to {THINNED_DECIMALS} "
        f"decimals. Full data: "
        f"{FULL_DATA_NAME} (float32: 'mean' [{n}, {n}], 'layer<L>' [head, {n}, {n}], "
        f"'labels'){rows}."
    )


def _short(trace: Trace, n: int = 60) -> str:
    p = trace.prompt if isinstance(trace.prompt, str) else f"{len(trace.prompt)} prompt tokens"
    return p if len(p) <= n else p[: n - 1] + "…"


def _notes(results: dict[str, Any]) -> list[str]:
    iso = results.get("isolation")
    if iso is None or not iso.n_sets:
        return []
    mode = "isolated" if iso.isolate else "visible"
    ok = "consistent with" if iso.consistent else "INCONSISTENT with"
    return [
        f"Isolation check: max sibling attention {iso.max_sibling_attention:.3e} over "
        f"{iso.n_sets} parallel sets, {ok} {mode} mode."
    ]


def _ascii(trace: Trace, data: Any, labels: list[str], full: np.ndarray) -> str:
    blocks = []
    if len(labels) <= ASCII_MAX_TOKENS:
        blocks.append(tx.attention_heatmap(full, labels, labels, title="attention, mean over "
                                           "captured layers and heads (rows attend to columns)"))  # fmt: skip
    for rec in trace.steps:
        if len(rec.indices) < 2 or rec.step not in data.steps:
            continue
        m = data.step_matrix(rec.step)
        idx = list(rec.indices)
        sib = m[:, idx]
        member = [labels[i] for i in idx]
        blocks.append(tx.cross_parallel(
            sib, member, title=f"step {rec.step}: cross-parallel attention (mean over heads)",
            causal_ok=not trace.isolate, expect_isolated=True))  # fmt: skip
        blocks.append(tx.parallel_bars(m, member, labels[: m.shape[1]], top_k=5, width=30))
    return "\n\n".join(blocks)
