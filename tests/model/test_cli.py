"""CLI behaviour on the tiny model: bad values are one line and exit 2; JSON is written."""

from __future__ import annotations

import json

import pytest

from tempo_lens.cli import main

BASE = ["generate", "--tiny", "--prompt", "1 2 3", "--max-steps", "3", "-q"]


@pytest.mark.parametrize(
    "extra",
    [
        ["--selection-threshold", "0"],
        ["--selection-threshold", "1.5"],
        ["--max-steps", "0"],
        ["--readout", "bogus"],
        ["--positions", "weird"],
        ["--schedule", "zigzag"],
        ["--prune", "sometimes:3"],
        ["--baseline", "oracle"],
        ["--unknown-flag"],
    ],
)
def test_bad_values_exit_2_with_one_line(extra, capsys) -> None:
    assert main([*BASE, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tempo-lens: error:")


def test_empty_prompt(capsys) -> None:
    assert main(["generate", "--tiny", "--prompt", "  "]) == 2
    assert "empty" in capsys.readouterr().err


def test_generate_writes_json_and_prints_brackets(tmp_path, capsys) -> None:
    out = tmp_path / "t.json"
    argv = [*BASE, "--selection-threshold", "0.03", "--prune", "relative:0.5", "--json", str(out)]
    assert main(argv) == 0
    assert "[" in capsys.readouterr().out
    t = json.loads(out.read_text())
    assert t["config"]["prune"]["rule"] == {"type": "RelativeRule", "ratio": 0.5}
    assert len(t["steps"]) == 3


@pytest.mark.parametrize("baseline", ["greedy", "sampling", "beam"])
def test_baselines_from_cli(baseline, capsys) -> None:
    assert main([*BASE, "--baseline", baseline]) == 0
    assert capsys.readouterr().out.startswith("<1><2><3>")
