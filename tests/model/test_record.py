"""Directories of record (``tempo-lens record``): a whole run, exactly its tables.

From a new user's trial: a record was made from CSVs an earlier summary left (a killed,
resumed run kept one prompt), an unlisted table entered a summary, a record overwrote
another experiment's, and the research record read a tiny-model run as SmolLM2's.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tempo_lens.cli import main
from tempo_lens.experiments import research_rules, spec
from tempo_lens.runner import summarize_only
from tempo_lens.runner.store import (
    read_record_tables,
    summary_hash,
    write_record,
    write_record_table,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "uncertainty"
    assert (
        main(["experiment", "uncertainty", "--tiny", "--quick", "-q", "--output-dir", str(out)])
        == 0
    )
    return out


def test_a_record_is_summarized_from_its_tables_alone(run, tmp_path) -> None:
    dest = write_record(spec("uncertainty"), run, tmp_path / "rec", command="test")
    man = json.loads((dest / "manifest.json").read_text())
    assert set(man["record"]["tables"]) == {p.name for p in dest.glob("*.csv.gz")}
    assert man["record"]["summary"] == summary_hash(dest)
    copy = tmp_path / "copy"
    shutil.copytree(dest, copy)
    summarize_only(spec("uncertainty"), copy)
    assert (copy / "summary.json").read_text() == (dest / "summary.json").read_text()


def test_an_unfinished_run_is_refused_and_stale_csvs_are_not_used(run, tmp_path) -> None:
    part = tmp_path / "part"
    shutil.copytree(run, part)
    unit = sorted((part / "units").glob("*.json"))[0]
    unit.unlink()
    with pytest.raises(ValueError, match="units are not finished"):
        write_record(spec("uncertainty"), part, tmp_path / "rec")
    assert not (tmp_path / "rec").exists()
    # the CLI says the same in one line, exit 2
    assert main(["record", str(part), str(tmp_path / "rec2")]) == 2


def test_an_unlisted_table_and_another_experiments_dest_are_refused(run, tmp_path) -> None:
    dest = write_record(spec("uncertainty"), run, tmp_path / "rec")
    tables = read_record_tables(dest, json.loads((dest / "manifest.json").read_text())["record"])
    write_record_table(tables["steps"], dest / "judge.csv.gz")  # not in the manifest
    with pytest.raises(ValueError, match="judge.csv.gz.*not listed"):
        summarize_only(spec("uncertainty"), dest)
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps({"experiment": "bottleneck"}))
    with pytest.raises(ValueError, match="holds a record of 'bottleneck'"):
        write_record(spec("uncertainty"), run, other)


def test_the_research_record_refuses_a_tiny_run_in_a_models_directory(run, tmp_path) -> None:
    res = tmp_path / "results"
    write_record(spec("uncertainty"), run, res / "research" / "uncertainty" / "smollm2")
    src = research_rules.uncertainty("SmolLM2", "next_entropy", "rho")
    with pytest.raises(ValueError, match=r"is a tiny-model run \(config.tiny\), not of 'SmolLM2"):
        src(res)


def test_a_record_is_replaced_only_by_a_rerun_of_the_same_design(run, tmp_path) -> None:
    dest = write_record(spec("uncertainty"), run, tmp_path / "rec", command="first")
    before = (dest / "manifest.json").read_text()
    write_record(spec("uncertainty"), run, dest, command="again")  # same run: replaced
    assert json.loads((dest / "manifest.json").read_text())["record"]["command"] == "again"
    other = tmp_path / "other_run"
    shutil.copytree(run, other)
    man = json.loads((other / "manifest.json").read_text())
    man["prompts"] = man["prompts"][:1]  # a different prompt set (units of the first prompt)
    (other / "manifest.json").write_text(json.dumps(man))
    after_first = (dest / "manifest.json").read_text()
    with pytest.raises(ValueError, match=r"holds a record of another run .* 1 prompts"):
        write_record(spec("uncertainty"), other, dest)
    assert (dest / "manifest.json").read_text() == after_first != before
