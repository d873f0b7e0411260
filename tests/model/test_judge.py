"""``tempo-lens judge`` on a tiny judge with a real tokenizer: NLLs equal a direct
``token_nll``, keys are validated before the model loads, and ``findings-judge`` scores
its units with the same implementation."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from tempo_lens.cli import main as cli_main


@pytest.fixture(scope="module")
def judge():
    from tempo_lens.models import make_tiny_model
    from tests.tokenizer_fixtures import metaspace_tokenizer, with_tokenizer

    return with_tokenizer(make_tiny_model(d_vocab=7), metaspace_tokenizer())


def _runs(tmp_path, name: str = "runs.csv"):
    rows = [
        {"prompt_id": f"p{i}", "prompt": "The cat", "schedule": s, "threshold": t,
         "clean_text": text, "other": 1}
        for i, text in enumerate(["The cat sat on", "The cat mat mat", "The cat"])
        for s, t in (("greedy", None), ("constant", 0.1), ("linear", 0.1))
    ]  # fmt: skip
    rows[3]["clean_text"] = None  # an empty text: NaN, 0 judge tokens
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    pd.DataFrame(rows).to_csv(run / name, index=False)
    return run, rows


def test_judge_nll_equals_token_nll_and_keys_are_copied(judge, tmp_path) -> None:
    from tempo_lens.analysis.quality import token_nll
    from tempo_lens.experiments.judge import judge_file

    run, rows = _runs(tmp_path)
    path = judge_file(run, "runs.csv", ["schedule", "threshold"], judge, "tiny", progress=False)
    assert path == run / "judge.csv"
    j = pd.read_csv(path, keep_default_na=False, na_values=[""])
    cols = ["prompt_id", "schedule", "threshold", "judge", "judge_nll", "judge_tokens"]
    assert list(j.columns) == cols
    assert j["prompt_id"].tolist() == [r["prompt_id"] for r in rows]
    assert j["schedule"].tolist() == [r["schedule"] for r in rows]
    assert j["threshold"].isna().tolist() == [r["threshold"] is None for r in rows]
    assert set(j["judge"]) == {"tiny"}
    checked = 0
    for r, (_, got) in zip(rows, j.iterrows(), strict=True):
        head = judge.to_tokens(r["prompt"])[0].tolist()
        text = r["clean_text"] or ""
        generated = text[len(r["prompt"]) :] if text.startswith(r["prompt"]) else text
        tail = judge.tokenizer.encode(generated, add_special_tokens=False)  # the prompt once
        if not tail:
            assert math.isnan(got["judge_nll"]) and got["judge_tokens"] == 0
            continue
        want = float(token_nll(judge, head + tail, start=len(head)).mean())
        assert got["judge_nll"] == pytest.approx(want, rel=1e-12, abs=1e-12)
        assert got["judge_tokens"] == len(tail)
        checked += 1
    assert checked == 5  # "The cat" alone has no continuation; one text is missing


def test_judge_cli_errors_name_the_value(judge, tmp_path, capsys) -> None:
    """Each bad value: exit 2, one line naming it, nothing written (the model never loads:
    the judge name is bogus, so reaching load_model would give a different error)."""
    run, _ = _runs(tmp_path)

    def err(*extra: str) -> str:
        argv = ["judge", "--output-dir", str(run), "--judge-model", "no-such-judge", *extra]
        assert cli_main(argv) == 2
        return capsys.readouterr().err

    assert "nosuch.csv does not exist" in err("--table", "nosuch.csv")
    assert "no key column 'schedul'" in err("--table", "runs.csv", "--keys", "schedul")
    assert "do not identify the rows" in err("--table", "runs.csv", "--keys", "threshold")
    assert "empty name" in err("--table", "runs.csv", "--keys", "schedule,,threshold")
    assert "names 'schedule' twice" in err("--table", "runs.csv", "--keys", "schedule,schedule")
    assert "cannot name 'judge_nll'" in err("--table", "runs.csv", "--keys", "judge_nll")
    pd.DataFrame({"prompt_id": ["a"], "prompt": ["x"]}).to_csv(run / "bad.csv", index=False)
    assert "no column 'clean_text'" in err("--table", "bad.csv")
    # valid table and keys: only then the model is loaded (and the bogus name refused)
    assert "no-such-judge" in err("--table", "runs.csv", "--keys", "schedule,threshold")
    assert not (run / "judge.csv").exists()


def test_findings_judge_units_are_the_generic_judge(judge, tmp_path) -> None:
    """findings-judge's unit columns equal tempo-lens judge's on the same per-prompt table
    with keys readout,mode,tau (one implementation), greedy columns added."""
    from tempo_lens.experiments.findings_judge import judge_run
    from tempo_lens.experiments.judge import judge_file

    rows = [
        {"prompt_id": f"p{i}", "prompt": "The cat", "readout": "mixture", "mode": mode,
         "tau": 0.1, "clean_text": "The cat " + text,
         "greedy_text": "The cat sat" if mode == "isolated" else ""}
        for i, text in enumerate(["sat on", "on The"])
        for mode in ("isolated", "visible")
    ]  # fmt: skip
    run = tmp_path / "f"
    run.mkdir()
    pd.DataFrame(rows).to_csv(run / "per_prompt.csv", index=False)
    findings = pd.read_csv(judge_run(run, judge, "tiny", progress=False))
    generic = pd.read_csv(
        judge_file(
            run, "per_prompt.csv", ["readout", "mode", "tau"], judge, "tiny", progress=False
        )  # fmt: skip
    )
    pd.testing.assert_frame_equal(findings[list(generic.columns)], generic)
    assert list(findings.columns) == [*generic.columns, "greedy_judge_nll", "greedy_judge_tokens"]
    assert findings["greedy_judge_nll"].nunique() == 1


def test_only_the_generated_part_is_scored_even_when_it_repeats_the_prompt(judge) -> None:
    """clean_text is the whole text (prompt first, maybe after ``<bos>``); only what follows
    the prompt is scored, whole -- also when it repeats the prompt (a new user's case)."""
    from tempo_lens.analysis.quality import token_nll
    from tempo_lens.experiments.judge import continuation_of, judge_table

    assert continuation_of("The cat", "The cat The cat sat") == " The cat sat"
    assert continuation_of("The cat", "<bos>The cat sat") == " sat"
    table = pd.DataFrame(
        {
            "prompt_id": ["p0", "p0"],
            "method": ["a", "b"],
            "prompt": ["The cat"] * 2,
            "clean_text": ["The cat The cat sat", "<bos>The cat sat"],
        }
    )
    got = judge_table(table, judge, "tiny", ["method"], progress=False)
    head = judge.to_tokens("The cat")[0].tolist()
    for text, (_, row) in zip([" The cat sat", " sat"], got.iterrows(), strict=True):
        tail = judge.tokenizer.encode(text, add_special_tokens=False)
        assert row["judge_tokens"] == len(tail)
        want = float(token_nll(judge, head + tail, start=len(head)).mean())
        assert row["judge_nll"] == pytest.approx(want, rel=1e-12)


def test_a_table_of_continuations_without_their_prompt_is_refused_up_front(judge) -> None:
    from tempo_lens.experiments.judge import judge_table

    table = pd.DataFrame(
        {"prompt_id": ["p0"], "prompt": ["The cat"], "clean_text": [" sat on the mat"]}
    )
    with pytest.raises(ValueError, match=r"row 0 \(p0\).*does not begin with its prompt"):
        judge_table(table, judge, "tiny", [], progress=False)
