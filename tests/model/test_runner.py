"""The experiment runner: units, atomic resumable results, manifest checks, CLI errors."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import tempo_lens as tl
from tempo_lens.experiments import available, isolation_ab, pruning_layers, spec
from tempo_lens.prompts import Prompt, prompts_from_texts, read_prompts
from tempo_lens.runner import (
    LocalExecutor,
    ManifestMismatchError,
    chunks,
    run_cli,
    run_experiment,
    unit_seed,
)
from tests.compare import assert_same_file

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = [f"{i % 50 + 1} {i % 7 + 2} {i % 11 + 3} 9" for i in range(30)]


@pytest.fixture(scope="module")
def model():
    return tl.make_tiny_model()


def _cfg(**kw):
    return isolation_ab.Config(tiny=True, selection_threshold=0.05, max_steps=4, **kw)


def test_units_are_prompt_major_and_rows_are_labelled(model, tmp_path) -> None:
    res = run_experiment(
        isolation_ab.SPEC,
        _cfg(),
        tmp_path,
        model=model,
        progress=False,
        prompts=prompts_from_texts(PROMPTS[:2]),
    )
    runs = res.tables["runs"]
    assert list(zip(runs["prompt_id"], runs["mode"], strict=True)) == [
        ("p000", "isolated"),
        ("p000", "visible"),
        ("p001", "isolated"),
        ("p001", "visible"),
    ]
    assert (runs["prompt"] == [PROMPTS[0]] * 2 + [PROMPTS[1]] * 2).all()
    on_disk = pd.read_csv(tmp_path / "runs.csv")
    assert list(on_disk.columns) == list(runs.columns)
    assert sorted(p.name for p in (tmp_path / "units").iterdir()) == [
        "p000__mode=isolated.json",
        "p000__mode=visible.json",
        "p001__mode=isolated.json",
        "p001__mode=visible.json",
    ]
    assert res.n_units == 4 and res.n_skipped == 0


def test_rerun_skips_finished_units_and_limit_extends(model, tmp_path) -> None:
    prompts = prompts_from_texts(PROMPTS[:3])
    first = run_experiment(
        isolation_ab.SPEC, _cfg(), tmp_path, model=model, progress=False, prompts=prompts, limit=1
    )
    assert first.n_units == 2 and len(first.tables["runs"]) == 2
    full = run_experiment(
        isolation_ab.SPEC, _cfg(), tmp_path, model=model, progress=False, prompts=prompts
    )
    assert full.n_units == 6 and full.n_skipped == 2
    again = run_experiment(
        isolation_ab.SPEC, _cfg(), tmp_path, model=model, progress=False, prompts=prompts
    )
    assert again.n_skipped == 6
    pd.testing.assert_frame_equal(again.tables["runs"], full.tables["runs"])


def test_changed_config_or_prompts_refuses_to_mix(model, tmp_path) -> None:
    prompts = prompts_from_texts(PROMPTS[:1])
    run_experiment(
        isolation_ab.SPEC, _cfg(), tmp_path, model=model, progress=False, prompts=prompts
    )
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(ManifestMismatchError, match=r"max_steps=4->5"):
        run_experiment(
            isolation_ab.SPEC,
            isolation_ab.Config(tiny=True, selection_threshold=0.05, max_steps=5),
            tmp_path,
            model=model,
            progress=False,
            prompts=prompts,
        )
    with pytest.raises(ManifestMismatchError, match="prompts"):
        run_experiment(
            isolation_ab.SPEC,
            _cfg(),
            tmp_path,
            model=model,
            progress=False,
            prompts=prompts_from_texts(PROMPTS[1:2]),
        )
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def _cli(out: Path, *extra: str) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "tempo_lens.experiments.isolation_ab",
        "--tiny",
        "-q",
        "--selection-threshold",
        "0.05",
        "--max-steps",
        "6",
        "--output-dir",
        str(out),
    ]
    return argv + [a for p in PROMPTS for a in ("--prompt", p)] + list(extra)


def test_killed_sweep_resumes_to_identical_tables(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    subprocess.run(_cli(ref), check=True, env=env, cwd=ROOT)
    proc = subprocess.Popen(_cli(cut), env=env, cwd=ROOT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((cut / "units").glob("*.json"))) >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the sweep finished before it could be killed"
    n_done = len(list((cut / "units").glob("*.json")))
    assert 3 <= n_done < 2 * len(PROMPTS)
    for unit in (cut / "units").glob("*.json"):  # no half-written unit: every file parses
        json.loads(unit.read_text())
    subprocess.run(_cli(cut), check=True, env=env, cwd=ROOT)
    assert not list((cut / "units").glob(".*.tmp"))  # a write the kill interrupted is removed
    for name in ("runs.csv", "sibling_layers.csv", "summary.json"):  # batches differ after resume
        assert_same_file(cut / name, ref / name)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (["--selection-threshold", "0"], "selection_threshold"),
        (["--readout", "first"], "readout"),
        (["--prune", "relative:2"], "ratio"),
        (["--max-parallel", "-1"], "max_parallel"),
        (["--limit", "0"], "limit"),
        (["--prompts-file", "missing.txt"], "missing.txt"),
        (["--prompt", "not ids"], "not ids"),
        (["--executor", "slurm"], "slurm"),
        (["--workers", "2"], "--workers needs --executor ray"),
    ],
)
def test_bad_values_exit_2_without_writing(bad, message, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert isolation_ab.main(["--tiny", *bad, "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error:" in err[0] and message in err[0], err
    assert not out.exists()


def test_summarize_only_runs_nothing_and_refuses_bad_dirs(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    argv = ["--tiny", "-q", "--max-steps", "3", "--output-dir", str(out)]
    assert isolation_ab.main([*argv, "--limit", "1"]) == 0  # 1 of 3 prompts finished
    runs = (out / "runs.csv").read_bytes()
    for name in ("runs.csv", "summary.json", "report.txt"):
        (out / name).unlink()
    units = sorted(p.name for p in (out / "units").iterdir())
    assert isolation_ab.main(["--summarize-only", "--output-dir", str(out)]) == 0
    assert "summarized 2 of 6 units (nothing run)" in capsys.readouterr().out
    assert (out / "runs.csv").read_bytes() == runs
    assert (out / "summary.json").is_file() and (out / "report.txt").is_file()
    assert sorted(p.name for p in (out / "units").iterdir()) == units
    (tmp_path / "empty").mkdir()
    for bad in (tmp_path / "empty", tmp_path / "missing"):
        assert isolation_ab.main(["--summarize-only", "--output-dir", str(bad)]) == 2
        assert "has no manifest.json" in capsys.readouterr().err
    assert (
        isolation_ab.main(["--summarize-only", "--max-steps", "5", "--output-dir", str(out)]) == 2
    )
    assert "drop --max-steps" in capsys.readouterr().err
    other = spec("position_sharing")
    assert run_cli(other, ["--summarize-only", "--output-dir", str(out)]) == 2
    assert "holds a run of 'isolation_ab'" in capsys.readouterr().err


def test_cli_mismatch_is_one_line(tmp_path, capsys) -> None:
    argv = ["--tiny", "--quick", "-q", "--output-dir", str(tmp_path)]
    assert isolation_ab.main(argv) == 0
    assert isolation_ab.main([*argv, "--max-parallel", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different run" in err[0] and "max_parallel=8->2" in err[0]


def test_quick_keeps_few_prompts_and_short_runs(tmp_path) -> None:
    assert isolation_ab.main(["--tiny", "--quick", "-q", "--output-dir", str(tmp_path)]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["config"]["max_steps"] == isolation_ab.SPEC.quick["max_steps"]
    assert len(manifest["prompts"]) == isolation_ab.SPEC.quick_prompts
    explicit = tmp_path / "explicit"  # an option given with --quick wins over its quick value
    argv = ["--tiny", "--quick", "--max-steps", "5", "-q", "--output-dir", str(explicit)]
    assert isolation_ab.main(argv) == 0
    assert json.loads((explicit / "manifest.json").read_text())["config"]["max_steps"] == 5


def test_an_executor_that_drops_units_fails_the_run(model, tmp_path) -> None:
    class Lossy:
        def run(self, job, units):
            yield from LocalExecutor(model).run(job, units[1:])

    with pytest.raises(RuntimeError, match=r"without 1 of 4 units \(e.g. p000__mode=isolated\)"):
        run_experiment(
            isolation_ab.SPEC,
            _cfg(),
            tmp_path,
            executor=Lossy(),
            progress=False,
            prompts=prompts_from_texts(PROMPTS[:2]),
        )
    assert not (tmp_path / "runs.csv").exists()


def test_unit_seed_is_stable_and_distinct() -> None:
    assert unit_seed(0, "p000__mode=isolated") == unit_seed(0, "p000__mode=isolated")
    assert unit_seed(0, "a") != unit_seed(1, "a") != unit_seed(0, "b")
    assert 0 <= unit_seed(123, "x") < 2**31


def test_read_prompts_formats(tmp_path) -> None:
    (tmp_path / "a.txt").write_text("# comment\nfirst\n\nsecond\n")
    assert [p.text for p in read_prompts(tmp_path / "a.txt")] == ["first", "second"]
    (tmp_path / "b.csv").write_text('id,category,text\nn-1,narrative,"Once, upon"\n')
    assert read_prompts(tmp_path / "b.csv") == [Prompt("n-1", "Once, upon", "narrative")]
    (tmp_path / "c.csv").write_text("id,text\nx,a\nx,b\n")
    with pytest.raises(ValueError, match="duplicate prompt id 'x'"):
        read_prompts(tmp_path / "c.csv")
    (tmp_path / "d.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="no prompts"):
        read_prompts(tmp_path / "d.txt")


def test_available_lists_the_experiments() -> None:
    names = available()
    assert {"isolation_ab", "position_sharing", "pruning_layers", "threshold_sweep"} <= set(names)
    assert all(spec(n).name == n for n in names)  # only modules defining SPEC
    assert "findings_rules" not in names


def test_chunks_share_a_condition_and_keep_order() -> None:
    units = isolation_ab.SPEC.units(_cfg(), prompts_from_texts(PROMPTS[:3]))
    keys = [[u.key for u in c] for c in chunks(units, 2)]
    assert keys == [
        ["p000__mode=isolated", "p001__mode=isolated"],
        ["p002__mode=isolated"],
        ["p000__mode=visible", "p001__mode=visible"],
        ["p002__mode=visible"],
    ]
    assert [[u.key for u in c] for c in chunks(units, 1)] == [
        [u.key] for u in sorted(units, key=lambda u: u.condition["mode"] != "isolated")
    ]
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        chunks(units, 0)


@pytest.mark.parametrize(
    ("experiment", "cfg"),
    [
        (isolation_ab, _cfg()),
        (pruning_layers, pruning_layers.Config(tiny=True, selection_threshold=0.05, max_steps=5)),
    ],
)
def test_batched_units_equal_units_run_alone(experiment, cfg, tmp_path) -> None:
    """``run_batch`` (one generate_batch per condition) gives the tables of one unit at a
    time: tokens and decisions exactly, floats to float32 rounding."""
    prompts = prompts_from_texts(PROMPTS[:5])
    runs = {}
    for size in (1, 4):
        runs[size] = run_experiment(
            experiment.SPEC,
            cfg,
            tmp_path / str(size),
            prompts=prompts,
            executor=LocalExecutor(batch_size=size),
            progress=False,
        )
    n_cond = len(experiment.SPEC.conditions(cfg))
    assert runs[1].batches == [1] * 5 * n_cond
    assert sorted(runs[4].batches) == sorted([4, 4, 4, 4, 1] * n_cond)
    for name in runs[1].tables:
        drop = [c for c in ("wall_seconds",) if c in runs[1].tables[name].columns]
        pd.testing.assert_frame_equal(
            runs[1].tables[name].drop(columns=drop),
            runs[4].tables[name].drop(columns=drop),
            rtol=1e-5,
            atol=1e-5,
        )
    record = json.loads(next((tmp_path / "4" / "units").glob("p000*.json")).read_text())
    assert record["batch"] == 4


def test_cli_batches_by_default_and_says_so(tmp_path, capsys) -> None:
    assert isolation_ab.SPEC.batch_size == 8
    argv = ["--tiny", "--quick", "--output-dir"]
    assert isolation_ab.main([*argv, str(tmp_path / "a")]) == 0
    assert "2 sequences per forward (batches of up to 2)" in capsys.readouterr().out
    assert isolation_ab.main([*argv, str(tmp_path / "b"), "--batch-size", "1"]) == 0
    assert "4 units (0 resumed, 4 run, one unit at a time)" in capsys.readouterr().out


def test_a_killed_runs_temporary_file_is_removed_on_resume(tmp_path) -> None:
    stale = tmp_path / "units" / ".p000__mode=isolated.json.abc123.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_text('{"half": ')  # what SIGKILL during a write leaves behind
    assert isolation_ab.main(["--tiny", "--quick", "-q", "--output-dir", str(tmp_path)]) == 0
    assert not stale.exists()
    assert len(list((tmp_path / "units").glob("*.json"))) == 4


def test_an_error_inside_a_unit_propagates_instead_of_a_usage_error(tmp_path, monkeypatch):
    """A bug in experiment code is not bad input: its exception and traceback reach the
    user (exit 2 and one line would hide it)."""

    def broken(cfg, model, unit):
        raise ValueError("bug inside the unit")

    spec = dataclasses.replace(isolation_ab.SPEC, run_unit=broken, run_batch=None)
    monkeypatch.setattr(isolation_ab, "SPEC", spec)
    with pytest.raises(ValueError, match="bug inside the unit"):
        isolation_ab.main(["--tiny", "--quick", "-q", "--output-dir", str(tmp_path)])
    assert (tmp_path / "manifest.json").is_file()  # resumable once fixed
