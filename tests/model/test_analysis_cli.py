"""The ``analyze`` / ``stats`` commands and the two experiment scripts, end to end on --tiny."""

from __future__ import annotations

import json

import pytest

from experiments import run_attention_analysis, statistical_confidence_analysis
from tempo_lens.analysis import load_attention
from tempo_lens.cli import main
from tempo_lens.trace import Trace

GEN = ["--tiny", "--max-steps", "4", "--selection-threshold", "0.05"]


def test_cli_analyze_writes_a_complete_run(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    code = main(["analyze", "--prompt", "3 14 15 9 26", *GEN, "--output-dir", str(out)])
    assert code == 0
    for name in [
        "trace.json",
        "attention.npz",
        "attention_meta.json",
        "attention_seed.json",
        "analysis.json",
        "summary.json",
    ]:
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    trace = Trace.load(out / "trace.json")
    assert summary["summary"]["total_steps"] == len(trace.steps) == 4
    assert summary["isolation"]["max_sibling_attention"] == 0.0
    assert summary["received"]["n_parallel"] > 0
    assert summary["capture"]["bytes"] > 0
    seed = json.loads((out / "attention_seed.json").read_text())
    assert [s["logical_step"] for s in seed["steps"]] == [0, 1, 2, 3]
    assert load_attention(out).trace.to_dict() == trace.to_dict()
    assert "ratio=" in capsys.readouterr().out


def test_script_visible_layers_heads(tmp_path) -> None:
    out = tmp_path / "vis"
    argv = ["--prompt", "1 2 3", *GEN, "--no-isolate", "--layers", "1", "--heads", "0,3"]
    assert run_attention_analysis.main([*argv, "--output-dir", str(out), "--float16", "-q"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["isolation"]["max_sibling_attention"] > 0
    assert summary["capture"]["layers"] == [1] and summary["capture"]["heads"] == [0, 3]
    assert summary["capture"]["dtype"] == "float16"


@pytest.mark.parametrize(
    "bad",
    [
        ["--selection-threshold", "0"],
        ["--heads", "9"],
        ["--layers", "7"],
        ["--prompts-file", "missing.txt"],
        ["--top-k", "0"],
    ],
)
def test_bad_input_exit_2_nothing_written(tmp_path, capsys, bad) -> None:
    out = tmp_path / "bad"
    argv = ["--prompt", "1 2 3", "--tiny", "--max-steps", "2", "--output-dir", str(out), *bad]
    assert run_attention_analysis.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error:" in err[0]
    assert not out.exists()


def test_stats_over_three_tiny_runs(tmp_path, capsys) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# tiny prompts are token ids\n3 14 15 9 26\n2 7 1 8\n\n11 5 40 2\n")
    out = tmp_path / "runs"
    code = run_attention_analysis.main(
        ["--prompts-file", str(prompts), *GEN, "--output-dir", str(out), "-q"]
    )
    assert code == 0
    assert [r["dir"] for r in json.loads((out / "runs.json").read_text())] == [
        "run_000",
        "run_001",
        "run_002",
    ]
    capsys.readouterr()
    assert statistical_confidence_analysis.main(["--data-dir", str(out), "--plain"]) == 0
    printed = capsys.readouterr().out
    assert "ratio mean [CI]" in printed
    assert statistical_confidence_analysis.main(["--data-dir", str(out)]) == 0
    rich = capsys.readouterr().out  # the rich table shows the cells as typed (issue 10)
    for line in printed.splitlines()[:11]:
        value = line.split("  ")[-1].strip()
        assert value in rich, value  # e.g. "nan [nan, nan]", not "nan"
    stats = json.loads((out / "stats.json").read_text())
    assert stats["n_runs"] == 3
    assert stats["verdict"].startswith("insufficient data")  # 3 < min_samples = 5
    assert (
        main(["stats", "--data-dir", str(out), "--min-samples", "3", "--repetition-threshold", "1"])
        == 0
    )
    stats = json.loads((out / "stats.json").read_text())
    assert not stats["verdict"].startswith("insufficient")
    assert stats["tests"]["n"] == stats["n_used"] == 3
    assert main(["stats", "--data-dir", str(tmp_path / "nope")]) == 2
