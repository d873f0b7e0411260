"""Command-line building blocks: docstring markup rendered as plain ``--help`` text."""

from __future__ import annotations

import pytest

from tempo_lens.runner.options import UsageError, choose_prompts, plain_text


@pytest.mark.parametrize(
    ("doc", "plain"),
    [
        ("``None`` disables it.", "None disables it."),
        ("Layer spec for :func:`resolve_layers`.", "Layer spec for resolve_layers."),
        ("see :mod:`tempo_lens.backends.fast`", "see tempo_lens.backends.fast"),
        ("in :attr:`~tempo_lens.StepRecord.prefiltered`", "in prefiltered"),
        (":py:class:`x.Y` and `z`", "x.Y and z"),
        ('"shared" — ``L + step``; ``p >= tau``', '"shared" — L + step; p >= tau'),
        ("no markup: a < b, 3 * 4", "no markup: a < b, 3 * 4"),
    ],
)
def test_plain_text_strips_rst_and_markdown_markup(doc, plain) -> None:
    assert plain_text(doc) == plain


def test_choose_prompts(tmp_path) -> None:
    assert choose_prompts(None, None) is None
    assert [p.text for p in choose_prompts(["a", "b"], None)] == ["a", "b"]
    (tmp_path / "p.txt").write_text("x\ny\n")
    assert [p.text for p in choose_prompts(None, str(tmp_path / "p.txt"))] == ["x", "y"]
    with pytest.raises(UsageError, match="not both"):
        choose_prompts(["a"], str(tmp_path / "p.txt"))
