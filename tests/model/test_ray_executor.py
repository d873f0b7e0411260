"""The Ray executor on a real local Ray instance, tiny model.

One sweep through the experiment command line with ``--executor ray --address local
--workers 2`` (the executor starts a private local Ray instance and shuts it down) loses
two workers mid-sweep (one actor's process SIGKILLed, one actor ``ray.kill``-ed) and must
still produce the files of ``--executor local`` (floats to float32 roundoff: the workers
run torch with one thread), and leave no process behind.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from tempo_lens.experiments import isolation_ab
from tempo_lens.runner import EXECUTORS, executor_class
from tests.compare import assert_same_file

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'tempo-lens[ray]')")
from tempo_lens.runner.ray_executor import RayExecutor, pool_size  # noqa: E402

PROMPTS = [f"{i % 50 + 1} {i % 7 + 2} {i % 11 + 3} 9" for i in range(10)]


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    return kids


def _descendants(pid: int) -> set[int]:
    kids, out, todo = _children(), set(), [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_text().replace("\0", " ")[:120]
    except OSError:
        return "?"


class _Drill:
    """The CLI's Ray executor, losing two workers after the second result: the process of
    the actor that produced it is SIGKILLed (its next chunk is in flight: Ray restarts the
    actor and retries the chunk) and the other actor is ``ray.kill``-ed (gone for good: the
    executor replaces it and re-queues its chunk)."""

    def __init__(self, **kw) -> None:
        self.inner = RayExecutor(**kw)
        self.killed: dict[str, object] = {}

    def run(self, job, units):
        for i, (unit, result) in enumerate(self.inner.run(job, units)):
            if i == 1:
                me = result["worker"]
                other = next(a for a in self.inner.actors if a._actor_id.hex() != me["actor"])
                os.kill(me["pid"], signal.SIGKILL)
                ray.kill(other)
                self.killed = {"pid": me["pid"], "actor": me["actor"], "other": other}
            yield unit, result


def _argv(out: Path, *extra: str) -> list[str]:
    argv = ["--tiny", "-q", "--selection-threshold", "0.05", "--max-steps", "6"]
    argv += [a for p in PROMPTS for a in ("--prompt", p)]
    return [*argv, "--batch-size", "2", "--output-dir", str(out), *extra]


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="the leak check reads /proc")
def test_killed_workers_are_retried_and_tables_match_local(tmp_path, monkeypatch) -> None:
    assert executor_class("ray") is RayExecutor
    assert isolation_ab.main(_argv(tmp_path / "local")) == 0
    drills: list[_Drill] = []

    def factory(**kw):
        drills.append(_Drill(**kw))
        return drills[-1]

    before, ray_pids, real_shutdown = _descendants(os.getpid()), set(), ray.shutdown

    def shutdown(*args, **kw):  # every process Ray started, just before it shuts down
        ray_pids.update(_descendants(os.getpid()) - before)
        real_shutdown(*args, **kw)

    monkeypatch.setitem(EXECUTORS, "ray", factory)
    monkeypatch.setattr(ray, "shutdown", shutdown)
    argv = _argv(tmp_path / "ray", "--executor", "ray", "--address", "local", "--workers", "2")
    assert isolation_ab.main(argv) == 0
    [drill] = drills
    assert not ray.is_initialized()
    assert ray_pids, "found no Ray processes to check"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(_alive(p) for p in ray_pids):
        time.sleep(0.2)
    left = {p: _cmdline(p) for p in ray_pids if _alive(p)}
    assert not left, f"Ray left processes behind: {left}"

    assert drill.killed, "the sweep ended before the drill"
    assert drill.inner.replaced == 1

    local = sorted(p.name for p in (tmp_path / "local").iterdir() if p.is_file())
    remote = sorted(p.name for p in (tmp_path / "ray").iterdir() if p.is_file())
    assert local == remote and "runs.csv" in local
    # Ray workers run torch with one thread: floats agree to float32 roundoff, not bit for bit.
    for name in local:
        assert_same_file(tmp_path / "local" / name, tmp_path / "ray" / name)

    workers = [
        json.loads(p.read_text())["worker"] for p in (tmp_path / "ray" / "units").glob("*.json")
    ]
    assert len(workers) == 2 * len(PROMPTS)
    assert {w["device"] for w in workers} == {"cpu"}
    restarted = [w for w in workers if w["actor"] == drill.killed["actor"]]
    assert any(w["pid"] != drill.killed["pid"] for w in restarted), "no unit ran after restart"
    gone = {drill.killed["actor"], drill.killed["other"]._actor_id.hex()}
    assert {w["actor"] for w in workers} - gone, "no unit ran on a replacement actor"
    assert not drill.inner.actors  # all killed at the end


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (["--workers", "0"], "workers must be >= 1, got 0"),
        (["--num-gpus", "-1"], "num_gpus must be >= 0, got -1.0"),
        (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    ],
)
def test_bad_ray_options_exit_2_without_writing(bad, message, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert isolation_ab.main(["--tiny", "--executor", "ray", *bad, "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_pool_size_fits_the_cluster() -> None:
    total = {"CPU": 8.0, "GPU": 2.0}
    assert pool_size(total, cpus=1.0, gpus=0.0, workers=None, n_chunks=100) == 8
    assert pool_size(total, cpus=2.0, gpus=0.0, workers=None, n_chunks=100) == 4
    assert pool_size(total, cpus=1.0, gpus=0.0, workers=None, n_chunks=3) == 3
    assert pool_size(total, cpus=1.0, gpus=0.0, workers=5, n_chunks=100) == 5
    assert pool_size(total, cpus=1.0, gpus=0.0, workers=20, n_chunks=100) == 8  # never waits
    assert pool_size(total, cpus=1.0, gpus=1.0, workers=None, n_chunks=100) == 2
    assert pool_size(total, cpus=1.0, gpus=0.25, workers=None, n_chunks=100) == 8
    with pytest.raises(
        ValueError, match="needs 1 CPU and 1 GPU.*has 2 CPU and 0 GPU; use --device cpu"
    ):
        pool_size({"CPU": 2.0}, cpus=1.0, gpus=1.0, workers=None, n_chunks=1)
    with pytest.raises(ValueError, match="needs 4 CPU and 0 GPU, the Ray cluster has 2 CPU"):
        pool_size({"CPU": 2.0}, cpus=4.0, gpus=0.0, workers=None, n_chunks=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_actors_run_on_the_gpu_and_match_local(tmp_path) -> None:
    argv = ["--device", "cuda", "--address", "local", "--workers", "1"]
    assert isolation_ab.main(_argv(tmp_path / "local", "--device", "cuda")) == 0
    assert isolation_ab.main(_argv(tmp_path / "ray", "--executor", "ray", *argv)) == 0
    for name in ("runs.csv", "sibling_layers.csv", "summary.json"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    for unit in (tmp_path / "ray" / "units").glob("*.json"):
        assert json.loads(unit.read_text())["worker"]["device"].startswith("cuda"), unit.name


@pytest.mark.parametrize("module", ["__main__", "no_such_module_xyz"])
def test_script_experiment_is_refused_before_workers_start(module, tmp_path, capsys) -> None:
    """docs/experiments.md's width_vs_tau run as a script has module '__main__': a Ray worker
    could not find its SPEC, so the run is refused (one line, exit 2) before anything runs."""
    import dataclasses

    from tempo_lens.runner import run_cli

    spec = dataclasses.replace(isolation_ab.SPEC, module=module)
    out = tmp_path / "out"
    argv = ["--tiny", "--executor", "ray", "--output-dir", str(out)]
    assert run_cli(spec, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and "import the experiment by module name" in err[0]
        or ("cannot be imported" in err[0])
    ), err
    assert "ExperimentSpec(module=" in err[0]
    assert not out.exists()
