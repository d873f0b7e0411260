"""CLI behaviour on the tiny model: bad values are one line and exit 2; JSON is written."""

from __future__ import annotations

import contextlib
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


@pytest.mark.parametrize("baseline", ["greedy", "sampling", "beam", "tree-beam", "tree-spec"])
def test_baselines_from_cli(baseline, capsys) -> None:
    assert main([*BASE, "--baseline", baseline]) == 0
    assert capsys.readouterr().out.startswith("<1><2><3>")


@pytest.mark.parametrize(("baseline", "method"), [("tree-beam", "beam"), ("tree-spec", "greedy")])
def test_tree_decoders_from_cli_equal_their_baselines(tmp_path, baseline, method) -> None:
    from tempo_lens import Trace

    paths = {b: tmp_path / f"{b}.json" for b in (baseline, method)}
    for b, path in paths.items():
        assert main([*BASE, "--baseline", b, "--json", str(path), "-q"]) == 0
    tree, plain = (Trace.load(paths[b]) for b in (baseline, method))
    assert tree.state.is_tree and tree.clean_ids() == plain.clean_ids()


def test_generation_options_are_documented_by_tempo_config(capsys) -> None:
    """Every TempoConfig field is an option of generate (or a flat spelling of a nested one)
    whose help is the field's documentation."""
    import dataclasses

    from tempo_lens import TempoConfig
    from tempo_lens.cli.gen_options import _FLAT, NESTED
    from tempo_lens.runner.options import field_docs, plain_text

    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    docs = {k: plain_text(v) for k, v in field_docs(TempoConfig).items()}
    for f in dataclasses.fields(TempoConfig):
        if f.name not in NESTED:
            assert "--" + f.name.replace("_", "-") in help_text, f.name
            assert " ".join(docs[f.name].split())[:60] in help_text, f.name
    for option, cls, name, _, _ in _FLAT:
        assert f"{option} " in help_text
        assert " ".join(plain_text(field_docs(cls)[name]).split())[:40] in help_text, option


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "--help"],
        ["analyze", "--help"],
        ["stats", "--help"],
        ["experiment", "isolation_ab", "--help"],
        ["experiment", "compare_decoders", "--help"],
        ["findings", "--help"],
    ],
)
def test_help_is_plain_text(argv, capsys) -> None:
    """Option help derived from docstrings shows no reST/Markdown markup (backquotes, roles)."""
    with contextlib.suppress(SystemExit):
        main(argv)
    out = capsys.readouterr().out
    assert out.startswith("usage: tempo-lens") and "options:" in out  # the help was printed
    assert "`" not in out and ":func:" not in out and ":mod:" not in out


def test_cli_config_equals_python_config() -> None:
    import argparse

    from tempo_lens import PruningConfig, RelativeRule, TempoConfig, ThresholdSchedule
    from tempo_lens.cli.gen_options import add_generation_options, tempo_config_from_args
    from tempo_lens.positions import PositionScheme

    p = argparse.ArgumentParser()
    add_generation_options(p)
    argv = "--prompt x --selection-threshold 0.2 --max-parallel 0 --no-kv-cache --readout top "
    argv += "--schedule linear --final-threshold 0.4 --prune relative:0.5 --lookahead 2 "
    argv += "--prune-layers late --member-offset 0.01 --prune-mode hard"
    argv += " --isolate-layers middle --isolate-heads 0,2"
    got = tempo_config_from_args(p.parse_args(argv.split()))
    assert got == TempoConfig(
        selection_threshold=0.2,
        max_parallel=None,
        use_kv_cache=False,
        readout="top",
        schedule=ThresholdSchedule(kind="linear", tau0=0.2, tau_final=0.4),
        prune=PruningConfig(rule=RelativeRule(ratio=0.5), lookahead=2, layers="late", mode="hard"),
        positions=PositionScheme(member_offset=0.01),
        isolate_layers="middle",
        isolate_heads=(0, 2),
    )


def test_experiment_subcommand_runs_the_runner(tmp_path, capsys) -> None:
    out = tmp_path / "iso"
    argv = ["experiment", "isolation_ab", "--tiny", "--quick", "--output-dir", str(out), "-q"]
    assert main(argv) == 0
    assert (out / "manifest.json").is_file() and (out / "runs.csv").is_file()
    bad = tmp_path / "bad"
    argv = ["experiment", "isolation_ab", "--tiny", "--max-steps", "0", "--output-dir", str(bad)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and err[0].startswith("tempo-lens experiment isolation_ab: error:")
    assert not bad.exists()
    assert main(["experiment", "no_such_experiment"]) == 2
    assert "unknown experiment" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["analyze", "stats", "generate", "experiment"])
def test_cli_modules_import_alone(module) -> None:
    """No import cycle: each command module imports first in a fresh interpreter."""
    import subprocess
    import sys

    code = f"import tempo_lens.cli.{module}"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
