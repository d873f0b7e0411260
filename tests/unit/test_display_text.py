"""Snapshot tests of the text displays (ASCII heatmap, bars, cross-parallel, tree).

Snapshots live in ``tests/unit/snapshots/``; after an intended change, regenerate them with
``UPDATE_SNAPSHOTS=1 pytest tests/unit/test_display_text.py`` and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tempo_lens.display import (
    attention_bars,
    attention_heatmap,
    cross_parallel,
    heatmap_data,
    isolation_verdict,
    parallel_bars,
    save_heatmap_json,
    token_labels,
    tree_svg,
    tree_text,
    tree_view,
)
from tests.display_fixtures import LABELS, hand_trace

SNAPSHOTS = Path(__file__).parent / "snapshots"

# attention of the hand trace, isolated: " floor" (6) cannot see " mat" (5) and vice versa
ATTN = torch.tensor(
    [
        [1.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00],
        [0.60, 0.40, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00],
        [0.50, 0.20, 0.30, 0.00, 0.00, 0.00, 0.00, 0.00],
        [0.40, 0.10, 0.20, 0.30, 0.00, 0.00, 0.00, 0.00],
        [0.30, 0.10, 0.10, 0.20, 0.30, 0.00, 0.00, 0.00],
        [0.20, 0.30, 0.05, 0.05, 0.10, 0.30, 0.00, 0.00],
        [0.25, 0.05, 0.20, 0.05, 0.20, 0.00, 0.25, 0.00],
        [0.10, 0.05, 0.05, 0.05, 0.10, 0.40, 0.05, 0.20],
    ]
)


def check_snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        path.write_text(text + "\n", encoding="utf-8")
    if not path.exists():
        pytest.fail(f"missing snapshot {path}: run with UPDATE_SNAPSHOTS=1 and review it")
    assert text + "\n" == path.read_text(encoding="utf-8"), f"snapshot {name} differs"


def test_token_labels_mark_step_and_pruning() -> None:
    assert token_labels(hand_trace()) == LABELS
    assert token_labels(hand_trace(), mark_pruned=False)[6] == " floor|0"


def test_heatmap_snapshot() -> None:
    check_snapshot("heatmap.txt", attention_heatmap(ATTN, LABELS, LABELS, vmax=1.0))


def test_heatmap_scales_to_max_and_marks_nan() -> None:
    m = np.array([[0.5, np.nan], [0.25, 0.0]])
    text = attention_heatmap(m, ["a", "b"], ["a", "b"])
    rows = text.splitlines()
    assert rows[2].endswith("@ x")  # 0.5 is the max -> darkest; NaN -> x
    assert "'x' nan/inf" in text
    with pytest.raises(ValueError, match="labels"):
        attention_heatmap(m, ["a"], ["a", "b"])


def test_bars_snapshot() -> None:
    check_snapshot(
        "bars.txt",
        attention_bars(ATTN[7], LABELS, source_label=".|1", top_k=4, width=20)
        + "\n\n"
        + parallel_bars(ATTN[5:7], LABELS[5:7], LABELS, top_k=3, width=20),
    )


def test_cross_parallel_isolated_snapshot() -> None:
    sib = ATTN[5:7, 5:7]
    check_snapshot("cross_isolated.txt", cross_parallel(sib, LABELS[5:7], expect_isolated=True))


def test_cross_parallel_verdict_follows_the_numbers() -> None:
    leaky = torch.tensor([[0.3, 0.0, 0.0], [0.12, 0.2, 0.0], [0.0, 0.0, 0.5]])
    text = cross_parallel(leaky, ["a|0", "b|0", "c|0"], expect_isolated=True)
    check_snapshot("cross_leaky.txt", text)
    assert "NOT ISOLATED" in text and "(b|0 -> a|0)" in text and "[UNEXPECTED]" in text
    # visible mode: attention to *earlier* siblings is allowed, to later ones is not
    assert isolation_verdict(leaky, causal_ok=True)[:2] == (True, 0.0)
    assert isolation_verdict(leaky.T, causal_ok=True)[:2] == (False, pytest.approx(0.12))
    assert isolation_verdict(torch.eye(3) * 0.5, tol=0.0)[0]
    assert not isolation_verdict(torch.tensor([[0.5, float("nan")], [0.0, 0.5]]))[0]
    assert isolation_verdict(torch.ones(1, 1))[0]


def test_heatmap_json_export(tmp_path: Path) -> None:
    m = np.array([[1.0, np.nan], [0.25, 0.75]])
    d = heatmap_data(m, ["a", "b"], ["a", "b"], layer=3)
    assert d["values"] == [[1.0, None], [0.25, 0.75]] and d["layer"] == 3
    assert d["shape"] == [2, 2] and d["max"] == 1.0 and d["min"] == 0.25
    p = save_heatmap_json(tmp_path / "h.json", m, ["a", "b"], ["a", "b"], step=1)
    assert json.loads(p.read_text())["step"] == 1


def test_tree_text_snapshot() -> None:
    text = tree_text(hand_trace())
    check_snapshot("tree.txt", text)
    lines = text.splitlines()
    assert lines[2].startswith('  * " mat"')  # clean path
    assert lines[3].startswith('  x " floor"') and "pruned at step 1" in lines[3]
    assert "score 0.050, best 0.400" in lines[3]
    assert lines[-2] == 'clean: "The cat sat on the mat."'


def test_tree_svg_marks_clean_path_and_pruned() -> None:
    svg = tree_svg(hand_trace())
    assert svg.count('class="node clean"') == 2  # " mat" and "."
    assert svg.count('class="node pruned"') == 1 and 'data-index="6"' in svg
    assert svg.count('class="edge clean"') == 2  # prompt -> mat, mat -> .
    assert "pruned at step 1" in svg and "http" not in svg
    html = tree_view(hand_trace()).to_html()
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html and "<style>" in html
