"""The docs notebooks are generated from docs/make_notebook.py and execute without errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _maker():
    spec = importlib.util.spec_from_file_location("make_notebook", DOCS / "make_notebook.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_notebooks_match_generator(tmp_path: Path) -> None:
    fresh = _maker().main([str(tmp_path)])
    assert [p.name for p in fresh] == ["walkthrough.ipynb", "debugging.ipynb"]
    for p in fresh:
        committed = DOCS / "notebooks" / p.name
        assert committed.read_text() == p.read_text(), "run: python docs/make_notebook.py"


def _execute(name: str, tmp_path: Path) -> list:
    nb = _maker().build(name)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on any failing cell
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    return outputs


def _text(outputs: list) -> str:
    return "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)


def test_walkthrough_executes(tmp_path: Path) -> None:
    outputs = _execute("walkthrough.ipynb", tmp_path)
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "<svg" in html and "CircuitsVis.render(" in html and "unpkg.com" not in html
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 4


@pytest.mark.slow
def test_debugging_notebook_executes_on_the_default_model(tmp_path: Path) -> None:
    text = _text(_execute("debugging.ipynb", tmp_path))
    # the poor step, its alternatives, their attention, the decisions and the replay
    for needle in ("top probability", "probability  appended", "attends to (top 4",
                   "judged_at", "path NLL", "continuation"):  # fmt: skip
        assert needle in text, needle
