"""The experiment runner: a sweep is a grid of units (prompt x condition), run resumably.

* :mod:`~tempo_lens.runner.experiment` — :class:`ExperimentSpec`, :class:`RunConfig`,
  :func:`run_experiment`;
* :mod:`~tempo_lens.runner.units` — units, their keys, seeds and batching chunks;
* :mod:`~tempo_lens.runner.executors` — how units run (:class:`LocalExecutor`, the
  :data:`EXECUTORS` registry; :mod:`~tempo_lens.runner.ray_executor` on a Ray cluster);
* :mod:`~tempo_lens.runner.store` — the manifest, unit files and collected tables;
* :mod:`~tempo_lens.runner.cli` — every experiment's command line (:func:`run_cli`);
* :mod:`~tempo_lens.runner.options` — dataclass configs as command-line options.

Experiments import the runner; the runner never imports an experiment (a :class:`Job`
names its experiment module, imported by the worker that runs it).
"""

from tempo_lens.prompts import prompts_from_texts
from tempo_lens.runner.cli import run_cli
from tempo_lens.runner.executors import (
    EXECUTORS,
    Executor,
    Job,
    LocalExecutor,
    encode,
    execute_units,
    executor_class,
)
from tempo_lens.runner.experiment import ExperimentSpec, RunConfig, run_experiment
from tempo_lens.runner.store import (
    ManifestMismatchError,
    RunLockedError,
    RunResult,
    summarize_only,
)
from tempo_lens.runner.units import Unit, chunks, unit_seed

__all__ = [
    "EXECUTORS",
    "ExperimentSpec",
    "Executor",
    "Job",
    "LocalExecutor",
    "ManifestMismatchError",
    "RunLockedError",
    "RunConfig",
    "RunResult",
    "Unit",
    "chunks",
    "encode",
    "execute_units",
    "executor_class",
    "prompts_from_texts",
    "run_cli",
    "run_experiment",
    "summarize_only",
    "unit_seed",
]
