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
``heatmap.json``               the full attention matrix for external plotting
``report.html``                everything above in one self-contained file
=============================  ==============================================
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
from tempo_lens.io import atomic_write_text
from tempo_lens.trace import Trace

__all__ = ["render_run"]

log = logging.getLogger(__name__)

ASCII_MAX_TOKENS = 64
"""The full-sequence ASCII heatmap is written only up to this many tokens."""


def render_run(
    out_dir: str | os.PathLike[str],
    trace: Trace,
    data: Any = None,
    results: dict[str, Any] | None = None,
    *,
    cv_layers: Sequence[int] | None = None,
    title: str | None = None,
) -> list[Path]:
    """Write the figures, text views and ``report.html`` of one run; returns their paths.

    Args:
        out_dir: The run directory.
        trace: The generation.
        data: Its :class:`~tempo_lens.hooks.capture.AttentionData` (``None``: no attention views).
        results: :func:`~tempo_lens.analysis.run.analyze_data` output (any subset).
        cv_layers: Model layers shown with circuitsvis (default: the last captured one).
        title: Report title (default: the prompt, shortened).

    A figure that fails to render is not silently dropped: the failure is logged as a
    warning and named at the top of ``report.html``.
    """
    out = Path(out_dir)
    results = dict(results or {})
    labels = token_labels(trace)
    written: list[Path] = []
    figs: dict[str, Path] = {}
    failures: list[str] = []

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
        written.append(save_heatmap_json(out / "heatmap.json", full, labels, labels,
                                            layers=data.layers, heads=data.heads, agg="mean"))  # fmt: skip
        tensor = data.full_tensor()
        for layer in cv_layers if cv_layers is not None else data.layers[-1:]:
            li = data.layers.index(layer)
            views[f"layer {layer}: attention heads"] = cv.attention_heads(
                tensor[li], labels, head_names=[f"L{layer}H{h}" for h in data.heads]
            )
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
            notes=_notes(results) + [f"Rendering failure: {f}" for f in failures],
        )
    )
    return written


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
