"""Package hygiene: typed (py.typed shipped), the prompt suite shipped (sizes: test_architecture)."""

from __future__ import annotations

from pathlib import Path

import tempo_lens

PACKAGE = Path(tempo_lens.__file__).resolve().parent


def test_py_typed_marker_is_shipped() -> None:
    assert (PACKAGE / "py.typed").is_file()
    pyproject = (PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8")
    assert 'tempo_lens = ["py.typed", "prompts/*.csv"]' in pyproject


def test_prompt_suite_is_package_data_and_the_committed_file() -> None:
    """``tempo_lens/prompts/suite.csv`` ships in the wheel (package data above); the
    repository's ``experiments/prompts/suite.csv`` is the same file (a link to it)."""
    from tempo_lens.prompts import packaged_prompts, read_prompts

    suite = packaged_prompts("suite.csv")
    assert suite == read_prompts(PACKAGE.parent / "experiments" / "prompts" / "suite.csv")
    assert len(suite) >= 96 and len({p.category for p in suite}) >= 8
