"""The on-disk side of a sweep: the manifest that identifies it, the collected tables.

Part of :mod:`tempo_lens.runner` (which re-exports these names): ``OUT/manifest.json``
records the experiment, the config (minus execution settings) and the prompts, so a re-run
resumes only into a directory of the same sweep; :func:`collect` concatenates the finished
units' rows per table; :func:`write_results` writes the tables and the summary, and
:func:`summarize_only` does that again for a directory without running anything.

Durability: a unit file counts as finished only if it reads back as a unit record
(:func:`read_unit`); one left empty or truncated by a crash is logged (naming the file)
and run again. One run at a time per output directory: :class:`RunLock` holds
``OUT/.lock`` (the holder's pid and host) for the whole run; a second run gets
:class:`RunLockedError` while the first is alive, and a lock whose process is gone (same
host) is taken over. Temporary files of a killed run are removed only under the lock,
when no live run can own them.

Directories of record (:func:`write_record`, :func:`read_record_tables`): the committed
form of a run, whose tables stand in for the units in :func:`summarize_only`.

Size: the run directory and the directory of record share the manifest, its check and
the summary step, so they stay in one module past 500 lines (a separate module would
import this one and be imported by it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import socket
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from tempo_lens.io import atomic_write_json, atomic_write_text, jsonable
from tempo_lens.prompts import Prompt
from tempo_lens.trace import provenance_line

if TYPE_CHECKING:
    from tempo_lens.runner.experiment import ExperimentSpec
    from tempo_lens.runner.units import Unit

__all__ = [
    "EXECUTION_FIELDS",
    "MANIFEST",
    "LOCK",
    "ManifestMismatchError",
    "RunLock",
    "RunLockedError",
    "RECORD_SUFFIX",
    "RunResult",
    "check_manifest",
    "collect",
    "manifest",
    "read_record_tables",
    "record_table_names",
    "read_unit",
    "summarize_only",
    "table_hashes",
    "unit_provenance",
    "write_record",
    "write_record_table",
    "write_results",
]

MANIFEST = "manifest.json"
PROVENANCE = "provenance"
"""The manifest key listing where the finished units came from (:func:`unit_provenance`)."""
RECORD = "record"
"""The manifest key of a directory of record: its commit, package version, wall time."""
LOCK = ".lock"
EXECUTION_FIELDS = ("device", "max_rows")  # settings that do not change results' meaning

log = logging.getLogger(__name__)


class ManifestMismatchError(ValueError):
    """The output directory holds results of a different configuration."""


class RunLockedError(RuntimeError):
    """Another live run holds the output directory."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True  # cannot tell: assume alive (never take a live run's directory)
    return True


class RunLock:
    """``OUT/.lock``: one run (or summarize-only) at a time in an output directory.

    The lock file holds ``{"pid": ..., "host": ...}`` and is created atomically (a
    complete temporary file hard-linked into place, so no reader sees it half-written).
    Use as a context manager; the lock is removed on exit, also on an error.

    Raises:
        RunLockedError: On entry, when a live process holds the lock, or one on another
            host (whose liveness cannot be checked: delete ``OUT/.lock`` if it is gone).
    """

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.out = Path(out_dir)
        self.path = self.out / LOCK
        self.me = {"pid": os.getpid(), "host": socket.gethostname()}
        self._held = False

    def _try_create(self) -> bool:
        fd, tmp = tempfile.mkstemp(prefix=".lock.", suffix=".new", dir=self.out)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.me, f)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                return False
            return True
        finally:
            os.unlink(tmp)

    def _holder(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def acquire(self) -> None:
        """Take the lock (taking over a stale one of a dead process on this host)."""
        self.out.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._try_create():
                self._held = True
                return
            holder = self._holder()
            if holder is None:  # released meanwhile: try again
                continue
            pid, host = holder.get("pid"), holder.get("host")
            stale = host == self.me["host"] and isinstance(pid, int) and not _pid_alive(pid)
            if not stale:
                who = f"pid {pid} on {host}" if holder else "an unknown process"
                raise RunLockedError(
                    f"{self.out} is in use by another run ({who}, lock file {self.path}); "
                    "wait for it, use another --output-dir, or delete the lock file if that "
                    "run is gone"
                )
            log.warning("taking over the stale lock %s of dead pid %s", self.path, pid)
            self.path.unlink(missing_ok=True)
        raise RunLockedError(f"could not take the lock {self.path}: another run keeps taking it")

    def release(self) -> None:
        """Remove the lock file if this object holds it."""
        if self._held:
            holder = self._holder()
            if holder == self.me:
                self.path.unlink(missing_ok=True)
            self._held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_unit(path: Path) -> dict[str, Any] | None:
    """The unit record at ``path``, or None (with a warning naming it) if it is unusable.

    A file that is missing returns None silently; one that is empty, truncated or not a
    unit record (a crash before the write reached the disk) is logged as a warning and
    returns None, so the unit runs again.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("unit file %s is unreadable (%s): the unit runs again", path, exc)
        return None
    try:
        rec = json.loads(text)
    except ValueError as exc:
        what = "empty" if not text.strip() else f"not valid JSON ({exc})"
        log.warning("unit file %s is %s: the unit runs again", path, what)
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("tables"), dict):
        log.warning("unit file %s is not a unit record: the unit runs again", path)
        return None
    return rec


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


def config_from_manifest(spec: ExperimentSpec, conf: dict[str, Any]) -> Any:
    """The experiment's config rebuilt from a manifest's ``config`` (lists back to tuples).

    Only the config's ``__init__`` fields are passed: a derived field (``init=False``, e.g.
    ``threshold_sweep``'s ``selection_threshold``) is recorded in the manifest but set by
    the config itself; the manifest check then compares it.
    """
    init = {f.name for f in dataclasses.fields(spec.config) if f.init}
    return spec.config(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in conf.items() if k in init}
    )


def unit_provenance(out_dir: str | Path, units: Sequence[Unit]) -> list[dict[str, Any]]:
    """The distinct provenance records of the finished units, in unit order.

    Each is :func:`tempo_lens.backends.provenance` of the model that ran a unit: ``model``
    (its name), ``weights_sha256`` (the packaged GGUF's, for the offline models),
    ``backend`` and ``transformer_lens`` (version). One entry unless a resume ran on
    another model or version. Units written before provenance was recorded add none.
    """
    out: list[dict[str, Any]] = []
    for unit in units:
        rec = read_unit(Path(out_dir) / "units" / f"{unit.key}.json")
        origin = rec.get(PROVENANCE) if rec is not None else None
        if isinstance(origin, dict) and origin not in out:
            out.append(origin)
    return out


def check_manifest(path: Path, want: dict[str, Any]) -> None:
    """Refuse to resume into ``path``'s directory if it holds another sweep.

    The manifests' ``provenance`` entries (:func:`unit_provenance`) are not compared: a
    resume on another TransformerLens version is allowed, and its manifest then lists both.

    Raises:
        ManifestMismatchError: The manifest at ``path`` differs from ``want`` (the
            differing keys are named).
    """
    if not path.is_file():
        return
    have = json.loads(path.read_text(encoding="utf-8"))
    have.pop(PROVENANCE, None)  # where the units came from, not what the sweep is
    have.pop(RECORD, None)  # how a directory of record was made (write time, wall time)
    want = {k: v for k, v in want.items() if k not in (PROVENANCE, RECORD)}
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
    (a value the row already has wins). A table no unit gave a row is left out (a
    column-less empty frame would break a summary's ``tables.get(name, default)``).
    """
    rows: dict[str, list[dict[str, Any]]] = {}
    for unit in units:
        rec = read_unit(Path(out_dir) / "units" / f"{unit.key}.json")
        if rec is None:
            continue
        base = {
            "prompt_id": unit.prompt.id,
            "category": unit.prompt.category,
            "prompt": unit.prompt.text,
            **rec.get("condition", {}),
        }
        for name, table in rec["tables"].items():
            rows.setdefault(name, []).extend({**base, **r} for r in table)
    return {name: pd.DataFrame(r) for name, r in rows.items() if r}


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
        The tables and the report text (also written to ``OUT/report.txt``, followed by
        one ``provenance:`` line per model that ran a unit, :func:`tempo_lens.trace.provenance_line`).
    """
    tables = collect(out, units)
    for name, df in tables.items():
        atomic_write_text(out / f"{name}.csv", df.to_csv(index=False))
    report = spec.summarize(cfg, tables, out)
    origin = "".join(f"provenance: {provenance_line(p)}\n" for p in unit_provenance(out, units))
    atomic_write_text(out / "report.txt", report + "\n" + origin)
    return tables, report


def summarize_only(spec: ExperimentSpec, out_dir: str | Path) -> RunResult:
    """Re-write the tables, summary and report of ``out_dir`` from its finished units.

    Nothing runs: the config and prompts come from ``OUT/manifest.json``, the rows from
    ``OUT/units/`` -- or, in a directory of record without ``units/`` (committed results,
    e.g. ``docs/results/findings/smollm2``), from its ``OUT/<table>.csv.gz``
    (:func:`read_record_tables`; the summary is rewritten, the tables are not). Units not finished (an interrupted or ``--limit`` run) are left out;
    ``n_skipped`` counts the finished ones.

    Raises:
        FileNotFoundError: ``out_dir`` has no manifest (no run of any experiment).
        ManifestMismatchError: The manifest is of another experiment, or its config does
            not rebuild exactly.
        ValueError: No unit has finished.
        RunLockedError: A live run holds ``out_dir``.
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
    cfg = config_from_manifest(spec, have["config"])
    prompts = [Prompt(**p) for p in have["prompts"]]
    check_manifest(path, manifest(spec, cfg, prompts))  # the config rebuilt exactly
    units = spec.units(cfg, prompts)
    if not (out / "units").is_dir() and (record := read_record_tables(out, have.get(RECORD))):
        # a directory of record: the committed tables stand in for the units
        report = spec.summarize(cfg, record, out)
        origin = "".join(f"provenance: {provenance_line(p)}\n" for p in have.get(PROVENANCE, []))
        atomic_write_text(out / "report.txt", report + "\n" + origin)
        n = int(record["per_prompt"].shape[0]) if "per_prompt" in record else 0
        return RunResult(record, report, out, len(units), n)
    with RunLock(out):
        done = sum(read_unit(out / "units" / f"{u.key}.json") is not None for u in units)
        if not done:
            raise ValueError(f"{out}: none of the {len(units)} units has finished")
        tables, report = write_results(spec, cfg, out, units)
    return RunResult(tables, report, out, len(units), done)


RECORD_SUFFIX = ".csv.gz"
"""The tables of a directory of record (committed results): ``OUT/<table>.csv.gz``."""


def read_record_tables(
    out_dir: str | Path, record: dict[str, Any] | None = None
) -> dict[str, pd.DataFrame]:
    """The tables of a directory of record, ``OUT/<table>.csv.gz`` (none: an empty dict).

    With the manifest's ``record`` entry, every table it lists (``tables``: file name ->
    SHA-256, :func:`table_hashes`) must be present with those bytes, so a summary is never
    made from a missing, truncated or edited table. Text is read as written (only empty
    cells are missing values), so a generated text such as ``"NA"`` stays a string.

    Raises:
        ValueError: a listed table is missing or its SHA-256 differs, a table is not listed
            (or the list is empty), or a table cannot be read (the file is named); nothing
            has been written.
    """
    out = Path(out_dir)
    listed = (record or {}).get("tables")
    if listed is not None:
        extra = sorted(p.name for p in out.glob(f"*{RECORD_SUFFIX}") if p.name not in listed)
        if extra or not listed:
            raise ValueError(
                f"{out}: {extra or 'no table'} not listed in the record's manifest "
                "(a directory of record holds exactly the tables its manifest lists)"
            )
    for name, digest in (listed or {}).items():
        path = out / name
        if not path.is_file():
            raise ValueError(f"{path} is missing: the record's manifest lists it")
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise ValueError(f"{path} differs from the SHA-256 in the record's manifest")
    tables = {}
    for p in sorted(out.glob(f"*{RECORD_SUFFIX}")):
        try:
            tables[p.name[: -len(RECORD_SUFFIX)]] = pd.read_csv(
                p, keep_default_na=False, na_values=[""]
            )
        except (OSError, EOFError, ValueError, pd.errors.ParserError) as e:
            raise ValueError(f"{p} cannot be read as a gzip CSV table: {e}") from e
    return tables


def table_hashes(out_dir: str | Path) -> dict[str, str]:
    """``file name -> SHA-256`` of every ``OUT/<table>.csv.gz`` (a record's ``tables``)."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(out_dir).glob(f"*{RECORD_SUFFIX}"))
    }


SUMMARY = "summary.json"
"""A record's summary file; its SHA-256 is the manifest's ``record["summary"]``."""


def summary_hash(out_dir: str | Path) -> str:
    """SHA-256 of ``OUT/summary.json`` (kept in a record's manifest by :func:`write_record`)."""
    return hashlib.sha256((Path(out_dir) / SUMMARY).read_bytes()).hexdigest()


def write_record_table(df: pd.DataFrame, path: str | Path) -> None:
    """Write one table of record: gzip-compressed CSV, byte-reproducible (gzip mtime 0).

    Floats are written as Python's shortest round-trip repr, so :func:`read_record_tables`
    gives back exactly the values written.
    """
    df.to_csv(path, index=False, compression={"method": "gzip", "mtime": 0})


def _git_commit() -> str:
    """The short git commit of the checkout ``tempo_lens`` runs from ("unknown" outside git)."""
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


def record_table_names(run_dir: str | Path) -> list[str]:
    """The tables a run's units wrote (``OUT/units/*.json``), plus ``judge`` if judged.

    Summary files (``claims.csv``, ``cells.csv`` ...) are outputs, not tables: they are
    rebuilt in a directory of record, never copied.
    """
    src = Path(run_dir)
    names: set[str] = set()
    for path in sorted((src / "units").glob("*.json")):
        rec = read_unit(path)
        if rec is not None:
            names.update(rec["tables"])
    if (src / "judge.csv").is_file():
        names.add("judge")
    return sorted(names)


def _same_run_or_raise(dest: Path, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Refuse to replace the record ``old`` in ``dest`` by a run of another design (``new``)."""

    def design(m: dict[str, Any]) -> tuple[Any, bool, list[str]]:
        cfg = m.get("config", {})
        return cfg.get("model"), bool(cfg.get("tiny")), [p.get("id") for p in m.get("prompts", [])]

    (m0, t0, p0), (m1, t1, p1) = design(old), design(new)
    if (m0, t0, p0) != (m1, t1, p1):

        def words(m: Any, t: bool, p: list[str]) -> str:
            return f"model {m!r}{' (tiny)' if t else ''}, {len(p)} prompts"

        raise ValueError(
            f"{dest} holds a record of another run ({words(m0, t0, p0)}); this run has "
            f"{words(m1, t1, p1)}: a record is replaced only by a rerun of the same model and "
            "prompts; choose another dest"
        )


def write_record(
    spec: ExperimentSpec,
    run_dir: str | Path,
    dest: str | Path,
    *,
    tables: Sequence[str] | None = None,
    transform: Callable[[str, pd.DataFrame], pd.DataFrame | None] | None = None,
    **record: Any,
) -> Path:
    """Copy a summarized run into a *directory of record* ``dest`` and summarize it there.

    A directory of record is the committed, auditable form of a run (``docs/results/...``):
    every table as a byte-reproducible ``<table>.csv.gz`` (:func:`write_record_table`), the
    run's manifest plus ``record`` (the ``tempo_lens`` version and git commit, the facts
    given as ``record`` -- ``wall_seconds``, ``load``, ``command`` ... -- and ``tables``:
    each file's SHA-256, checked before every summary), and the summary, report and
    figures rebuilt from those tables by ``spec.summarize`` (:func:`summarize_only`), so
    ``--summarize-only --output-dir DEST`` reproduces them without the units.

    Args:
        spec: The run's experiment (its ``summarize`` rebuilds the summary).
        run_dir: A summarized run: ``OUT/manifest.json`` and ``OUT/<table>.csv``.
        dest: The directory of record (created; tables and summary are replaced).
        tables: The tables to keep (default: the tables the units wrote, plus ``judge``
            when ``OUT/judge.csv`` exists, :func:`record_table_names`).
        transform: ``(name, table) -> table`` applied before writing (drop rows or columns
            no summary reads); returning None leaves the table out.
        record: Facts for the manifest's ``record`` entry (``wall_seconds``, ``load``,
            ``command`` ...).

    Returns:
        ``dest``.

    Raises:
        FileNotFoundError: ``run_dir`` has no manifest, or a named table is missing.
        ManifestMismatchError: ``run_dir`` holds a run of another experiment.
        ValueError: ``dest`` is ``run_dir``, ``dest`` holds another experiment's record or
            a record of another model, tiny setting or prompt set (a record is replaced only
            by a rerun of the same design), or a unit of the run is not finished (a record
            holds a whole run; the tables are collected from the units, not from CSVs an
            earlier summary left).
    """
    from tempo_lens import __version__

    src, out = Path(run_dir), Path(dest)
    if out.resolve() == src.resolve():
        raise ValueError(f"dest must differ from run_dir, got {src} for both")
    if not (src / MANIFEST).is_file():
        raise FileNotFoundError(f"{src} has no {MANIFEST}: not the output directory of a run")
    man = json.loads((src / MANIFEST).read_text(encoding="utf-8"))
    if man.get("experiment") != spec.name:
        raise ManifestMismatchError(
            f"{src} holds a run of {man.get('experiment')!r}, not {spec.name!r}"
        )
    if (out / MANIFEST).is_file():
        old = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        there = old.get("experiment")
        if there != spec.name:
            raise ValueError(
                f"{out} holds a record of {there!r}, not {spec.name!r}: choose another dest"
            )
        _same_run_or_raise(out, old, man)
    cfg = config_from_manifest(spec, man["config"])
    units = spec.units(cfg, [Prompt(**p) for p in man["prompts"]])
    collected: dict[str, pd.DataFrame] = {}
    if (src / "units").is_dir():
        todo = [u.key for u in units if read_unit(src / "units" / f"{u.key}.json") is None]
        if todo:
            raise ValueError(
                f"{src}: {len(todo)} of {len(units)} units are not finished (e.g. {todo[0]}): "
                "a directory of record holds a whole run (resume it first)"
            )
        collected = collect(src, units)  # the units, not CSVs an earlier summary left
    names = list(tables) if tables is not None else record_table_names(src)
    frames: dict[str, pd.DataFrame] = {}
    for n in names:
        if n in collected:
            frames[n] = collected[n]
        elif (src / f"{n}.csv").is_file():  # judge.csv, or a run without its units
            frames[n] = pd.read_csv(src / f"{n}.csv", keep_default_na=False, na_values=[""])
        elif tables is not None:
            raise FileNotFoundError(f"{src} has no table {n!r}: not a summarized run")
    if not frames:
        raise FileNotFoundError(f"{src} has no table: not a summarized run")
    out.mkdir(parents=True, exist_ok=True)
    for p in out.glob(f"*{RECORD_SUFFIX}"):
        p.unlink()  # a table left from an earlier record would enter the summary
    for name, df in frames.items():
        kept = transform(name, df) if transform is not None else df
        if kept is not None:
            write_record_table(kept, out / f"{name}{RECORD_SUFFIX}")
    man[RECORD] = {
        "tempo_lens": __version__,
        "commit": _git_commit(),
        **record,
        "tables": table_hashes(out),
    }
    atomic_write_json(out / MANIFEST, man)
    summarize_only(spec, out)
    if (out / SUMMARY).is_file():  # readers of the summary check it against this hash
        man[RECORD]["summary"] = summary_hash(out)
        atomic_write_json(out / MANIFEST, man)
    return out
