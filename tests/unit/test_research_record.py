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


def _write_record(res: Path, experiment: str, name: str, table: pd.DataFrame) -> None:
    """A minimal SmolLM2 directory of record with one table (prompts from the table)."""
    d = res / "research" / experiment / "smollm2"
    d.mkdir(parents=True)
    write_record_table(table, d / name)
    digest = hashlib.sha256((d / name).read_bytes()).hexdigest()
    prompts = table[["prompt_id", "category"]].drop_duplicates()
    (d / "manifest.json").write_text(
        json.dumps(
            {
                "experiment": experiment,
                "config": {"model": "SmolLM2-135M-Instruct", "tiny": False},
                "prompts": [
                    {"id": p, "text": p, "category": c}
                    for p, c in zip(prompts["prompt_id"], prompts["category"], strict=True)
                ],
                "record": {"tables": {name: digest}},
            }
        )
    )


def _prompts48() -> list[tuple[str, str, int]]:
    """(id, category, fold): 12 categories x prompts 05-08, folds 05-06 -> 0 and 07-08 -> 1."""
    return [(f"c{c:02d}_{k:02d}", f"c{c:02d}", int(k >= 7)) for c in range(12) for k in range(5, 9)]


def _patching(best: dict[int, tuple[int, int]], size: float, seed: int = 0) -> pd.DataFrame:
    """z recoveries: noise ~0.01 everywhere, ``size`` more at fold f's head ``best[f]``."""
    rng = np.random.default_rng(seed)
    rows = []
    for pid, cat, fold in _prompts48():
        for layer in range(4):
            rows.append(dict(prompt_id=pid, category=cat, kind="resid_pre", layer=layer, head=-1,
                             recovery=layer / 3))  # fmt: skip
            for head in range(3):
                rec = 0.01 * rng.standard_normal() + (size if best[fold] == (layer, head) else 0.0)
                rows.append(dict(prompt_id=pid, category=cat, kind="z", layer=layer, head=head,
                                 recovery=rec))  # fmt: skip
    return pd.DataFrame(rows)


def test_r10_measures_each_fold_at_the_head_the_other_fold_chose(tmp_path) -> None:
    res = tmp_path / "results"
    # the same head is best in both folds: found, measured, concentrated
    t = _patching({0: (2, 1), 1: (2, 1)}, size=0.3)
    _write_record(res, "isolation_patching", "patching.csv.gz", t)
    main, half = rules.head_concentration("SmolLM2")(res)
    assert "measured at L2H1 on prompts 5–6 and L2H1 on 7–8" in main.measure
    want = t[(t["kind"] == "z") & (t["layer"] == 2) & (t["head"] == 1)]["recovery"].mean()
    assert main.estimate == pytest.approx(want) and main.n == 48
    assert main.verdict == "one head carries ≥ 10 % (concentrated)"
    assert half.estimate == 2  # resid_pre recovery layer/3 first reaches 0.5 at layer 2
    # a different best head per fold: each fold is measured at the other's head -> ~0
    shutil.rmtree(res)
    t = _patching({0: (1, 0), 1: (3, 2)}, size=0.3)
    _write_record(res, "isolation_patching", "patching.csv.gz", t)
    main, _ = rules.head_concentration("SmolLM2")(res)
    assert "measured at L3H2 on prompts 5–6 and L1H0 on 7–8" in main.measure
    assert abs(main.estimate) < 0.01
    assert main.verdict == "no head carries 10 % (spread over heads)"


def test_r11_steering_is_cross_fitted_with_its_descriptives_at_the_same_cells(tmp_path) -> None:
    rng = np.random.default_rng(1)
    rows = []
    for pid, cat, _ in _prompts48():
        for layer in range(3):
            for beta in (-3.0, 3.0):
                hit = (layer, beta) == (1, 3.0)
                rows.append(
                    dict(prompt_id=pid, category=cat, layer=layer, beta=beta,
                         kl_parallel=(0.2 if hit else 0.0) + 0.005 * rng.random(),
                         kl_nonparallel=0.05 if hit else 0.0,
                         dwidth_parallel=-0.5 if hit else 0.0)
                )  # fmt: skip
    t = pd.DataFrame(rows)
    res = tmp_path / "results"
    _write_record(res, "layer_intervention", "layers.csv.gz", t)
    main, spec_, width = rules.steering("SmolLM2")(res)
    assert "measured at layer 1, β +3 on prompts 5–6 and layer 1, β +3 on 7–8" in main.measure
    hit = t[(t["layer"] == 1) & (t["beta"] == 3.0)]
    assert main.estimate == pytest.approx(hit["kl_parallel"].mean())
    assert main.verdict == "one layer's bias steers"
    assert spec_.estimate == pytest.approx((hit["kl_parallel"] - hit["kl_nonparallel"]).mean())
    assert width.estimate == pytest.approx(-0.5)


def test_r9_rows_are_the_paired_differences_of_the_committed_runs_table() -> None:
    """4.1 / 7.2 recomputed with pandas from ``runs``; 4.2 against 0.5 from ``sets``."""
    d = RESULTS / "research" / "compare_decoders" / "smollm2"
    runs = pd.read_csv(d / "runs.csv.gz")
    pp = runs.groupby(["method", "prompt_id"])["cos_distance"].mean().unstack("method")
    tempo = "tempo/isolated/tau=0.1/none"
    a41 = rules.decoders("SmolLM2", "4.1")(RESULTS)[0]
    beam = a41.measure.split("TEMPO − ")[1].split(" ")[0]
    diff = (pp[tempo] - pp[beam]).dropna()
    assert (a41.estimate, a41.n) == (pytest.approx(diff.mean()), len(diff))
    a72 = rules.decoders("SmolLM2", "7.2")(RESULTS)[0]
    diff = (pp[tempo] - pp["sampling/top_p=0.9"]).dropna()
    assert (a72.estimate, a72.n) == (pytest.approx(diff.mean()), len(diff))
    assert a72.ci[1] < 0 and a72.verdict == "TEMPO explores a narrower space"
    sets = pd.read_csv(d / "sets.csv.gz")
    t = sets[sets["method"] == tempo]
    conv = (t["convergence_depth"] <= 3).astype(float).groupby(t["prompt_id"]).mean()
    a42, a42_horizon = rules.decoders("SmolLM2", "4.2")(RESULTS)
    assert a42_horizon.estimate > a42.estimate  # the 6-token share counts later meetings too
    assert (a42.estimate, a42.n) == (pytest.approx(conv.mean()), len(conv))
    hi = a42.ci[1]
    assert (a42.verdict == "most paths stay apart") == (hi < 0.5)


def test_a_results_dir_without_results_or_with_a_foreign_summary_is_refused(
    tmp_path, capsys
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert research.main(["--results-dir", str(empty), "--output", str(tmp_path / "a.md")]) == 2
    assert "holds no committed results" in capsys.readouterr().err
    res = _copy_results(tmp_path)
    (res / "tree_comparison" / "summary.json").write_text(json.dumps({"n_prompts": 1}))
    assert research.main(["--results-dir", str(res), "--output", str(tmp_path / "b.md")]) == 2
    err = capsys.readouterr().err
    assert "question 7.1" in err and "KeyError" in err
    assert not (tmp_path / "a.md").exists() and not (tmp_path / "b.md").exists()


def test_an_edited_summary_of_record_is_refused(tmp_path) -> None:
    res = _copy_results(tmp_path)
    path = res / "research" / "uncertainty" / "smollm2" / "summary.json"
    s = json.loads(path.read_text())
    s["n_prompts"] = 1000
    path.write_text(json.dumps(s))
    with pytest.raises(
        ValueError, match="uncertainty/smollm2/summary.json differs from the SHA-256"
    ):
        research.build(res)
