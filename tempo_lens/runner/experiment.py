"""The experiment runner: a sweep is a grid of units (prompt x condition), run resumably.

An experiment is an :class:`ExperimentSpec`: a frozen config dataclass (its field docs
become command-line options), ``conditions(cfg)`` (the grid per prompt), ``run_unit(cfg,
model, unit)`` returning result rows per table, and ``summarize(cfg, tables, out_dir)``
writing the summary files and returning a text report. The runner does the rest:

* **Units** are ``prompts x conditions(cfg)``, prompt-major. Each finished unit is written
  atomically to ``OUT/units/<key>.json`` as soon as it is done, so a killed sweep loses at
  most the units in flight.
* **Durability**: unit files are fsynced (file and directory) before they count; on
  resume a unit file that does not read back (empty, truncated) is logged with its name
  and the unit runs again. ``OUT/.lock`` (pid and host) keeps a second run out of the
  directory while the first is alive; a killed run's lock and temporary files are
  cleaned up by the next run.
* **Resume**: ``OUT/manifest.json`` records the experiment, the config (minus execution
  settings such as ``device``) and the prompts; once the units ran, also ``provenance``:
  the model's name, its weights' SHA-256, the backend and the TransformerLens version of
  every model that ran a unit (:func:`~tempo_lens.runner.store.unit_provenance`). Re-running the same command skips the
  finished units; a different config or prompt set raises :class:`ManifestMismatchError`
  (the CLI: one line, exit 2) rather than mixing results.
* **Tables**: after the units, every table's rows are concatenated in unit order into
  ``OUT/<table>.csv`` (each row gets ``prompt_id``, ``category`` and the condition's keys),
  then ``summarize`` runs.
* **Seeds**: one story. ``cfg.seed`` and the unit's key give the unit's seed
  (:func:`unit_seed`); torch, numpy and ``random`` are seeded with it before the unit runs,
  so a unit's result does not depend on which units ran before it, or where.
* **Executors** run units: :class:`LocalExecutor` (in process, one model) by default; a
  distributed executor implements :class:`Executor` and plugs in through
  :data:`EXECUTORS` without touching the experiment scripts.

Examples:
    >>> from tempo_lens.experiments import isolation_ab              # doctest: +SKIP
    >>> res = run_experiment(isolation_ab.SPEC, isolation_ab.Config(tiny=True),
    ...                      "out/iso", prompts=prompts_from_texts(["3 14 15"]))  # doctest: +SKIP
    >>> res.tables["runs"].head()                                   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from tempo_lens.io import atomic_write_json, jsonable
from tempo_lens.models import DEFAULT_MODEL
from tempo_lens.prompts import Prompt, packaged_prompts, prompts_from_texts
from tempo_lens.runner.executors import Executor, Job, LocalExecutor
from tempo_lens.runner.store import (
    MANIFEST,
    PROVENANCE,
    RunLock,
    RunResult,
    check_manifest,
    manifest,
    read_unit,
    unit_provenance,
    write_results,
)
from tempo_lens.runner.units import Unit

__all__ = ["ExperimentSpec", "RunConfig", "run_experiment"]

Tables = dict[str, list[dict[str, Any]]]


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Settings every experiment has.

    Attributes:
        tiny: Use the tiny random test model (prompts are token ids like "3 14 15").
        model: Offline model name (ignored with --tiny).
        device: Torch device ("cpu", "cuda", ...).
        seed: Seed of the experiment; each unit's seed derives from it and the unit's key.
    """

    tiny: bool = False
    model: str = DEFAULT_MODEL
    device: str = "cpu"
    seed: int = 0


@dataclass(frozen=True)
class ExperimentSpec:
    """What an experiment is; the runner and the CLI do everything else.

    Attributes:
        name: Experiment name (``tempo-lens experiment NAME``; the module
            ``tempo_lens.experiments.NAME`` defines ``SPEC``).
        config: Frozen config dataclass, a subclass of :class:`RunConfig`.
        run_unit: ``(cfg, model, unit) -> {table: [row, ...]}``.
        summarize: ``(cfg, {table: DataFrame}, out_dir) -> report text``; writes its files.
        description: First line of ``--help`` (default: the first line of the module's
            docstring).
        conditions: ``cfg -> [condition, ...]``: the grid applied to every prompt.
        default_prompts: Prompts for a model with a tokenizer when none are given.
        prompts_resource: A prompts file shipped in ``tempo_lens/prompts/`` (e.g.
            ``"suite.csv"``) used instead of ``default_prompts`` when set.
        tiny_prompts: Token-id prompts for the tiny model when none are given.
        tiny_model: Keywords for :func:`tempo_lens.make_tiny_model` with ``--tiny``.
        quick: Config overrides applied by ``--quick`` (a smoke run).
        quick_prompts: Number of prompts a ``--quick`` run keeps.
        run_batch: Optional ``(cfg, model, [unit, ...]) -> [tables, ...]`` running several
            units in one batched computation (used when the executor's batch size > 1; the
            units of one call always share their condition, see :func:`chunks`).
        batch_size: Units per batched call when the command line gives no ``--batch-size``
            (used only with ``run_batch``; set it where batching is exact, i.e. where the
            tables do not depend on the batch beyond float rounding).
        check_model: Optional ``(cfg, model) -> None`` raising ``ValueError`` for settings
            this model cannot take (e.g. a head it does not have); the command line calls it
            before anything is written, so the error is one line and exit 2.
        module: Module defining ``SPEC`` (workers import it to find the spec); default
            ``tempo_lens.experiments.<name>``. An experiment outside the package passes
            ``module=__name__``.
    """

    name: str
    config: type
    run_unit: Callable[[Any, Any, Unit], Tables]
    summarize: Callable[[Any, dict[str, pd.DataFrame], Path], str]
    description: str = ""
    conditions: Callable[[Any], list[dict[str, Any]]] = lambda cfg: [{}]
    default_prompts: tuple[str, ...] = ("The cat sat on the",)
    prompts_resource: str = ""
    tiny_prompts: tuple[str, ...] = ("3 14 15 9 26", "5 35 8 9 7 9", "2 7 18 28")
    tiny_model: Mapping[str, Any] = field(default_factory=dict)
    quick: Mapping[str, Any] = field(default_factory=dict)
    quick_prompts: int = 2
    run_batch: Callable[[Any, Any, list[Unit]], list[Tables]] | None = None
    batch_size: int = 1
    check_model: Callable[[Any, Any], Any] | None = None
    module: str = ""

    @property
    def module_name(self) -> str:
        """The module defining this spec (``module`` or ``tempo_lens.experiments.<name>``)."""
        return self.module or f"tempo_lens.experiments.{self.name}"

    @property
    def summary(self) -> str:
        """``description``, else the first line of the defining module's docstring."""
        if self.description:
            return self.description
        try:
            doc = importlib.import_module(self.module_name).__doc__ or ""
        except ImportError:  # not importable here (the CLI says so when it matters)
            doc = ""
        return next(iter(doc.strip().splitlines()), "")

    def prompts(self, cfg: Any) -> list[Prompt]:
        """The prompts of a run given none.

        ``tiny_prompts`` with ``cfg.tiny``, else ``prompts_resource``
        (:func:`~tempo_lens.runner.options.packaged_prompts`) or ``default_prompts``.
        """
        if getattr(cfg, "tiny", False):
            return prompts_from_texts(self.tiny_prompts)
        if self.prompts_resource:
            return packaged_prompts(self.prompts_resource)
        return prompts_from_texts(self.default_prompts)

    def units(self, cfg: Any, prompts: Sequence[Prompt]) -> list[Unit]:
        """``prompts x conditions(cfg)``, prompt-major.

        Raises:
            ValueError: two units share a key.
        """
        units = [Unit(p, dict(c)) for p in prompts for c in self.conditions(cfg)]
        keys = [u.key for u in units]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{self.name}: duplicate unit keys, e.g. {keys[0]!r}")
        return units


def run_experiment(
    spec: ExperimentSpec,
    cfg: Any,
    out_dir: str | Path,
    *,
    prompts: Sequence[Prompt] | None = None,
    model: Any = None,
    executor: Executor | None = None,
    limit: int | None = None,
    progress: bool = True,
    module: str | None = None,
) -> RunResult:
    """Run (or resume) a sweep and write its tables and summary into ``out_dir``.

    Args:
        spec: The experiment.
        cfg: Its config (an instance of ``spec.config``).
        out_dir: Output directory (created).
        prompts: The prompts; default :meth:`ExperimentSpec.prompts`.
        model: A loaded model for the local executor (default: loaded from ``cfg``).
        executor: How units run (default :class:`LocalExecutor` with ``spec.batch_size``).
        limit: Run only the first ``limit`` prompts' units (not part of the manifest: a
            later run without it resumes and completes the sweep).
        progress: Show a tqdm bar over units.
        module: Module defining ``SPEC`` (default ``spec.module_name``).

    Returns:
        The :class:`RunResult`; ``OUT/<table>.csv`` and the summary files are written.

    Raises:
        ManifestMismatchError: ``out_dir`` holds a run with another config or prompt set.
        RunLockedError: another live run holds ``out_dir`` (``OUT/.lock``: its pid and host).
        ValueError: ``limit < 1``; whatever the config or the units raise.
        RuntimeError: the executor finished without returning every unit.
    """
    if not isinstance(cfg, spec.config):
        raise TypeError(f"cfg must be a {spec.config.__name__}, got {type(cfg).__name__}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    prompts = spec.prompts(cfg) if prompts is None else list(prompts)
    if not prompts:
        raise ValueError("no prompts")
    out = Path(out_dir)
    want = manifest(spec, cfg, prompts)
    check_manifest(out / MANIFEST, want)
    units = spec.units(cfg, prompts[:limit] if limit else prompts)
    with RunLock(out):  # one run per directory; a second one stops here, writing nothing
        return _run_locked(spec, cfg, out, want, units, model, executor, progress, module)


def _run_locked(spec, cfg, out, want, units, model, executor, progress, module) -> RunResult:
    """The body of :func:`run_experiment`, run while holding ``OUT/.lock``."""
    check_manifest(out / MANIFEST, want)  # again: another run may have written it meanwhile
    unit_dir = out / "units"
    for stale in unit_dir.glob(".*.json.*.tmp"):  # a killed run's write: no live run owns it
        stale.unlink(missing_ok=True)
    todo = [u for u in units if read_unit(unit_dir / f"{u.key}.json") is None]
    atomic_write_json(out / MANIFEST, want)
    job = Job(module or spec.module_name, cfg)
    executor = executor or LocalExecutor(model, batch_size=spec.batch_size)
    bar = tqdm(
        total=len(units),
        initial=len(units) - len(todo),
        desc=spec.name,
        unit="unit",
        disable=not progress,
    )
    batches: list[int] = []
    with bar:
        for unit, result in executor.run(job, todo):
            batches.append(int(result.get("batch", 1)))
            record = {
                "key": unit.key,
                "prompt": dataclasses.asdict(unit.prompt),
                "condition": dict(unit.condition),
                **result,
            }
            atomic_write_json(unit_dir / f"{unit.key}.json", jsonable(record))
            bar.update(1)
    missing = [u.key for u in todo if read_unit(unit_dir / f"{u.key}.json") is None]
    if missing:
        raise RuntimeError(
            f"the executor returned without {len(missing)} of {len(todo)} units "
            f"(e.g. {missing[0]}); re-run to resume"
        )
    # where the results came from: model name, weights' SHA-256, backend, TransformerLens
    atomic_write_json(out / MANIFEST, {**want, PROVENANCE: unit_provenance(out, units)})
    tables, report = write_results(spec, cfg, out, units)
    return RunResult(tables, report, out, len(units), len(units) - len(todo), batches)
