"""The token tree (a lattice) of a TEMPO trace, as text and as self-contained HTML.

Each step's set is one column: its members (most probable first) with their selection
probability. Every member of a set is context for every member of the next set, so the
structure is a lattice rather than a tree; the **clean path** (the top surviving member of
each step, :meth:`Trace.clean_ids`) is highlighted, and **pruned** members are marked
with the step that pruned them and the score behind the decision.

* :func:`tree_text` — plain text (``*`` clean path, ``x`` pruned, ``-`` kept alternative);
* :func:`tree_svg` — an inline SVG (hover a node for its details);
* :func:`tree_view` — the SVG with its CSS as an object with ``_repr_html_`` and ``save``.

Nothing here loads anything from the network: the SVG and CSS are inline.

Examples:
    >>> print(tree_text(trace))                     # doctest: +SKIP
    >>> tree_view(trace).save("tree.html")          # doctest: +SKIP
"""

from __future__ import annotations

import json

from tempo_lens.display._common import HtmlView, esc, visible
from tempo_lens.trace import PruneDecision, TokenRecord, Trace

__all__ = ["TREE_CSS", "clean_indices", "tree_svg", "tree_text", "tree_view"]

TREE_CSS = """
.tempo-tree { overflow-x: auto; font-family: ui-monospace, Menlo, Consolas, monospace; }
.tempo-tree svg { display: block; }
.tempo-tree .edge { stroke: #c8c8c8; stroke-width: 1; fill: none; }
.tempo-tree .edge.clean { stroke: #d62728; stroke-width: 2.5; }
.tempo-tree .node rect { fill: #ffffff; stroke: #4c72b0; stroke-width: 1.2; }
.tempo-tree .node.clean rect { fill: #fff1e6; stroke: #d62728; stroke-width: 2.5; }
.tempo-tree .node.pruned rect { fill: #f3f3f3; stroke: #9a9a9a; stroke-dasharray: 4 3; }
.tempo-tree .node.pruned .tok { fill: #8a8a8a; text-decoration: line-through; }
.tempo-tree .node.prompt rect { fill: #eef3fb; stroke: #4c72b0; }
.tempo-tree .node:hover rect { stroke-width: 3.5; }
.tempo-tree text { font-size: 12px; fill: #222; }
.tempo-tree .prob { font-size: 10px; fill: #555; }
.tempo-tree .head { font-size: 11px; fill: #555; }
.tempo-tree .legend { font-size: 11px; fill: #444; }
"""


def clean_indices(trace: Trace) -> list[int]:
    """Physical index of the clean-path member of each step (top surviving member)."""
    return trace.clean_indices()


def _decisions(trace: Trace) -> dict[int, PruneDecision]:
    return {d.index: d for rec in trace.steps for d in rec.pruning if d.pruned}


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def tree_text(trace: Trace) -> str:
    """The lattice as text, one block per step.

    Each member line: marker (``*`` clean path, ``x`` pruned, ``-`` kept alternative),
    quoted token text, selection probability, and for pruned members the step that pruned
    them with the pruning score (and the best score of the set).
    """
    clean = set(clean_indices(trace))
    pruned_by = _decisions(trace)
    width = max((len(_quote(t.text)) for t in trace.tokens if t.step >= 0), default=0)
    lines = [f"prompt: {_quote(trace.prompt_text())}"]
    for rec in trace.steps:
        n = len(rec.indices)
        extra = []
        if len(rec.candidates) > n:
            extra.append(f"{len(rec.candidates)} candidates")
        if rec.fell_back:
            extra.append("top-1 fallback")
        if rec.capped:
            extra.append("capped")
        tail = f" ({', '.join(extra)})" if extra else ""
        noun = "member" if n == 1 else "members"
        lines.append(f"step {rec.step}  tau={rec.threshold:.3f}  {n} {noun}{tail}")
        for i in rec.indices:
            lines.append("  " + _member_line(trace.token(i), i in clean, pruned_by, width))
    lines.append(f"clean: {_quote(trace.clean_text())}")
    lines.append("legend: * clean path   x pruned   - kept alternative")
    return "\n".join(lines)


def _member_line(
    t: TokenRecord, on_clean: bool, pruned_by: dict[int, PruneDecision], width: int
) -> str:
    marker = "*" if on_clean else ("x" if t.pruned_at_step is not None else "-")
    prob = f"p={t.probability:.3f}" if t.probability is not None else "p=?"
    line = f"{marker} {_quote(t.text).ljust(width)}  {prob}"
    if t.pruned_at_step is not None:
        line += f"  pruned at step {t.pruned_at_step}"
        d = pruned_by.get(t.index)
        if d is not None:
            line += f" (score {d.score:.3f}, best {d.best_score:.3f})"
    return line


def _node_title(t: TokenRecord, on_clean: bool, d: PruneDecision | None) -> str:
    parts = [
        f"{_quote(t.text)}  step {t.step}  rank {t.rank}",
        f"physical index {t.index}  logical position {t.logical_position:g}",
        f"probability {t.probability:.4f}" if t.probability is not None else "",
    ]
    if on_clean:
        parts.append("on the clean path")
    if t.pruned_at_step is not None:
        parts.append(f"pruned at step {t.pruned_at_step}")
        if d is not None:
            parts.append(f"score {d.score:.4f} (best {d.best_score:.4f}); rule {d.rule}")
    return "\n".join(p for p in parts if p)


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def tree_svg(trace: Trace, *, max_chars: int = 16) -> str:
    """The lattice as an inline ``<svg>`` (classes ``node clean|pruned``, ``edge clean``).

    Args:
        trace: The trace.
        max_chars: Token text longer than this is cut (the tooltip has it whole).
    """
    clean = clean_indices(trace)
    clean_set = set(clean)
    pruned_by = _decisions(trace)
    gen = [t for t in trace.tokens if t.step >= 0]
    longest = max((len(_cut(visible(t.text), max_chars)) for t in gen), default=4)
    node_w = max(100.0, 7.4 * longest + 18)
    col_w, node_h, row_h, top = node_w + 34, 38, 48, 34
    prompt_text = _cut(visible(trace.prompt_text()), 28)
    prompt_w = max(80.0, 7.4 * len(prompt_text) + 18)
    x0 = prompt_w + 40
    height_rows = max((len(r.indices) for r in trace.steps), default=1)
    width = x0 + col_w * len(trace.steps) + 10
    height = top + row_h * height_rows + 34

    def pos(t: TokenRecord) -> tuple[float, float]:
        return float(x0 + col_w * t.step), float(top + row_h * t.rank)

    edges, nodes = [], []
    prev = [(10 + prompt_w, top + node_h / 2, trace.prompt_length - 1)]
    for rec in trace.steps:
        cur = []
        for i in rec.indices:
            t = trace.token(i)
            x, y = pos(t)
            for px, py, pi in prev:
                on = i in clean_set and (pi in clean_set or rec.step == 0)
                cls = "edge clean" if on else "edge"
                edges.append(
                    f'<path class="{cls}" d="M{px:.1f},{py:.1f} C{px + 17:.1f},{py:.1f} '
                    f'{x - 17:.1f},{y + node_h / 2:.1f} {x:.1f},{y + node_h / 2:.1f}"/>'
                )
            cur.append((x + node_w, y + node_h / 2, i))
            classes = ["node"]
            if i in clean_set:
                classes.append("clean")
            if t.pruned_at_step is not None:
                classes.append("pruned")
            prob = f"p={t.probability:.3f}" if t.probability is not None else ""
            if t.pruned_at_step is not None:
                prob += f" ✗{t.pruned_at_step}"
            nodes.append(
                f'<g class="{" ".join(classes)}" data-index="{t.index}" data-step="{t.step}">'
                f"<title>{esc(_node_title(t, i in clean_set, pruned_by.get(i)))}</title>"
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{node_w:.1f}" height="{node_h}" rx="6"/>'
                f'<text class="tok" x="{x + 8:.1f}" y="{y + 16:.1f}">'
                f"{esc(_cut(visible(t.text), max_chars))}</text>"
                f'<text class="prob" x="{x + 8:.1f}" y="{y + 31:.1f}">{esc(prob)}</text></g>'
            )
        prev = cur
    heads = [
        f'<text class="head" x="{x0 + col_w * r.step:.1f}" y="{top - 12}">'
        f"step {r.step}  τ={r.threshold:.3g}</text>"
        for r in trace.steps
    ]
    prompt = (
        f'<g class="node prompt"><title>{esc(trace.prompt_text())}</title>'
        f'<rect x="10" y="{top}" width="{prompt_w:.1f}" height="{node_h}" rx="6"/>'
        f'<text x="18" y="{top + 23}">{esc(prompt_text)}</text></g>'
    )
    legend = (
        f'<text class="legend" x="10" y="{height - 10}">red: clean path · dashed grey: '
        "pruned (✗ = step that pruned it) · hover a node for details</text>"
    )
    return (
        f'<svg class="tempo-tree-svg" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        f'aria-label="TEMPO token lattice">'
        + "".join(edges)
        + prompt
        + "".join(heads)
        + "".join(nodes)
        + legend
        + "</svg>"
    )


def tree_view(trace: Trace, *, max_chars: int = 16, title: str = "TEMPO token tree") -> HtmlView:
    """:func:`tree_svg` with its CSS, displayable in a notebook and savable as HTML."""
    fragment = f'<div class="tempo-tree"><style>{TREE_CSS}</style>{tree_svg(trace, max_chars=max_chars)}</div>'
    return HtmlView(fragment, title=title)
