"""Run experiment sweeps on a Ray cluster: ``--executor ray [--address ADDR]``.

:class:`RayExecutor` implements the runner's :class:`~tempo_lens.runner.Executor`: it starts
(or joins) a Ray cluster, creates a pool of actors that each load the experiment's model once
(:meth:`~tempo_lens.runner.Job.load_model`, on the config's device; with a CUDA device each
actor reserves ``num_gpus`` of a GPU), and hands them chunks of ``batch_size`` units, one chunk
per actor at a time. Each actor runs its chunk through :func:`~tempo_lens.runner.execute_units`
(the one place units run, so seeds and results are those of a local run) and the results are
yielded to the runner as each chunk finishes; the runner writes them into the usual resumable
results directory, so the final tables equal ``--executor local``'s up to float32 rounding.

Failures:

* A worker process that dies (killed, out of memory, node lost) is restarted by Ray and its
  in-flight chunk re-submitted (``max_restarts`` / ``max_task_retries``).
* An actor that is gone for good (``ray.kill``, restarts exhausted) is replaced by a new one
  and its chunk goes back to the front of the queue; a chunk that fails on more than
  ``max_retries`` workers stops the sweep with :class:`WorkerLostError` (the finished units
  are on disk; re-running the command resumes).
* An exception raised by the experiment code itself (bad prompt, bad config) is not retried:
  the original exception is re-raised in the driver, as with the local executor.

The executor calls ``ray.init`` only when Ray is not initialised yet, and then shuts it down
when the sweep ends; the actors it created are killed in every case.

Example:
    >>> from tempo_lens.runner.ray_executor import RayExecutor                    # doctest: +SKIP
    >>> run_experiment(SPEC, cfg, "out", executor=RayExecutor("auto"))    # doctest: +SKIP

Install with ``pip install 'tempo-lens[ray]'`` on the driver and on every node of the cluster.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from tempo_lens.runner.executors import Job, execute_units
from tempo_lens.runner.units import Unit, chunks

try:
    import ray
    from ray.exceptions import RayActorError, RayTaskError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "--executor ray needs Ray: pip install 'tempo-lens[ray]' (on every node)"
    ) from exc

__all__ = ["RayExecutor", "WorkerLostError", "pool_size"]

logger = logging.getLogger(__name__)


class WorkerLostError(RuntimeError):
    """A chunk of units failed on more workers than the retry budget allows."""


def pool_size(
    total: dict[str, float], cpus: float, gpus: float, workers: int | None, n_chunks: int
) -> int:
    """How many actors to start.

    As many as the cluster's resources fit, at most ``workers``, at most one per chunk. Never
    more than fit, so no actor waits forever with a chunk (on a cluster shared with other
    jobs, an actor may wait until they release resources).

    Args:
        total: The cluster's resources (``ray.cluster_resources()``).
        cpus: CPUs per actor.
        gpus: GPUs per actor (0: CPU only).
        workers: Requested number of actors, or ``None`` for as many as fit.
        n_chunks: Chunks of units to run.

    Raises:
        ValueError: not even one actor fits (e.g. a CUDA device on a cluster without GPUs).
    """
    have_cpu, have_gpu = total.get("CPU", 0.0), total.get("GPU", 0.0)
    fit = int(have_cpu // cpus)
    if gpus > 0:
        fit = min(fit, int(have_gpu // gpus))
    if fit < 1:
        raise ValueError(
            f"a worker needs {cpus:g} CPU and {gpus:g} GPU, the Ray cluster has "
            f"{have_cpu:g} CPU and {have_gpu:g} GPU"
            + ("; use --device cpu or a cluster with GPUs" if gpus > 0 and not have_gpu else "")
        )
    if workers is not None and workers > fit:
        logger.warning(
            "starting %d workers, not %d: the cluster's resources fit %d", fit, workers, fit
        )
    return max(1, min(workers or fit, fit, n_chunks))


class _Worker:
    """A Ray actor: loads the job's model on first use and runs chunks of units."""

    def __init__(self, job: Job, batch_size: int) -> None:
        self.job, self.batch_size = job, batch_size
        self.model: Any = None
        ctx = ray.get_runtime_context()
        self.where = {  # recorded in each unit's JSON: where it ran
            "host": socket.gethostname(),
            "node": ctx.get_node_id(),
            "actor": ctx.get_actor_id(),
            "pid": os.getpid(),
        }

    def run(self, units: list[Unit]) -> list[tuple[Unit, dict[str, Any]]]:
        if self.model is None:
            self.model = self.job.load_model()
            self.where["device"] = str(next(self.model.parameters()).device)
        return [
            (unit, {**result, "worker": self.where})
            for unit, result in execute_units(self.job, self.model, units, self.batch_size)
        ]


class RayExecutor:
    """Runs units on a pool of Ray actors, one model per actor.

    Args:
        address: Ray cluster address (``"auto"``, ``"HOST:6379"``, ``"ray://HOST:10001"``);
            ``"local"`` starts a private local instance for the sweep; ``None`` does what
            ``ray.init()`` does (joins ``RAY_ADDRESS`` or a cluster started with ``ray start``
            on this machine, else starts a local instance). Ignored when Ray is already
            initialised in this process.
        batch_size: Units per chunk (one :func:`~tempo_lens.runner.execute_units` call, batched
            when the experiment has ``run_batch``).
        workers: Number of actors; default (and at most) as many as the cluster's CPUs and
            GPUs fit, at most one per chunk (:func:`pool_size`).
        num_gpus: GPUs per actor (fractions share a GPU); default 1 when the config's device is
            CUDA, else 0.
        cpus_per_worker: CPUs per actor (its torch threads).
        max_retries: Worker failures one chunk may survive (Ray restarts of an actor, and
            replacements of an actor that is gone).

    Raises:
        ValueError: A setting is out of range, or the cluster cannot host one actor (e.g. a
            CUDA device on a cluster without GPUs), raised by :meth:`run`.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        batch_size: int = 1,
        workers: int | None = None,
        num_gpus: float | None = None,
        cpus_per_worker: float = 1.0,
        max_retries: int = 3,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if num_gpus is not None and not (num_gpus >= 0 and math.isfinite(num_gpus)):
            raise ValueError(f"num_gpus must be >= 0, got {num_gpus}")
        if not (cpus_per_worker > 0 and math.isfinite(cpus_per_worker)):
            raise ValueError(f"cpus_per_worker must be > 0, got {cpus_per_worker}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.address, self.batch_size, self.workers = address, batch_size, workers
        self.num_gpus = None if num_gpus is None else float(num_gpus)
        self.cpus_per_worker, self.max_retries = float(cpus_per_worker), max_retries
        self.replaced = 0  # actors replaced in the last run (lost for good)
        self._actors: list[Any] = []

    def _gpus(self, job: Job) -> float:
        if self.num_gpus is not None:
            return self.num_gpus
        return 1.0 if str(job.cfg.device).startswith("cuda") else 0.0

    @property
    def actors(self) -> list[Any]:
        """Handles of the running sweep's actors (e.g. for ``ray.kill`` in failure drills)."""
        return list(self._actors)

    def run(self, job: Job, units: Sequence[Unit]) -> Iterator[tuple[Unit, dict[str, Any]]]:
        """Yield ``(unit, result)`` for every unit, in completion order.

        Raises:
            WorkerLostError: a chunk failed on more than ``max_retries`` workers.
            ValueError: see the class; any exception the experiment code raises.
        """
        if not units:
            return
        started = not ray.is_initialized()
        if started:
            ray.init(address=self.address)
        self.replaced = 0
        try:
            yield from self._run(job, list(units))
        finally:
            for actor in self._actors:
                ray.kill(actor)
            self._actors = []
            if started:
                ray.shutdown()

    def _run(self, job: Job, units: list[Unit]) -> Iterator[tuple[Unit, dict[str, Any]]]:
        bs = self.batch_size
        queue = deque(enumerate(chunks(units, bs)))
        gpus = self._gpus(job)
        actor_cls = ray.remote(_Worker).options(
            num_cpus=self.cpus_per_worker,
            num_gpus=gpus,
            max_restarts=self.max_retries,
            max_task_retries=self.max_retries,
        )
        failures: dict[int, int] = {}
        inflight: dict[Any, tuple[Any, int, list[Unit]]] = {}

        def submit(actor: Any) -> None:
            if queue:
                cid, chunk = queue.popleft()
                inflight[actor.run.remote(chunk)] = (actor, cid, chunk)

        n = pool_size(ray.cluster_resources(), self.cpus_per_worker, gpus, self.workers, len(queue))
        self._actors = [actor_cls.remote(job, bs) for _ in range(n)]
        for actor in self._actors:
            submit(actor)
        while inflight:
            [ref], _ = ray.wait(list(inflight), num_returns=1)
            actor, cid, chunk = inflight.pop(ref)
            out: list[tuple[Unit, dict[str, Any]]] = []
            try:
                out = ray.get(ref)
            except RayTaskError as err:  # the experiment's own error: as in a local run
                raise err.cause from err
            except RayActorError as err:  # the actor is gone for good: replace it
                failures[cid] = failures.get(cid, 0) + 1
                if failures[cid] > self.max_retries:
                    keys = ", ".join(u.key for u in chunk)
                    raise WorkerLostError(
                        f"units {keys} failed on {failures[cid]} workers; last error: {err}"
                    ) from err
                queue.appendleft((cid, chunk))
                self._actors.remove(actor)
                ray.kill(actor)
                actor = actor_cls.remote(job, bs)
                self._actors.append(actor)
                self.replaced += 1
            submit(actor)
            yield from out
