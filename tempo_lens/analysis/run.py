"""End-to-end attention analysis of TEMPO runs: generate with capture, analyse, export.

:func:`analyze_data` runs every analysis on one captured sequence and returns a dict of
result objects (the input of ``tempo_lens.display.render_run``). :func:`analyze_prompt`
generates with :class:`~tempo_lens.hooks.capture.AttentionCapture`, analyses, and writes into
``out_dir``:

==========================  ======================================================
``trace.json``              the generation (:meth:`Trace.save`)
``attention.npz`` + meta    compact tensors (:func:`~tempo_lens.analysis.export.save_attention`)
``attention_seed.json``     the seed-compatible export
``analysis.json``           every analysis, per token / set / head
``summary.json``            headline numbers (read by :mod:`tempo_lens.analysis.stats`)
figures, ``report.html``    by the ``render`` given (``tempo_lens.display.render_run``)
==========================  ======================================================

Examples:
    >>> from tempo_lens import TempoConfig, make_tiny_model
    >>> s = analyze_prompt(make_tiny_model(), [1, 2, 3], TempoConfig(max_steps=4),
    ...                    "out/run")  # doctest: +SKIP
    >>> s["received"]["ratio"]  # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from tempo_lens._numbers import LayersLike
from tempo_lens.analysis.export import export_seed_json, save_attention
from tempo_lens.analysis.patterns import (
    attention_entropy,
    head_specialisation,
    isolation_check,
    sibling_attention,
    sibling_divergence,
    top_context,
)
from tempo_lens.analysis.received import received_attention
from tempo_lens.analysis.steps import parallel_widths, pruning_analysis, run_summary
from tempo_lens.backends import TempoModel
from tempo_lens.config import TempoConfig
from tempo_lens.generation import generate
from tempo_lens.hooks.capture import AttentionCapture, AttentionData
from tempo_lens.io import atomic_write_json, jsonable
from tempo_lens.prompts import PromptLike
from tempo_lens.trace import Trace

__all__ = ["RenderFn", "analyze_data", "analyze_prompt"]


RenderFn = Callable[[Path, Trace, AttentionData, dict[str, Any]], Iterable[Path]]
"""``render(out_dir, trace, data, results) -> paths written`` (e.g.
:func:`tempo_lens.display.render_run`)."""


def analyze_data(
    trace: Trace,
    data: AttentionData,
    *,
    top_k: int = 5,
    window: float | int = 3.0,
    include_sink: bool = False,
) -> dict[str, Any]:
    """Every analysis of one captured sequence.

    Returns:
        ``summary`` (dict), ``widths`` (DataFrame), ``received``
        (:class:`ReceivedAttention`), ``isolation`` (:class:`IsolationCheck`), ``siblings``
        (list of :class:`SiblingMatrix`), ``divergence`` / ``top_context`` / ``heads``
        (DataFrames), ``entropy`` (:class:`EntropyResult`), ``pruning``
        (:class:`PruningAnalysis`).
    """
    received = received_attention(data, include_sink=include_sink)
    return {
        "summary": run_summary(trace),
        "widths": parallel_widths(trace),
        "received": received,
        "isolation": isolation_check(data),
        "siblings": sibling_attention(data),
        "divergence": sibling_divergence(data),
        "top_context": top_context(data, top_k),
        "entropy": attention_entropy(data),
        "heads": head_specialisation(data, window=window),
        "pruning": pruning_analysis(trace, received),
    }


def _headline(results: dict[str, Any]) -> dict[str, Any]:
    ent = results["entropy"]
    div = results["divergence"]
    return {
        "summary": results["summary"],
        "received": results["received"].to_dict(per_token=False),
        "isolation": results["isolation"].to_dict(),
        "entropy_per_layer": ent.per_layer,
        "entropy_unit": ent.unit,
        "mean_sibling_jsd_bits": float(div["jsd_bits"].mean()) if len(div) else None,
        "pruning_decisions": results["pruning"].n_decisions,
    }


def analyze_prompt(
    model: TempoModel,
    prompt: PromptLike,
    config: TempoConfig,
    out_dir: str | os.PathLike[str],
    *,
    layers: LayersLike | None = None,
    heads: Sequence[int] | None = None,
    float16: bool = False,
    spool: bool = False,
    top_k: int = 5,
    window: float | int = 3.0,
    include_sink: bool = False,
    render: RenderFn | None = None,
) -> dict[str, Any]:
    """Generate with capture, analyse, write the run directory; returns ``summary.json``.

    ``render`` draws the figures, text views and report into the run directory and returns
    the paths it wrote: :func:`tempo_lens.display.render_run` (what ``tempo-lens analyze``
    passes unless ``--no-figures``); ``None`` writes data only. Analysis sits below display,
    so the renderer is handed in rather than imported.
    """
    out = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="tempo_spool_") as tmp:
        cap = AttentionCapture(
            layers=layers, heads=heads, float16=float16, spool_dir=tmp if spool else None
        )
        t0 = time.perf_counter()
        trace = generate(model, prompt, config, observers=[cap])
        gen_seconds = time.perf_counter() - t0
        data = cap.result(trace)
        t1 = time.perf_counter()
        results = analyze_data(trace, data, top_k=top_k, window=window, include_sink=include_sink)
        analysis_seconds = time.perf_counter() - t1
        trace.save(out / "trace.json")
        save_attention(data, out)
        export_seed_json(data, out / "attention_seed.json")
        atomic_write_json(out / "analysis.json", _detail(results))
        summary = {
            "prompt": trace.prompt,
            "provenance": trace.provenance,
            "config": config.to_dict(),
            "clean_ids": trace.clean_ids(),
            **_headline(results),
            "capture": {
                "layers": data.layers,
                "heads": data.heads,
                "dtype": "float16" if float16 else "float32",
                "bytes": cap.nbytes,
                "generation_seconds": gen_seconds,
                "analysis_seconds": analysis_seconds,
            },
        }
        if render is not None:  # before summary.json: a summary marks a complete run directory
            paths = list(render(out, trace, data, results))
            summary["figures"] = [_rel(p, out) for p in paths]
    summary = jsonable(summary)
    atomic_write_json(out / "summary.json", summary)
    return summary


def _rel(path: Path, root: Path) -> str:
    path = Path(path)
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _detail(results: dict[str, Any]) -> Any:
    return jsonable(
        {
            "received": results["received"].to_dict(),
            "isolation": results["isolation"].to_dict(),
            "widths": results["widths"],
            "siblings": [
                {"step": m.step, "indices": m.indices, "texts": m.texts, "matrix": m.matrix}
                for m in results["siblings"]
            ],
            "divergence": results["divergence"],
            "top_context": results["top_context"],
            "entropy": results["entropy"].to_dict(),
            "heads": results["heads"],
            "pruning": results["pruning"].to_dict(),
        }
    )
