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
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd

from tempo_lens.experiments.findings_claims import in_condition
from tempo_lens.experiments.findings_judge import read_judge
from tempo_lens.io import atomic_write_json
from tempo_lens.runner.store import (
    MANIFEST,
    RECORD,
    summarize_only,
    table_hashes,
    write_record_table,
)

__all__ = ["TABLES", "write_record"]

TABLES = ("per_prompt", "layers", "sizes", "members", "heads")


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_record(run_dir: str | Path, dest: str | Path, **record: Any) -> Path:
    """Copy the findings run ``run_dir`` into the directory of record ``dest``; summarize.

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
    from tempo_lens import __version__
    from tempo_lens.experiments.findings import SPEC

    src, out = Path(run_dir), Path(dest)
    if out.resolve() == src.resolve():
        raise ValueError(f"dest must differ from run_dir, got {src} for both")
    man = json.loads((src / MANIFEST).read_text(encoding="utf-8"))
    if not (src / "per_prompt.csv").is_file():
        raise FileNotFoundError(f"{src} has no per_prompt.csv: not a summarized findings run")
    tau0, arm = float(man["config"]["taus"][0]), man["config"]["readouts"][0]
    (out / "figures").mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        if not (src / f"{name}.csv").is_file():
            continue
        df = pd.read_csv(src / f"{name}.csv", keep_default_na=False, na_values=[""])
        if name == "heads":
            df = df[in_condition(df, "isolated", tau0, arm)]
        elif name == "layers" and "readout" in df:
            df = df[df["readout"] == arm]
        if name != "per_prompt":  # the prompt's text and category are in per_prompt
            df = df.drop(columns=[c for c in ("prompt", "category") if c in df])
        write_record_table(df, out / f"{name}.csv.gz")
    judge = read_judge(src)
    if judge is not None:
        write_record_table(judge, out / "judge.csv.gz")
    man[RECORD] = {
        "tempo_lens": __version__,
        "commit": _commit(),
        **record,
        "tables": table_hashes(out),
    }
    atomic_write_json(out / MANIFEST, man)
    summarize_only(SPEC, out)
    return out
