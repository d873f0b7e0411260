"""docs/research.md is rebuilt from the committed tables; its rules compute what they say.

* the committed record equals what ``tempo-lens research`` builds from ``docs/results/``
  (so no number in it can drift from its table), and ``--check`` says so;
* a damaged table is refused, naming it; a changed value (re-hashed) changes the record;
* R1's critical-offset and scaling rules, R3's equivalence rule and the status rule on
  constructed tables, against hand computations (scipy for the rank correlation).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from tempo_lens.experiments import research
from tempo_lens.experiments import research_rules as rules
from tempo_lens.runner.store import write_record_table

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"
RECORD = ROOT / "docs" / "research.md"


def test_the_committed_record_is_rebuilt_from_the_tables_without_a_difference() -> None:
    assert research.build(RESULTS) == RECORD.read_text(encoding="utf-8")
    assert research.main(["--results-dir", str(RESULTS), "--output", str(RECORD), "--check"]) == 0


def test_every_question_of_the_notes_has_a_row_and_none_is_left_without_an_answer() -> None:
    notes_ids = [
        f"{s}.{i}"
        for s, k in zip(range(1, 11), (3, 3, 3, 3, 2, 2, 3, 3, 3, 3), strict=True)
        for i in range(1, k + 1)
    ]
    assert [q.id for q in research.QUESTIONS] == notes_ids
    text = RECORD.read_text(encoding="utf-8")
    for q in notes_ids:
        assert f"\n| {q} |" in text


def _copy_results(tmp_path: Path) -> Path:
    dest = tmp_path / "results"
    shutil.copytree(RESULTS, dest)
    return dest


def _rehash(record_dir: Path) -> None:
    man = json.loads((record_dir / "manifest.json").read_text())
    man["record"]["tables"] = {
        name: hashlib.sha256((record_dir / name).read_bytes()).hexdigest()
        for name in man["record"]["tables"]
    }
    (record_dir / "manifest.json").write_text(json.dumps(man))


def test_a_damaged_table_is_refused_naming_it(tmp_path) -> None:
    res = _copy_results(tmp_path)
    judge = res / "findings" / "smollm2" / "judge.csv.gz"
    judge.write_bytes(judge.read_bytes()[:-20])
    with pytest.raises(ValueError, match="judge.csv.gz"):
        research.build(res)
    assert research.main(["--results-dir", str(res), "--output", str(tmp_path / "r.md")]) == 2
    assert not (tmp_path / "r.md").exists()


def test_a_changed_value_changes_the_record_and_check_fails(tmp_path) -> None:
    res = _copy_results(tmp_path)
    rec = res / "findings" / "smollm2"
    with gzip.open(rec / "judge.csv.gz") as f:
        j = pd.read_csv(f, keep_default_na=False, na_values=[""])
    j.loc[j["mode"] == "isolated", "judge_nll"] += 0.5  # isolation made worse by 0.5 nats
    write_record_table(j, rec / "judge.csv.gz")
    _rehash(rec)
    text = research.build(res)
    assert text != RECORD.read_text(encoding="utf-8")
    assert "isolation harms" in text
    assert research.main(["--results-dir", str(res), "--output", str(RECORD), "--check"]) == 1


def _sharing_table(gap_at: dict[float, float], n_prompts: int = 12, seed: int = 0) -> pd.DataFrame:
    """attention rows: distinct T = 1; shared T = exp(gap_at[0]); offset δ T = exp(gap_at[δ])."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_prompts):
        for n in (1, 2, 3, 5):
            for layer in (0, 1):
                noise = lambda: float(np.exp(rng.normal(0, 0.01)))  # noqa: E731
                rows.append(
                    dict(
                        prompt_id=f"p{p}",
                        n=n,
                        scheme="distinct",
                        delta=None,
                        layer=layer,
                        attention_set_total=noise(),
                    )
                )
                for d, g in gap_at.items():
                    rows.append(
                        dict(
                            prompt_id=f"p{p}",
                            n=n,
                            scheme="shared" if d == 0 else "offset",
                            delta=d,
                            layer=layer,
                            attention_set_total=math.exp(g * (n if d == 0 else 1)) * noise(),
                        )
                    )
    return pd.DataFrame(rows)


def _write_sharing(tmp_path: Path, table: pd.DataFrame, model: str = "smollm2") -> Path:
    res = tmp_path / "results"
    d = res / "research" / "position_sharing" / model
    d.mkdir(parents=True)
    write_record_table(table, d / "attention.csv.gz")
    digest = hashlib.sha256((d / "attention.csv.gz").read_bytes()).hexdigest()
    (d / "manifest.json").write_text(
        json.dumps(
            {
                "experiment": "position_sharing",
                "config": {"model": "SmolLM2-135M-Instruct", "tiny": False},
                "prompts": [],
                "record": {"tables": {"attention.csv.gz": digest}},
            }
        )
    )
    return res


def test_r1_critical_offset_is_the_smallest_delta_that_stays_within_ten_percent(tmp_path) -> None:
    # shared: gap -0.1*n; offsets: 0.001 and 0.01 still 30 % low, from 0.1 on at the control
    res = _write_sharing(
        tmp_path, _sharing_table({0.0: -0.1, 0.001: -0.3, 0.01: -0.3, 0.1: 0.0, 1.0: 0.01})
    )
    answers = rules.critical_offset("SmolLM2")(res)
    assert answers[0].verdict == "below control"
    assert answers[1].verdict == "recovers at δ = 0.1"
    assert answers[1].estimate == 0.1
    by_delta = {a.measure: a for a in answers[2:]}  # every offset, descriptive
    assert abs(by_delta["log T offset − log T distinct (δ = 0.1)"].estimate) < 0.02
    assert (
        by_delta["log T offset − log T distinct (δ = 0.01)"].verdict
        == "descriptive (below control)"
    )
    # shared already within 10 %: nothing to recover, whatever larger offsets do
    res3 = _write_sharing(tmp_path / "c", _sharing_table({0.0: 0.01, 0.1: -0.3}))
    assert rules.critical_offset("SmolLM2")(res3)[1].verdict == "no down-weighting to recover"
    # a larger delta that falls out again moves the critical offset past it
    res2 = _write_sharing(
        tmp_path / "b", _sharing_table({0.0: -0.1, 0.1: 0.0, 0.5: -0.3, 1.0: 0.0})
    )
    assert rules.critical_offset("SmolLM2")(res2)[1].verdict == "recovers at δ = 1"


def test_r1_scaling_rho_equals_scipy_per_prompt(tmp_path) -> None:
    table = _sharing_table({0.0: -0.1, 0.1: 0.0})
    res = _write_sharing(tmp_path, table)
    (ans,) = rules.sharing_scaling("SmolLM2")(res)
    t = table.groupby(["prompt_id", "n", "scheme"], as_index=False)["attention_set_total"].mean()
    rhos = []
    for _, d in t[t["n"] >= 2].groupby("prompt_id"):
        sh = d[d["scheme"] == "shared"].set_index("n")["attention_set_total"]
        di = d[d["scheme"] == "distinct"].set_index("n")["attention_set_total"]
        rhos.append(spearmanr(sh.index, np.log(sh) - np.log(di)).statistic)
    assert ans.estimate == pytest.approx(np.mean(rhos))
    assert ans.verdict == "supported (penalty grows with n)"  # the gap is -0.1 n


def test_status_counts_the_sample_and_the_preregistration() -> None:
    q = research.QUESTIONS[0]
    a = rules.Answer("SmolLM2", "m", 1.0, (0.0, 2.0), 40, "supported", "results/x", True, 48)
    b = rules.Answer("Gemma 3", "m", 1.0, (0.0, 2.0), 40, "supported", "results/y", True, 48)
    assert research.status(q, [a]) == "answered: pre-registered, n ≥ 48, one family"
    assert research.status(q, [a, b]) == "answered: pre-registered, n ≥ 48, two families"
    small = rules.Answer("SmolLM2", "m", 1.0, None, 6, "x", "results/x", True, 6)
    assert research.status(q, [small]).startswith("first answer: pre-registered, n < 48")
    post = rules.Answer("SmolLM2", "m", 1.0, None, 96, "x", "results/x", False, 96)
    assert research.status(q, [post]) == "first answer: post hoc (exploratory)"
    assert research.status(q, []) == "open: not yet measured"


RECORDS = sorted(p.parent for p in (RESULTS / "research").glob("*/*/manifest.json"))


@pytest.mark.parametrize("record", RECORDS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_each_research_record_rebuilds_its_summary_from_its_tables(record: Path, tmp_path) -> None:
    """``--summarize-only`` in a copy of the directory of record gives the committed summary."""
    from tempo_lens.experiments import spec
    from tempo_lens.runner import summarize_only

    copy = tmp_path / record.name
    shutil.copytree(record, copy)
    name = json.loads((record / "manifest.json").read_text())["experiment"]
    summarize_only(spec(name), copy)
    for out in ("summary.json", "report.txt"):
        if (record / out).is_file():
            assert (copy / out).read_text() == (record / out).read_text(), out
