"""Executors: how a sweep's units run — in process, or on a Ray cluster.

An :class:`Executor` takes a :class:`Job` (the experiment module and its config; picklable)
and units, and yields ``(unit, result)`` as each finishes. :func:`execute_units` is the one
place a unit is seeded and run; every executor goes through it. Executors are found by
name in :data:`EXECUTORS`, an explicit name -> ``"module:Class"`` table imported on use
(Ray is imported only when ``--executor ray`` asks for it); a new executor is one module
and one entry there.
"""

from __future__ import annotations

import importlib
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import torch

from tempo_lens.prompts import Prompt
from tempo_lens.runner.units import Unit, chunks, unit_seed

if TYPE_CHECKING:
    from tempo_lens.runner.experiment import ExperimentSpec

__all__ = [
    "EXECUTORS",
    "Executor",
    "Job",
    "LocalExecutor",
    "encode",
    "execute_units",
    "executor_class",
]


@dataclass(frozen=True)
class Job:
    """Everything a worker needs to run units: picklable (the spec is found by module)."""

    module: str
    cfg: Any

    @property
    def spec(self) -> ExperimentSpec:
        """The experiment's :class:`ExperimentSpec` (imported from :attr:`module`)."""
        spec: ExperimentSpec = importlib.import_module(self.module).SPEC
        return spec

    def load_model(self) -> Any:
        """The model the config names (the tiny random model with ``tiny``)."""
        from tempo_lens.models import load_model, make_tiny_model

        if self.cfg.tiny:
            return make_tiny_model(device=self.cfg.device, **self.spec.tiny_model)
        return load_model(self.cfg.model, device=self.cfg.device)


def encode(model: Any, prompt: Prompt) -> list[int]:
    """Token ids of ``prompt`` (ids like ``"3 14 15"`` when the model has no tokenizer)."""
    from tempo_lens.generation.text import encode_prompt, prompt_input

    return encode_prompt(model, prompt_input(model, prompt.text))


def execute_units(
    job: Job, model: Any, units: Sequence[Unit], batch_size: int = 1
) -> Iterator[tuple[Unit, dict[str, Any]]]:
    """Run ``units`` on ``model``; yields ``(unit, result)`` as each finishes.

    ``result = {"tables", "seconds", "seed", "batch", "provenance"}`` (``batch``: units
    in the batched call that ran it; ``seconds``: that call's time divided by them;
    ``provenance``: :func:`tempo_lens.backends.provenance` of ``model``, the model's
    name, weights' SHA-256, backend and TransformerLens version; absent for a stand-in
    that is no TransformerLens model). With
    ``spec.run_batch`` and ``batch_size > 1`` the units run in :func:`chunks`. Every
    executor runs units through here.
    """
    spec, cfg = job.spec, job.cfg
    origin = _provenance(model)
    batched = spec.run_batch is not None and batch_size > 1
    for chunk in chunks(units, batch_size) if batched else [[u] for u in units]:
        seed = unit_seed(cfg.seed, chunk[0].key)
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        t0 = time.perf_counter()
        if batched and spec.run_batch is not None:
            outs = spec.run_batch(cfg, model, chunk)
        else:
            outs = [spec.run_unit(cfg, model, chunk[0])]
        seconds = (time.perf_counter() - t0) / len(chunk)
        for unit, tables in zip(chunk, outs, strict=True):
            yield (
                unit,
                {
                    "tables": tables,
                    "seconds": seconds,
                    "seed": seed,
                    "batch": len(chunk),
                    "provenance": origin,
                },
            )


def _provenance(model: Any) -> dict[str, Any] | None:
    """``provenance(model)``, or None for a stand-in model (tests pass plain objects)."""
    from tempo_lens.backends import provenance  # a model is loaded: its library is too

    try:
        return provenance(model)
    except (TypeError, AttributeError):
        return None


@runtime_checkable
class Executor(Protocol):
    """Runs units and yields ``(unit, result)`` as they finish (any order)."""

    def run(self, job: Job, units: Sequence[Unit]) -> Iterator[tuple[Unit, dict[str, Any]]]:
        """Run ``units``; yield ``(unit, result)`` as each finishes (any order)."""
        ...


class LocalExecutor:
    """Runs units in this process on one model (loaded once, or the one given)."""

    def __init__(self, model: Any = None, *, batch_size: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.batch_size = model, batch_size

    def run(self, job: Job, units: Sequence[Unit]) -> Iterator[tuple[Unit, dict[str, Any]]]:
        """Run ``units`` in this process; yields ``(unit, result)`` as each finishes."""
        if not units:
            return
        model = self.model if self.model is not None else job.load_model()
        yield from execute_units(job, model, units, self.batch_size)


EXECUTORS: dict[str, str | Callable[..., Executor]] = {
    "local": "tempo_lens.runner.executors:LocalExecutor",
    "ray": "tempo_lens.runner.ray_executor:RayExecutor",
}
"""Executor name -> ``"module:Class"`` (imported on use) or a factory."""


def executor_class(name: str) -> Callable[..., Executor]:
    """The executor factory registered as ``name`` in :data:`EXECUTORS`, imported on use.

    Raises:
        KeyError: ``name`` is not registered (the message lists the known names).
        ImportError: its module cannot be imported (e.g. Ray is not installed).
    """
    if name not in EXECUTORS:
        raise KeyError(f"unknown executor {name!r}; known: {', '.join(EXECUTORS)}")
    entry = EXECUTORS[name]
    if not isinstance(entry, str):
        return entry
    module, _, cls = entry.partition(":")
    factory: Callable[..., Executor] = getattr(importlib.import_module(module), cls)
    return factory
