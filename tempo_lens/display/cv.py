"""CircuitsVis views of a TEMPO sequence that render offline.

CircuitsVis (``circuitsvis.utils.render``) builds two HTML strings per view: one with its
whole JavaScript bundle inline (``local_src``) and one importing the bundle from a CDN.
Its ``_repr_html_`` picks between them by trying to reach the internet, which blocks for a
second offline and makes a notebook depend on the network. :class:`CvView` instead
always uses the bundle shipped inside the installed ``circuitsvis`` package (unless
``offline=False`` asks for the CDN), and can emit a bundle-free fragment so a report
embeds the 1.3 MB bundle once for all its views (:func:`bundle_script`).

Tokens of a trace are labelled by :func:`tempo_lens.display.token_labels`: prompt tokens
plain, generated tokens ``text|step`` (pruned ones ``~text~|step``), so the members of a
set are recognisable in every circuitsvis widget.

Examples:
    >>> view = attention_heads(pattern, trace)        # doctest: +SKIP
    >>> view                                           # a notebook cell shows it offline
    >>> view.save("heads.html")                        # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import circuitsvis
import numpy as np
from circuitsvis.utils.convert_props import convert_props

from tempo_lens._numbers import RealLike, as_real
from tempo_lens.display._common import (
    ArrayLike,
    esc,
    page,
    script_json,
    to_numpy,
    token_labels,
)
from tempo_lens.io import atomic_write_text
from tempo_lens.trace import Trace

__all__ = [
    "CvView",
    "attention_heads",
    "attention_pattern",
    "bundle_script",
    "colored_tokens",
    "probability_tokens",
]


@lru_cache(maxsize=1)
def _bundle() -> str:
    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    js = path.read_text(encoding="utf-8")
    # As circuitsvis does: no closing script tag inside inline code. Also drop the source
    # map comment, which would make a browser's devtools request a file that is not there.
    js = js.replace("</script>", "")
    return "\n".join(
        line for line in js.splitlines() if not line.startswith("//# sourceMappingURL")
    )


def bundle_script() -> str:
    """A classic ``<script>`` defining the global ``CircuitsVis`` (include once per page)."""
    return (
        f'<script data-circuitsvis-bundle="{esc(circuitsvis.__version__)}">\n{_bundle()}\n</script>'
    )


def _scale(name: str, value: RealLike | None) -> float | None:
    """A colour-scale bound as a plain float (NumPy/torch scalars accepted), or None."""
    v = as_real(value)
    if v is not None and (not isinstance(v, float) or not math.isfinite(v)):
        raise ValueError(f"{name} must be a finite number or None, got {value!r}")
    return v


def _props_js(props: dict[str, Any]) -> str:
    # convert_props is circuitsvis' own serialiser (tensors/arrays -> lists, None dropped);
    # script_json escapes <, >, & and U+2028/9 so token text is inert inside <script>.
    return script_json(convert_props(props))


class CvView:
    """A circuitsvis component with props, rendered without network access.

    Args:
        component: CircuitsVis React component name (e.g. ``"AttentionHeads"``).
        props: Its props (camelCase, as the circuitsvis Python functions pass them).
        offline: ``_repr_html_`` uses the inline bundle (default); ``False`` uses the CDN.
        title: Title of the standalone document (:meth:`save`).
    """

    def __init__(
        self, component: str, props: dict[str, Any], *, offline: bool = True, title: str = ""
    ) -> None:
        if not component.isidentifier():
            raise ValueError(f"component must be a circuitsvis component name, got {component!r}")
        self.component = component
        self.props = props
        self.offline = offline
        self.title = title or component
        self.element_id = "circuits-vis-" + uuid.uuid4().hex[:12]

    def fragment_html(self) -> str:
        """The view's ``<div>`` and render call, without the bundle (see :func:`bundle_script`)."""
        return (
            f'<div id="{self.element_id}" class="tempo-cv" data-component="{esc(self.component)}"'
            ' style="margin: 15px 0;"></div>\n'
            f"<script>CircuitsVis.render({json.dumps(self.element_id)}, "
            f"CircuitsVis.{self.component}, {_props_js(self.props)});</script>"
        )

    def offline_html(self) -> str:
        """Self-contained HTML: the bundle inline, then the view (no network needed)."""
        return f"{bundle_script()}\n{self.fragment_html()}"

    def cdn_html(self) -> str:
        """The view loading circuitsvis' bundle from its CDN (needs internet in the browser).

        The same module script as ``circuitsvis.utils.render.render_cdn``, with the props
        escaped for inline use.
        """
        url = f"https://unpkg.com/circuitsvis@{circuitsvis.__version__}/dist/cdn/esm.js"
        return (
            f'<div id="{self.element_id}" style="margin: 15px 0;"></div>\n'
            f'<script crossorigin type="module">\nimport {{ render, {self.component} }} from '
            f'"{url}";\nrender({json.dumps(self.element_id)}, {self.component}, '
            f"{_props_js(self.props)});\n</script>"
        )

    def _repr_html_(self) -> str:
        return self.offline_html() if self.offline else self.cdn_html()

    def __html__(self) -> str:
        return self._repr_html_()

    def to_html(self) -> str:
        """A complete offline HTML document."""
        return page(self.title, self.offline_html())

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_html` atomically; returns the path."""
        atomic_write_text(path, self.to_html())
        return Path(path)

    def __repr__(self) -> str:
        return f"CvView({self.component}, props={sorted(self.props)}, offline={self.offline})"


def _values(arr: np.ndarray, decimals: int | None) -> np.ndarray:
    """float32 values, or float64 rounded to ``decimals`` (JSON then writes ``0.0123``)."""
    if decimals is None:
        return arr.astype("float32")
    if decimals < 0:
        raise ValueError(f"decimals must be >= 0 or None, got {decimals!r}")
    # float64: a rounded float32 would still print as 0.012299999594688416
    return np.round(arr.astype(np.float64), decimals)


def _labels(tokens: Trace | Sequence[str], n: int) -> list[str]:
    labels = token_labels(tokens) if isinstance(tokens, Trace) else [str(t) for t in tokens]
    if len(labels) != n:
        raise ValueError(f"{len(labels)} tokens for {n} positions")
    return labels


def attention_heads(
    attention: ArrayLike,
    tokens: Trace | Sequence[str],
    *,
    head_names: Sequence[str] | None = None,
    max_value: RealLike | None = None,
    mask_upper_tri: bool = True,
    decimals: int | None = None,
    offline: bool = True,
) -> CvView:
    """CircuitsVis ``AttentionHeads``: a thumbnail per head, click to enlarge.

    Args:
        attention: ``[head, query, key]`` (e.g. ``cache["pattern", layer][0]`` on the
            TEMPO state, or ``AttentionData.full_tensor()[layer]``).
        tokens: The trace (labels ``text|step``) or one label per position.
        head_names: Names of the heads (default: circuitsvis' ``Head 0``, ``Head 1``, ...).
        max_value: Colour-scale maximum.
        mask_upper_tri: Hide the causal upper triangle.
        decimals: Round the embedded values to this many decimals (``None``: float32 as
            is). A ``[head, n, n]`` view embeds ``head * n**2`` numbers as JSON, so rounding
            to 4 decimals makes a large view about three times smaller.
        offline: See :class:`CvView`.

    Raises:
        ValueError: ``attention`` is not 3-D, the labels do not match its key axis, or
            ``decimals`` is negative.
    """
    arr = to_numpy(attention, ndim=3, name="attention")
    labels = _labels(tokens, arr.shape[-1])
    props = {
        "attention": _values(arr, decimals),
        "tokens": labels,
        "attentionHeadNames": list(head_names) if head_names is not None else None,
        "maxValue": _scale("max_value", max_value),
        "minValue": 0.0,
        "maskUpperTri": mask_upper_tri,
    }
    return CvView("AttentionHeads", props, offline=offline, title="attention heads")


def attention_pattern(
    attention: ArrayLike,
    tokens: Trace | Sequence[str],
    *,
    max_value: RealLike | None = None,
    show_axis_labels: bool = True,
    mask_upper_tri: bool = True,
    decimals: int | None = None,
    offline: bool = True,
) -> CvView:
    """CircuitsVis ``AttentionPattern``: one ``[query, key]`` heatmap with hover values.

    Args:
        attention: ``[query, key]`` (square: both axes are the same tokens).
        tokens: The trace or one label per position.
        max_value: Colour-scale maximum.
        show_axis_labels: Label the axes.
        mask_upper_tri: Hide the causal upper triangle.
        decimals: Round the embedded values to this many decimals (``None``: float32 as is).
        offline: See :class:`CvView`.

    Raises:
        ValueError: ``attention`` is not 2-D, the labels do not match its key axis, or
            ``decimals`` is negative.
    """
    arr = to_numpy(attention, ndim=2, name="attention")
    labels = _labels(tokens, arr.shape[-1])
    props = {
        "attention": _values(arr, decimals),
        "tokens": labels,
        "maxValue": _scale("max_value", max_value),
        "minValue": 0.0,
        "showAxisLabels": show_axis_labels,
        "maskUpperTri": mask_upper_tri,
    }
    return CvView("AttentionPattern", props, offline=offline, title="attention pattern")


def colored_tokens(
    tokens: Trace | Sequence[str],
    values: ArrayLike,
    *,
    min_value: RealLike | None = None,
    max_value: RealLike | None = None,
    offline: bool = True,
) -> CvView:
    """CircuitsVis ``ColoredTokens``: each token coloured by a value (hover shows it).

    Args:
        tokens: The trace or one label per token.
        values: One value per token (e.g. attention received by each key).
        min_value: Colour-scale minimum.
        max_value: Colour-scale maximum.
        offline: See :class:`CvView`.
    """
    vals = to_numpy(values, ndim=1, name="values")
    labels = _labels(tokens, vals.shape[0])
    props = {
        "tokens": labels,
        "values": vals,
        "minValue": _scale("min_value", min_value),
        "maxValue": _scale("max_value", max_value),
    }
    return CvView("ColoredTokens", props, offline=offline, title="colored tokens")


def probability_tokens(trace: Trace, *, offline: bool = True) -> CvView:
    """The trace's tokens coloured by selection probability (prompt tokens at 0)."""
    probs = [t.probability if t.probability is not None else 0.0 for t in trace.tokens]
    return colored_tokens(trace, probs, min_value=0.0, max_value=1.0, offline=offline)
