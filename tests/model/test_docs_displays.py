"""The python examples of docs/displays.md run, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "displays.md"


def test_displays_doc_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tempo_lens.analysis.run")
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 8
    namespace: dict[str, object] = {}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{DOC.name}[block {i}]", "exec"), namespace)  # noqa: S102
    out = namespace["out"]
    assert isinstance(out, Path) and (out / "report.html").exists()
    assert "verdict:" in capsys.readouterr().out
