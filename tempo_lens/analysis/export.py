"""Exports of captured attention, and the loader that reads them back.

* :func:`export_seed_json` — the JSON shape of the original TEMPO attention analyzer, for
  compatibility: ``position_map`` (physical index -> logical position) and ``steps``, each
  with ``logical_step``, ``physical_positions``, ``token_ids``, ``tokens`` and
  ``attention_matrix`` (``[query, key]`` rows of the step's members to every key that
  existed then, averaged over the captured layers and heads), plus tempo_lens fields
  (``logical_positions``, ``pruned_at_step``, ``parallel``).
* :func:`save_attention` — compact tensors: ``attention.npz`` (one ``[layer, head, q,
  key]`` array per step, in the captured dtype) and ``attention_meta.json`` (format,
  layers, heads, per-step query indices, token texts, the sequence state and the trace).
* :func:`load_attention` — rebuilds an :class:`~tempo_lens.hooks.capture.AttentionData` from the
  two files for offline analysis (``load_attention(save_attention(data, d))`` round-trips).

Each file is written atomically; the metadata JSON is written last, so a directory with
metadata always has its tensors.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tempo_lens.analysis._util import ArrayLike, to_numpy
from tempo_lens.hooks.capture import AttentionData
from tempo_lens.io import atomic_write, atomic_write_json, jsonable
from tempo_lens.state import SequenceState
from tempo_lens.trace import Trace

__all__ = [
    "ATTENTION_FORMAT",
    "export_seed_json",
    "heatmap_data",
    "load_attention",
    "save_attention",
    "save_heatmap_json",
    "seed_json",
]

ATTENTION_FORMAT = "tempo_lens.attention/1"
NPZ_NAME = "attention.npz"
META_NAME = "attention_meta.json"


def _key(step: int) -> str:
    return "prompt" if step < 0 else f"step_{step:05d}"


def seed_json(
    data: AttentionData,
    *,
    layer: int | None = None,
    head: int | None = None,
    agg: str = "mean",
    include_prompt: bool = False,
) -> dict[str, Any]:
    """The seed-compatible dictionary (see module docstring)."""
    st = data.state
    steps = []
    for s in data.steps:
        if s < 0 and not include_prompt:
            continue
        q = data.query_indices(s)
        mat = data.step_matrix(s, layer, head, agg).astype(np.float64)
        steps.append(
            {
                "logical_step": s,
                "physical_positions": q,
                "logical_positions": [st.logical[i] for i in q],
                "token_ids": [st.token_ids[i] for i in q],
                "tokens": [data.texts[i] for i in q],
                "pruned_at_step": [st.pruned_at[i] for i in q],
                "parallel": s >= 0 and len(q) > 1,
                "attention_matrix": mat.tolist(),
            }
        )
    return {
        "format": "tempo_lens.seed_attention/1",
        "layers": data.layers if layer is None else [layer],
        "heads": data.heads if head is None else [head],
        "aggregation": agg,
        "isolate": st.isolate,
        "position_map": {str(i): p for i, p in enumerate(st.logical)},
        "steps": steps,
    }


def export_seed_json(data: AttentionData, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write :func:`seed_json` to ``path`` (atomically). Returns the path."""
    atomic_write_json(path, seed_json(data, **kwargs), indent=None)
    return Path(path)


def save_attention(data: AttentionData, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write ``attention.npz`` and ``attention_meta.json`` into ``out_dir``."""
    out = Path(out_dir)
    arrays = {_key(s): data.stored_rows(s) for s in data.steps}

    def write(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]

    atomic_write(out / NPZ_NAME, write)
    dtypes = {str(a.dtype) for a in arrays.values()}
    meta = {
        "format": ATTENTION_FORMAT,
        "layers": data.layers,
        "windows": data.windows,
        "heads": data.heads,
        "dtype": sorted(dtypes),
        "steps": data.steps,
        "query_indices": {str(s): data.query_indices(s) for s in data.steps},
        "texts": data.texts,
        "state": data.state.to_dict(),
        "trace": data.trace.to_dict() if data.trace is not None else None,
    }
    atomic_write_json(out / META_NAME, meta, indent=None)
    return [out / NPZ_NAME, out / META_NAME]


def load_attention(path: str | os.PathLike[str]) -> AttentionData:
    """Read a directory written by :func:`save_attention` (or its metadata file's path)."""
    p = Path(path)
    directory = p.parent if p.is_file() else p
    meta_path = directory / META_NAME
    if not meta_path.exists():
        raise FileNotFoundError(f"no {META_NAME} in {directory}")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format") != ATTENTION_FORMAT:
        raise ValueError(f"unsupported attention format {meta.get('format')!r}")
    trace = Trace.from_dict(meta["trace"]) if meta.get("trace") else None
    state = SequenceState.from_dict(meta["state"])
    with np.load(directory / NPZ_NAME) as z:
        rows = {int(s): z[_key(int(s))] for s in meta["steps"]}
    return AttentionData(
        state=state,
        rows=rows,
        query_indices={int(k): v for k, v in meta["query_indices"].items()},
        layers=meta["layers"],
        heads=meta["heads"],
        texts=meta["texts"],
        trace=trace,
        windows=meta.get("windows"),
    )


def heatmap_data(
    matrix: ArrayLike,
    source_labels: Sequence[str],
    target_labels: Sequence[str],
    **meta: Any,
) -> dict[str, Any]:
    """A JSON-ready dict of a heatmap (NaN/inf become ``null``) for external plotting.

    Keys: ``source_labels``, ``target_labels``, ``values`` (row-major ``[source][target]``),
    ``shape``, ``min``, ``max`` and whatever ``meta`` holds (e.g. ``layer=0, step=3``).
    """
    arr = to_numpy(matrix, ndim=2, name="matrix")
    if arr.shape != (len(source_labels), len(target_labels)):
        raise ValueError(f"matrix shape {arr.shape} does not match the labels")
    finite = arr[np.isfinite(arr)]
    return {
        "source_labels": list(source_labels),
        "target_labels": list(target_labels),
        "values": jsonable(arr.tolist()),
        "shape": list(arr.shape),
        "min": float(finite.min()) if finite.size else None,
        "max": float(finite.max()) if finite.size else None,
        **meta,
    }


def save_heatmap_json(
    path: str | os.PathLike[str],
    matrix: ArrayLike,
    source_labels: Sequence[str],
    target_labels: Sequence[str],
    **meta: Any,
) -> Path:
    """Write :func:`heatmap_data` as JSON atomically; returns the path."""
    atomic_write_json(path, heatmap_data(matrix, source_labels, target_labels, **meta))
    return Path(path)
