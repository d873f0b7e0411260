"""The on-disk side of a sweep: the manifest that identifies it, the collected tables.

Part of :mod:`tempo_lens.runner` (which re-exports these names): ``OUT/manifest.json``
records the experiment, the config (minus execution settings) and the prompts, so a re-run
resumes only into a directory of the same sweep; :func:`collect` concatenates the finished
units' rows per table.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from tempo_lens.analysis._util import jsonable
from tempo_lens.options import Prompt

if TYPE_CHECKING:
    from tempo_lens.runner import ExperimentSpec, Unit

__all__ = [
    "EXECUTION_FIELDS",
    "MANIFEST",
    "ManifestMismatchError",
    "check_manifest",
    "collect",
    "manifest",
]

MANIFEST = "manifest.json"
EXECUTION_FIELDS = ("device",)  # settings that do not change results' meaning


class ManifestMismatchError(ValueError):
    """The output directory holds results of a different configuration."""


def manifest(spec: ExperimentSpec, cfg: Any, prompts: Sequence[Prompt]) -> dict[str, Any]:
    """The identity of a sweep: experiment, config (minus execution settings), prompts."""
    conf = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in EXECUTION_FIELDS}
    return jsonable(
        {
            "experiment": spec.name,
            "config": conf,
            "prompts": [dataclasses.asdict(p) for p in prompts],
        }
    )


def check_manifest(path: Path, want: dict[str, Any]) -> None:
    """Refuse to resume into ``path``'s directory if it holds another sweep.

    Raises:
        ManifestMismatchError: The manifest at ``path`` differs from ``want`` (the
            differing keys are named).
    """
    if not path.is_file():
        return
    have = json.loads(path.read_text(encoding="utf-8"))
    if have == want:
        return
    diffs = [k for k in ("experiment", "prompts") if have.get(k) != want[k]]
    hc, wc = have.get("config", {}), want["config"]
    diffs += [
        f"{k}={hc.get(k)!r}->{wc.get(k)!r}"
        for k in sorted(set(hc) | set(wc))
        if hc.get(k) != wc.get(k)
    ]
    raise ManifestMismatchError(
        f"{path.parent} holds results of a different run ({', '.join(diffs)}); "
        "use another --output-dir or delete it"
    )


def collect(out_dir: str | Path, units: Sequence[Unit]) -> dict[str, pd.DataFrame]:
    """Concatenate the finished units' rows per table, in unit order.

    Each row is prefixed with ``prompt_id``, ``category``, ``prompt`` and the unit's condition keys
    (a value the row already has wins).
    """
    rows: dict[str, list[dict[str, Any]]] = {}
    for unit in units:
        path = Path(out_dir) / "units" / f"{unit.key}.json"
        if not path.is_file():
            continue
        rec = json.loads(path.read_text(encoding="utf-8"))
        base = {
            "prompt_id": unit.prompt.id,
            "category": unit.prompt.category,
            "prompt": unit.prompt.text,
            **rec["condition"],
        }
        for name, table in rec["tables"].items():
            rows.setdefault(name, []).extend({**base, **r} for r in table)
    return {name: pd.DataFrame(r) for name, r in rows.items()}
