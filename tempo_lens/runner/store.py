"""The on-disk side of a sweep: the manifest that identifies it, the collected tables.

Part of :mod:`tempo_lens.runner` (which re-exports these names): ``OUT/manifest.json``
records the experiment, the config (minus execution settings) and the prompts, so a re-run
resumes only into a directory of the same sweep; :func:`collect` concatenates the finished
units' rows per table; :func:`write_results` writes the tables and the summary, and
:func:`summarize_only` does that again for a directory without running anything.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from tempo_lens.io import atomic_write_text, jsonable
from tempo_lens.prompts import Prompt

if TYPE_CHECKING:
    from tempo_lens.runner.experiment import ExperimentSpec
    from tempo_lens.runner.units import Unit

__all__ = [
    "EXECUTION_FIELDS",
    "MANIFEST",
    "ManifestMismatchError",
    "RunResult",
    "check_manifest",
    "collect",
    "manifest",
    "summarize_only",
    "write_results",
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


@dataclass
class RunResult:
    """What a finished run produced.

    Attributes:
        tables: ``table name -> DataFrame`` (rows of every finished unit, unit order).
        report: The summary text ``summarize`` returned.
        out_dir: The output directory.
        n_units: Units in the sweep (after ``limit``).
        n_skipped: Units found finished on disk and not re-run.
        batches: Per unit run now, the number of units in its batched call (1 = alone);
            for TEMPO experiments that is the number of sequences per forward.
    """

    tables: dict[str, pd.DataFrame]
    report: str
    out_dir: Path
    n_units: int
    n_skipped: int
    batches: list[int] = field(default_factory=list)


def write_results(
    spec: ExperimentSpec, cfg: Any, out: Path, units: Sequence[Unit]
) -> tuple[dict[str, pd.DataFrame], str]:
    """Collect the finished units' tables, write ``OUT/<table>.csv``, summarize.

    Returns:
        The tables and the report text (also written to ``OUT/report.txt``).
    """
    tables = collect(out, units)
    for name, df in tables.items():
        atomic_write_text(out / f"{name}.csv", df.to_csv(index=False))
    report = spec.summarize(cfg, tables, out)
    atomic_write_text(out / "report.txt", report + "\n")
    return tables, report


def summarize_only(spec: ExperimentSpec, out_dir: str | Path) -> RunResult:
    """Re-write the tables, summary and report of ``out_dir`` from its finished units.

    Nothing runs: the config and prompts come from ``OUT/manifest.json``, the rows from
    ``OUT/units/``. Units not finished (an interrupted or ``--limit`` run) are left out;
    ``n_skipped`` counts the finished ones.

    Raises:
        FileNotFoundError: ``out_dir`` has no manifest (no run of any experiment).
        ManifestMismatchError: The manifest is of another experiment, or its config does
            not rebuild exactly.
        ValueError: No unit has finished.
    """
    out = Path(out_dir)
    path = out / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{out} has no {MANIFEST}: not the output directory of a run")
    have = json.loads(path.read_text(encoding="utf-8"))
    if have.get("experiment") != spec.name:
        raise ManifestMismatchError(
            f"{out} holds a run of {have.get('experiment')!r}, not {spec.name!r}"
        )
    cfg = spec.config(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in have["config"].items()}
    )
    prompts = [Prompt(**p) for p in have["prompts"]]
    check_manifest(path, manifest(spec, cfg, prompts))  # the config rebuilt exactly
    units = spec.units(cfg, prompts)
    done = sum((out / "units" / f"{u.key}.json").is_file() for u in units)
    if not done:
        raise ValueError(f"{out}: none of the {len(units)} units has finished")
    tables, report = write_results(spec, cfg, out, units)
    return RunResult(tables, report, out, len(units), done)
