"""Trace JSON files written before format 2 (per-token records) still load and render the same.

The fixtures in ``tests/fixtures`` were written by tempo_lens at commit dd20c47 (trace
format 1) together with their renderings (``trace_v1_expected.json``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tempo_lens.analysis.export import load_attention
from tempo_lens.display import report_html, tree_svg, tree_text
from tempo_lens.state import SequenceState
from tempo_lens.trace import TRACE_FORMAT, Trace

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
EXPECTED = json.loads((FIXTURES / "trace_v1_expected.json").read_text(encoding="utf-8"))
NAMES = sorted(EXPECTED)


@pytest.mark.parametrize("name", NAMES)
def test_format_1_loads_and_renders_unchanged(name: str) -> None:
    old = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    assert old["format"] == 1 and "tokens" in old
    trace = Trace.load(FIXTURES / f"{name}.json")
    exp = EXPECTED[name]
    assert trace.bracket_text() == exp["bracket"]
    assert trace.bracket_text(color=True) == exp["color"]
    assert trace.bracket_text(show_pruned=False) == exp["nopruned"]
    assert trace.clean_text() == exp["clean"]
    assert trace.raw_text() == exp["raw"]
    assert trace.summary() == exp["summary"]
    assert trace.clean_indices() == exp["clean_indices"]
    assert tree_text(trace) == exp["tree"]
    assert tree_svg(trace) == exp["tree_svg"]
    assert report_html(trace) == exp["report"]
    st = trace.to_state()
    for key, value in exp["state"].items():
        assert getattr(st, key) == value, key
    # the per-token view reproduces the old per-token records field for field
    assert [r.__dict__ for r in trace.tokens] == old["tokens"]


@pytest.mark.parametrize("name", NAMES)
def test_format_1_resaves_as_current_format(name: str, tmp_path: Path) -> None:
    trace = Trace.load(FIXTURES / f"{name}.json")
    path = trace.save(tmp_path / "t.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["format"] == TRACE_FORMAT and "tokens" not in data
    back = Trace.load(path)
    assert back == trace and back.to_dict() == data


def test_old_attention_export_loads() -> None:
    data = load_attention(FIXTURES / "attention_v1_tiny")
    assert data.trace is not None and data.state == data.trace.state
    assert data.state.pruned_at[4] == 1 and data.state.set_indices[2] == list(range(19, 27))
    assert data.rows(0).shape == (1, 1, 8, 11)


def test_state_dict_round_trip_and_errors() -> None:
    st = SequenceState.from_sets([1, 2], [[3, 4], [5]], isolate=False)
    st.prune(3, at_step=1)
    assert SequenceState.from_dict(st.to_dict()) == st
    bad = st.to_dict()
    bad["steps"] = [-1, -1, 0, 2, 2]
    with pytest.raises(ValueError, match="step 2, expected 1"):
        SequenceState.from_dict(bad)


def test_inconsistent_trace_is_refused() -> None:
    trace = Trace.load(FIXTURES / "trace_v1_greedy.json")
    data = trace.to_dict()
    data["texts"] = data["texts"][:-1]
    with pytest.raises(ValueError, match="texts"):
        Trace.from_dict(data)
    data = trace.to_dict()
    data["format"] = 99
    with pytest.raises(ValueError, match="unsupported trace format 99"):
        Trace.from_dict(data)
