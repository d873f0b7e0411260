"""The combined verdict across model families and the side-by-side table (issue 23)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tempo_lens.experiments.findings_families import (
    END,
    START,
    families_markdown,
    families_table,
    main,
    update_doc,
)
from tempo_lens.experiments.findings_rules import combined


@pytest.mark.parametrize(
    ("a", "b", "want"),
    [
        ("supported", "supported", "supported (both families)"),
        ("refuted", "refuted", "refuted (both families)"),
        ("supported", "refuted", "model-specific"),
        ("refuted", "supported", "model-specific"),
        ("supported", "inconclusive", "supported on x only (not replicated)"),
        ("insufficient", "refuted", "refuted on y only (not replicated)"),
        ("inconclusive", "insufficient", "inconclusive"),
        ("inconclusive", "inconclusive", "inconclusive"),
    ],
)
def test_combined_rule(a: str, b: str, want: str) -> None:
    assert combined({"x": a, "y": b}) == want


def test_combined_needs_two_models() -> None:
    with pytest.raises(ValueError, match=">= 2 models"):
        combined({"x": "supported"})


def _claims(d: Path, rows: list[tuple[str, float, str]]) -> Path:
    d.mkdir(parents=True)
    pd.DataFrame(
        [
            {
                "claim": c,
                "statement": f"statement {c}",
                "estimate": e,
                "ci_low": e - 0.1,
                "ci_high": e + 0.1,
                "n_prompts": 48,
                "verdict": v,
            }
            for c, e, v in rows
        ]
    ).to_csv(d / "claims.csv", index=False)
    return d


def test_families_table_and_doc_block(tmp_path: Path) -> None:
    a = _claims(tmp_path / "a", [("1", 0.9, "refuted"), ("2", 0.0, "supported")])
    b = _claims(
        tmp_path / "b", [("1", 0.8, "refuted"), ("2", 0.3, "refuted"), ("7", 1, "supported")]
    )
    table = families_table({"A": a, "B": b}).set_index("claim")
    assert table.loc["1", "combined"] == "refuted (both families)"
    assert table.loc["2", "combined"] == "model-specific"
    assert table.loc["7", "A"] == "not run"
    assert table.loc["7", "combined"] == "supported on B only (not replicated)"
    assert table.loc["1", "A"] == "0.9 [0.8, 1] (n 48) **refuted**"
    md = families_markdown(families_table({"A": a, "B": b}))
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{START}\nold\n{END}\noutro\n", encoding="utf-8")
    assert update_doc(doc, md) is True
    assert update_doc(doc, md) is False  # idempotent
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("intro\n") and text.endswith(f"{END}\noutro\n") and md in text
    (tmp_path / "plain.md").write_text("no markers", encoding="utf-8")
    with pytest.raises(ValueError, match="families:start"):
        update_doc(tmp_path / "plain.md", md)


def test_cli_refuses_bad_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _claims(tmp_path / "a", [("1", 0.9, "refuted")])
    with pytest.raises(SystemExit) as e:
        main(["--run", f"A={a}", "--run", "B"])
    assert e.value.code == 2 and "NAME=DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--run", f"A={a}", "--run", f"B={tmp_path / 'missing'}"])
    assert "missing" in capsys.readouterr().err
    b = _claims(tmp_path / "b", [("1", 0.8, "refuted")])
    assert main(["--run", f"A={a}", "--run", f"B={b}"]) == 0
    assert "refuted (both families)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--run", f"A={a}", "--run", f"A={b}"])
    assert "names must differ" in capsys.readouterr().err


def test_runs_must_be_distinct_and_measure_the_same_thing(tmp_path: Path) -> None:
    """One directory under two names, or two runs whose manifests differ in anything but
    the model (taus, readouts, steps ...), are refused: their rows would not be comparable."""
    import json

    a = _claims(tmp_path / "a", [("1", 0.9, "refuted")])
    b = _claims(tmp_path / "b", [("1", 0.8, "refuted")])
    with pytest.raises(ValueError, match="different directories"):
        families_table({"A": a, "B": tmp_path / "a" / ".." / "a"})
    base = {"model": "x", "taus": [0.1, 0.15], "readouts": ["mixture", "last"], "max_steps": 16}
    (a / "manifest.json").write_text(json.dumps({"config": base}), encoding="utf-8")
    (b / "manifest.json").write_text(
        json.dumps({"config": {**base, "model": "y"}}), encoding="utf-8"
    )
    assert len(families_table({"A": a, "B": b})) == 1  # only the model differs
    (b / "manifest.json").write_text(
        json.dumps({"config": {**base, "model": "y", "taus": [0.2]}}), encoding="utf-8"
    )
    with pytest.raises(ValueError, match="differ in taus"):
        families_table({"A": a, "B": b})
