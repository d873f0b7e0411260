"""Shared helpers of the display modules: array coercion, token labels, HTML views.

Nothing here computes an analysis; it only reshapes what it is given for rendering.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from tempo_lens.analysis._util import ArrayLike, to_numpy
from tempo_lens.io import atomic_write_text
from tempo_lens.trace import Trace

__all__ = ["ArrayLike", "HtmlView", "parallel_groups", "to_numpy", "token_labels"]


def token_labels(trace: Trace, *, mark_pruned: bool = True) -> list[str]:
    """One label per physical token: prompt tokens plain, generated ``text|step``.

    Args:
        trace: The trace.
        mark_pruned: Wrap pruned members in ``~`` (as :meth:`Trace.bracket_text` does).

    Example: ``["The", " cat", " mat|0", "~ floor~|0", ".|1"]``.
    """
    out = []
    for t in trace.tokens:
        if t.step < 0:
            out.append(t.text)
            continue
        text = f"~{t.text}~" if mark_pruned and t.pruned_at_step is not None else t.text
        out.append(f"{text}|{t.step}")
    return out


def parallel_groups(trace: Trace, *, min_width: int = 2) -> list[list[int]]:
    """Physical indices of each step's set with at least ``min_width`` members."""
    return [list(s.indices) for s in trace.steps if len(s.indices) >= min_width]


def esc(text: object) -> str:
    """HTML-escape (quotes included)."""
    return html.escape(str(text), quote=True)


_SCRIPT_JSON_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def script_json(json_text: str) -> str:
    r"""JSON text made safe to inline in an HTML ``<script>`` element.

    ``<``, ``>``, ``&`` and U+2028/U+2029 become ``\uXXXX`` escapes (outside strings JSON
    has none of them, so the value is unchanged): a token such as ``</script>`` or ``<!--``
    cannot end the script or start a comment that swallows the rest of the page.
    """
    for ch, repl in _SCRIPT_JSON_ESCAPES.items():
        json_text = json_text.replace(ch, repl)
    return json_text


def visible(text: str) -> str:
    """Make whitespace in a token visible (leading space → ``␣``, newline → ``⏎``)."""
    return text.replace("\n", "⏎").replace("\t", "⇥").replace(" ", "␣")


def page(title: str, body: str, *, head: str = "") -> str:
    """A complete, self-contained HTML document."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{esc(title)}</title>\n{head}</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


class HtmlView:
    """A piece of self-contained HTML that notebooks display (``_repr_html_``).

    Args:
        fragment: HTML to embed in a page or a notebook cell.
        title: Title used by :meth:`save` for the standalone document.
    """

    def __init__(self, fragment: str, *, title: str = "tempo_lens") -> None:
        self.fragment = fragment
        self.title = title

    def _repr_html_(self) -> str:
        return self.fragment

    def __html__(self) -> str:
        return self.fragment

    def to_html(self) -> str:
        """A complete HTML document."""
        return page(self.title, self.fragment)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_html` atomically; returns the path."""
        atomic_write_text(path, self.to_html())
        return Path(path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(title={self.title!r}, {len(self.fragment)} chars)"
