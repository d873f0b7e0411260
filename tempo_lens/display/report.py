"""One self-contained HTML report of a TEMPO run.

The report holds the bracket and clean text, the token tree (inline SVG), figures (PNG as
``data:`` URIs), circuitsvis views (the circuitsvis JavaScript bundle inline, once), and
any text renderings. It references no external URL: it opens from a file, offline, and can
be mailed or archived as is.

Examples:
    >>> html = report_html(trace, figures={"widths": "fig/widths.png"})  # doctest: +SKIP
    >>> write_report("run/report.html", trace, figures=...)                # doctest: +SKIP
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tempo_lens.display._common import esc, page
from tempo_lens.display.cv import CvView, bundle_script
from tempo_lens.display.tree import tree_view
from tempo_lens.io import atomic_write_text
from tempo_lens.trace import Trace, provenance_line

__all__ = [
    "REPORT_CSS",
    "bracket_html",
    "figure_html",
    "report_html",
    "write_report",
]

REPORT_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px;
       color: #222; max-width: 1280px; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 1.8em; }
.meta { color: #666; font-size: 0.9em; }
.text { font-family: ui-monospace, Menlo, Consolas, monospace; background: #f7f7f7;
        padding: 10px 12px; border-radius: 6px; white-space: pre-wrap; line-height: 1.6; }
.set { background: #eef3fb; border-radius: 3px; }
.m0 { color: #1a7f37; } .m1 { color: #b35900; } .m2 { color: #0b7285; }
.m3 { color: #862e9c; } .m4 { color: #1c4fa0; } .m5 { color: #c92a2a; }
.pruned { color: #999 !important; text-decoration: line-through; }
table.summary { border-collapse: collapse; font-size: 0.9em; }
table.summary td { border-bottom: 1px solid #eee; padding: 2px 14px 2px 0; }
figure { display: inline-block; margin: 8px 16px 16px 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
pre.ascii { font-size: 12px; background: #fbfbfb; padding: 8px; overflow-x: auto; }
"""


def bracket_html(trace: Trace) -> str:
    """The bracket text as HTML: members coloured by rank, pruned members struck out."""
    parts = [f"<span>{esc(trace.prompt_text())}</span>"]
    for rec in trace.steps:
        spans = []
        for i in rec.indices:
            t = trace.token(i)
            cls = f"m{t.rank % 6}" + (" pruned" if t.pruned_at_step is not None else "")
            tip = f"step {t.step} rank {t.rank}" + (
                f" p={t.probability:.3f}" if t.probability is not None else ""
            )
            if t.pruned_at_step is not None:
                tip += f" pruned at step {t.pruned_at_step}"
            spans.append(f'<span class="{cls}" title="{esc(tip)}">{esc(t.text)}</span>')
        if len(spans) == 1:
            parts.append(spans[0])
        else:
            parts.append('<span class="set">[' + "/".join(spans) + "]</span>")
    return "".join(parts)


def figure_html(png: bytes | str | os.PathLike[str], caption: str = "") -> str:
    """A ``<figure>`` with the PNG embedded as a base64 ``data:`` URI."""
    data = png if isinstance(png, bytes) else Path(png).read_bytes()
    if not data.startswith(b"\x89PNG"):
        raise ValueError(f"not a PNG: {caption or png!r}")
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{esc(caption)}">{cap}</figure>'


def _summary_table(summary: Mapping[str, Any]) -> str:
    rows = []
    for k, v in summary.items():
        if isinstance(v, (dict, list)) or k in ("bracket_text", "clean_text"):
            continue
        val = f"{v:.4g}" if isinstance(v, float) else str(v)
        rows.append(f"<tr><td>{esc(k)}</td><td>{esc(val)}</td></tr>")
    return f'<table class="summary">{"".join(rows)}</table>'


def report_html(
    trace: Trace,
    *,
    title: str = "TEMPO run",
    summary: Mapping[str, Any] | None = None,
    figures: Mapping[str, bytes | str | os.PathLike[str]] | None = None,
    views: Mapping[str, CvView] | None = None,
    texts: Mapping[str, str] | None = None,
    notes: Sequence[str] = (),
) -> str:
    """The report as one HTML string (no external URLs).

    Args:
        trace: The run.
        title: Page title.
        summary: Headline numbers (default :meth:`Trace.summary`).
        figures: Caption -> PNG (bytes or path), embedded as ``data:`` URIs.
        views: Heading -> circuitsvis view (one inline bundle serves all of them).
        texts: Heading -> preformatted text (e.g. ASCII heatmaps, the tree as text).
        notes: Short paragraphs shown under the title (e.g. an isolation verdict).

    A trace with :attr:`Trace.provenance` gets a line under the title naming the model,
    its weights' SHA-256, the backend and the TransformerLens version (traces saved
    before provenance was recorded render as before).
    """
    summary = dict(summary) if summary is not None else trace.summary()
    body = [f"<h1>{esc(title)}</h1>"]
    body.append(
        f'<p class="meta">model {esc(trace.model)} · method {esc(trace.method)} · '
        f"{len(trace.steps)} steps · stop: {esc(trace.stop_reason)} · "
        f"isolate={esc(trace.isolate)}</p>"
    )
    if trace.provenance:
        body.append(
            f'<p class="meta" id="provenance">{esc("provenance: " + provenance_line(trace.provenance))}</p>'
        )
    body += [f"<p>{esc(n)}</p>" for n in notes]
    body.append("<h2>Text</h2>")
    body.append(f'<div class="text" id="bracket-text">{bracket_html(trace)}</div>')
    body.append('<p class="meta">clean text (top surviving member of each step):</p>')
    body.append(f'<div class="text" id="clean-text">{esc(trace.clean_text())}</div>')
    body.append("<h2>Summary</h2>" + _summary_table(summary))
    body.append("<h2>Token tree</h2>")
    body.append(tree_view(trace).fragment)
    if figures:
        body.append("<h2>Figures</h2>")
        body += [figure_html(png, caption) for caption, png in figures.items()]
    if views:
        body.append("<h2>Attention (circuitsvis)</h2>")
        body.append(bundle_script())
        for heading, view in views.items():
            body.append(f"<h3>{esc(heading)}</h3>{view.fragment_html()}")
    for heading, text in (texts or {}).items():
        body.append(
            f"<details><summary>{esc(heading)}</summary>"
            f'<pre class="ascii">{esc(text)}</pre></details>'
        )
    return page(title, "\n".join(body), head=f"<style>{REPORT_CSS}</style>\n")


def write_report(path: str | os.PathLike[str], trace: Trace, **kwargs: Any) -> Path:
    """Write :func:`report_html` atomically; returns the path."""
    atomic_write_text(path, report_html(trace, **kwargs))
    return Path(path)
