"""Issue 21: non-finite numbers, lost outputs, durable runs, late validation, provenance.

One section per kind; each pins the issue's input and at least one sibling of it.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

import tempo_lens as tl
from tempo_lens import runner
from tempo_lens.analysis import stats
from tempo_lens.analysis.stats import bootstrap_ci, estimate, paired_tests
from tempo_lens.experiments import isolation_ab
from tempo_lens.io import atomic_write_json, atomic_write_text
from tempo_lens.prompts import prompts_from_texts
from tempo_lens.runner import options, run_cli, run_experiment
from tests.tokenizer_fixtures import byte_tokenizer, with_tokenizer

PROMPT = [1, 2, 3]


def _strict_json(path: Path) -> object:
    """``path`` parsed as RFC 8259 JSON (a NaN/Infinity token fails)."""

    def refuse(token: str) -> object:
        raise ValueError(f"{path} holds {token}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


# --------------------------------------------------------------------------- 1. non-finite
def _broken_model(value: float, where: slice | int = slice(None)):
    model = tl.make_tiny_model()
    model.unembed.b_U.data[where] = value
    return model


DECODERS = {
    "greedy": lambda m: tl.greedy(m, PROMPT, max_steps=3),
    "sample": lambda m: tl.sample(m, PROMPT, max_steps=3),
    "beam_search": lambda m: tl.beam_search(m, PROMPT, max_steps=3),
    "generate": lambda m: tl.generate(m, PROMPT, max_steps=3),
}


@pytest.mark.parametrize("decoder", sorted(DECODERS))
@pytest.mark.parametrize(
    ("value", "where"), [(math.nan, slice(None)), (math.inf, 5)], ids=["all_nan", "one_inf"]
)
def test_every_decoder_refuses_non_finite_logits(decoder, value, where) -> None:
    with pytest.raises(ValueError, match=r"^logits contain NaN or \+inf"):
        DECODERS[decoder](_broken_model(value, where))


def test_trace_save_with_nan_refuses_before_writing(tmp_path) -> None:
    trace = tl.greedy(tl.make_tiny_model(), PROMPT, max_steps=2)
    cands = trace.steps[1].candidates
    good, cands[0] = cands[0], dataclasses.replace(cands[0], probability=math.nan)
    with pytest.raises(ValueError, match=r"steps\[1\]\.candidates\[0\]\.probability"):
        trace.save(tmp_path / "t.json")
    assert list(tmp_path.iterdir()) == []  # nothing, not even a temporary file
    cands[0] = good
    trace.extra["score"] = -math.inf  # sibling: an infinity in method data
    with pytest.raises(ValueError, match=r"extra\.score"):
        trace.to_json()


def test_json_writers_write_non_finite_as_null(tmp_path) -> None:
    obj = {"a": math.nan, "b": [np.float32("inf"), np.array([1.0, np.nan])], "c": 2}
    atomic_write_json(tmp_path / "x.json", obj)
    assert _strict_json(tmp_path / "x.json") == {"a": None, "b": [None, [1.0, None]], "c": 2}


def test_uncertainty_quick_ends_with_strict_json(tmp_path) -> None:
    from tempo_lens.experiments import uncertainty

    assert uncertainty.main(["--tiny", "--quick", "--output-dir", str(tmp_path), "-q"]) == 0
    for path in [tmp_path / "summary.json", tmp_path / "manifest.json"]:
        _strict_json(path)


def test_paired_tests_drop_and_count_one_nan() -> None:
    a = np.array([1.0, 2.0, 3.0, 4.0, math.nan, 5.0])
    t = paired_tests(a, np.zeros(6))
    assert (t.n, t.n_dropped) == (5, 1)
    assert t.wilcoxon_p == pytest.approx(2 / 32) and t.rank_biserial == 1.0
    sib = paired_tests(np.arange(1.0, 6.0), np.array([0, 0, math.inf, 0, 0]))  # sibling
    assert (sib.n, sib.n_dropped) == (4, 1) and math.isfinite(sib.t_p)


def test_estimate_and_bootstrap_share_the_nan_policy() -> None:
    x = [0.5, 0.7, math.nan, 0.9, -math.inf, 1.1]
    e = estimate(x, min_n=3)
    assert (e.n, e.n_dropped, e.direction) == (4, 2, "above")
    assert estimate(x).direction == "insufficient"  # default min_n = 10
    assert bootstrap_ci(x) == bootstrap_ci([0.5, 0.7, 0.9, 1.1])
    assert stats.n_non_finite(x) == 2


# --------------------------------------------------------------------------- 2. output errors
def _ascii_stdout(monkeypatch) -> io.BytesIO:
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="ascii"))
    return raw


@pytest.mark.parametrize("prompt", ["東京", "naïve café"], ids=["issue", "latin1"])
def test_generate_json_is_written_under_an_ascii_stdout(prompt, monkeypatch, tmp_path) -> None:
    from tempo_lens.cli import generate as gen_cmd
    from tempo_lens.cli import main
    from tempo_lens.generation import text as tl_text

    tok = byte_tokenizer()
    model = with_tokenizer(tl.make_tiny_model(d_vocab=256), tok)
    monkeypatch.setattr(gen_cmd, "load_model_from_args", lambda args: model)
    monkeypatch.setattr(tl_text, "prompt_input", lambda m, text: tok.encode(text))
    raw = _ascii_stdout(monkeypatch)
    out = tmp_path / "out.json"
    argv = ["generate", "--prompt", prompt, "--max-steps", "3", "--json", str(out), "-q"]
    assert main(argv) == 0
    sys.stdout.flush()
    assert tl.Trace.load(out).prompt == tok.encode(prompt)
    assert b"?" in raw.getvalue()  # what ascii cannot show is replaced, not an error


def test_unicode_error_is_not_a_usage_error() -> None:
    assert not options.is_usage_error(UnicodeEncodeError("ascii", "東", 0, 1, "no"))
    assert options.is_usage_error(ValueError("--max-steps must be >= 1"))


# --------------------------------------------------------------------------- 3. durable runs
def _cfg():
    return isolation_ab.Config(tiny=True, selection_threshold=0.05, max_steps=3)


def _run(out: Path, model):
    prompts = prompts_from_texts(["3 14 15 9", "2 7 18 2"])
    return run_experiment(
        isolation_ab.SPEC, _cfg(), out, model=model, progress=False, prompts=prompts
    )


@pytest.fixture(scope="module")
def model():
    return tl.make_tiny_model()


@pytest.mark.parametrize("content", ["", '{"key": "p0'], ids=["zero_byte", "truncated"])
def test_unreadable_unit_file_is_rerun_with_a_warning(content, model, tmp_path, caplog) -> None:
    first = _run(tmp_path, model)
    broken = sorted((tmp_path / "units").glob("*.json"))[1]
    broken.write_text(content)
    with caplog.at_level(logging.WARNING):
        again = _run(tmp_path, model)
    assert str(broken) in caplog.text
    assert again.n_skipped == first.n_units - 1
    assert json.loads(broken.read_text())["key"] == broken.stem
    keys = ["prompt_id", "mode", "clean_text"]
    assert again.tables["runs"][keys].equals(first.tables["runs"][keys])


def _lock(out: Path, pid: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / ".lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))


def test_second_run_is_refused_and_leaves_the_first_runs_files(model, tmp_path, capsys) -> None:
    _lock(tmp_path, os.getppid())  # a live process holds the directory
    tmp = tmp_path / "units" / ".p000__mode=isolated.json.abc.tmp"
    tmp.parent.mkdir()
    tmp.write_text("half")
    with pytest.raises(runner.RunLockedError, match=f"pid {os.getppid()}"):
        _run(tmp_path, model)
    assert tmp.read_text() == "half"  # the live run's write in flight is left alone
    argv = ["--tiny", "--quick", "--output-dir", str(tmp_path), "-q"]
    assert run_cli(isolation_ab.SPEC, argv) == 2  # sibling: the CLI, one line
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "in use by another run" in err


def test_stale_lock_of_a_dead_pid_is_taken_over(model, tmp_path) -> None:
    _lock(tmp_path, 2**22 + 12345)  # above pid_max: no such process
    tmp = tmp_path / "units" / ".p000__mode=isolated.json.abc.tmp"
    tmp.parent.mkdir()
    tmp.write_text("half")
    res = _run(tmp_path, model)
    assert res.n_skipped == 0 and not tmp.exists() and not (tmp_path / ".lock").exists()


def test_atomic_writes_fsync_file_and_directory(monkeypatch, tmp_path) -> None:
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    atomic_write_text(tmp_path / "a.txt", "x")
    assert len(synced) >= 2


# --------------------------------------------------------------------------- 7. late validation
@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--n-boot", "0"], "--n-boot: must be an int >= 1"),
        (["--level", "nan"], "--level: must be a finite number"),
        (["--alpha", "1"], "--alpha: must be in (0, 1)"),
    ],
)
def test_stats_options_refused_at_parse_time(option, message, tmp_path, capsys) -> None:
    from tempo_lens.cli import main

    assert main(["stats", "--data-dir", str(tmp_path / "none"), *option]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_positions_string_form_is_coerced() -> None:
    for kind in ("distinct", "shared"):
        assert tl.TempoConfig(positions=kind).positions == tl.PositionScheme(kind=kind)
    with pytest.raises(ValueError, match="positions must be"):
        tl.TempoConfig(positions="Distinct")
    a = tl.generate(tl.make_tiny_model(), PROMPT, tl.TempoConfig(positions="distinct"))
    b = tl.generate(
        tl.make_tiny_model(), PROMPT, tl.TempoConfig(positions=tl.PositionScheme(kind="distinct"))
    )
    assert a.clean_ids() == b.clean_ids()


def test_bootstrap_refuses_zero_resamples() -> None:
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci([1.0, 2.0, 3.0], n_boot=0)


# --------------------------------------------------------------------------- provenance
def test_traces_record_backend_and_transformer_lens_version(tmp_path) -> None:
    import importlib.metadata

    trace = tl.greedy(tl.make_tiny_model(), PROMPT, max_steps=2)
    prov = trace.provenance
    assert prov["backend"] == tl.backends.backend_of(tl.make_tiny_model()).name
    assert prov["transformer_lens"] == importlib.metadata.version("transformer-lens")
    assert tl.Trace.load(trace.save(tmp_path / "t.json")).provenance == prov
