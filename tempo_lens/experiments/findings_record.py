"""A findings run as a directory of record: the committed, auditable results of one model.

``write_record`` copies a finished run into ``DEST`` (e.g. ``docs/results/findings/smollm2``):

* ``manifest.json``: the run's manifest (config, prompts, each model's ``provenance``:
  name, weights SHA-256, backend, TransformerLens version) plus ``record``: the
  ``tempo_lens`` version and git commit, the wall time and load note given, the command,
  and ``tables`` (each table file's SHA-256, checked before every summary);
* every table every claim is computed from, as byte-reproducible ``<table>.csv.gz``
  (:func:`tempo_lens.runner.store.write_record_table`): ``per_prompt`` (all conditions),
  ``sizes``, ``members`` (all rows), ``layers`` (the primary readout arm, which the claims
  and figures read), ``heads`` (the primary condition only: the only one a claim or figure
  reads; all 8 conditions would be ~8x the size), ``judge`` (if the run was judged); the
  prompt's text and category only in ``per_prompt`` (the others key on ``prompt_id``);
* ``claims.csv``, ``findings.md``, ``figures/``, rebuilt from those tables by the same
  ``summarize`` (:func:`tempo_lens.runner.summarize_only`), so that
  ``tempo-lens findings --summarize-only --output-dir DEST`` reproduces them byte for byte
  (figures aside) and a test can check it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from tempo_lens.experiments.findings_claims import in_condition
from tempo_lens.runner.store import MANIFEST
from tempo_lens.runner.store import write_record as _write_record

__all__ = ["TABLES", "write_record"]

TABLES = ("per_prompt", "layers", "sizes", "members", "heads", "judge")


def write_record(run_dir: str | Path, dest: str | Path, **record: Any) -> Path:
    """Copy the findings run ``run_dir`` into the directory of record ``dest``; summarize.

    :func:`tempo_lens.runner.store.write_record` with the findings' tables and cuts.

    Args:
        run_dir: A findings output directory with its tables written (``OUT/*.csv``).
        dest: The directory of record (created; its tables and summary are replaced).
        record: Extra facts for the manifest's ``record`` entry (``wall_seconds``,
            ``load``, ``command``, ...).

    Returns:
        ``dest``.

    Raises:
        FileNotFoundError: ``run_dir`` has no manifest or no ``per_prompt.csv``.
        ValueError: ``dest`` is ``run_dir``.
    """
    from tempo_lens.experiments.findings import SPEC

    src = Path(run_dir)
    if not (src / MANIFEST).is_file() or not (src / "per_prompt.csv").is_file():
        raise FileNotFoundError(f"{src} has no per_prompt.csv: not a summarized findings run")
    man = json.loads((src / MANIFEST).read_text(encoding="utf-8"))
    tau0, arm = float(man["config"]["taus"][0]), man["config"]["readouts"][0]

    def cut(name: str, df: pd.DataFrame) -> pd.DataFrame:
        if name == "heads":
            df = df[in_condition(df, "isolated", tau0, arm)]
        elif name == "layers" and "readout" in df:
            df = df[df["readout"] == arm]
        if name != "per_prompt":  # the prompt's text and category are in per_prompt
            df = df.drop(columns=[c for c in ("prompt", "category") if c in df])
        return df

    tables = [t for t in TABLES if (src / f"{t}.csv").is_file()]
    return _write_record(SPEC, src, dest, tables=tables, transform=cut, **record)
