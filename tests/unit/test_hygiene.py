"""Package hygiene: typed (py.typed shipped), small modules."""

from __future__ import annotations

from pathlib import Path

import tempo_lens

PACKAGE = Path(tempo_lens.__file__).resolve().parent
MAX_LINES = 400


def test_py_typed_marker_is_shipped() -> None:
    assert (PACKAGE / "py.typed").is_file()
    pyproject = (PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8")
    assert 'tempo_lens = ["py.typed"]' in pyproject


def test_no_module_over_400_lines() -> None:
    sizes = {
        str(p.relative_to(PACKAGE)): len(p.read_text(encoding="utf-8").splitlines())
        for p in PACKAGE.rglob("*.py")
    }
    assert len(sizes) > 40
    too_long = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not too_long, f"modules over {MAX_LINES} lines (split them): {too_long}"
