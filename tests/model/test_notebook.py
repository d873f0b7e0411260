"""The docs notebook is generated from docs/make_notebook.py and executes without errors."""

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


def test_committed_notebook_matches_generator(tmp_path: Path) -> None:
    fresh = _maker().main([str(tmp_path / "nb.ipynb")])
    committed = DOCS / "notebooks" / "walkthrough.ipynb"
    assert committed.read_text() == fresh.read_text(), "run: python docs/make_notebook.py"


def test_walkthrough_executes(tmp_path: Path) -> None:
    nb = _maker().build()
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on any failing cell
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "<svg" in html and "CircuitsVis.render(" in html and "unpkg.com" not in html
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 4
