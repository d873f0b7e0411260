"""Displays of TEMPO runs: text, figures, circuitsvis views, token tree, HTML report.

Display code renders data it is given (tensors, arrays, DataFrames, a trace); it computes
no analysis and makes no network request.

* :mod:`~tempo_lens.display.ascii` — ASCII heatmaps, bars, cross-parallel matrices (the
  verdict and the heatmap JSON come from :mod:`tempo_lens.analysis`, re-exported here);
* :mod:`~tempo_lens.display.figures` — matplotlib PNGs (Agg);
* :mod:`~tempo_lens.display.cv` — circuitsvis views that render offline;
* :mod:`~tempo_lens.display.tree` — the token lattice as text and inline SVG;
* :mod:`~tempo_lens.display.report` — one self-contained HTML report;
* :func:`render_run` — all of the above for an analysis run directory.
"""

from tempo_lens.analysis.export import heatmap_data, save_heatmap_json
from tempo_lens.analysis.patterns import isolation_verdict
from tempo_lens.display._common import HtmlView, parallel_groups, token_labels
from tempo_lens.display.ascii import (
    attention_bars,
    attention_heatmap,
    cross_parallel,
    parallel_bars,
)
from tempo_lens.display.cv import (
    CvView,
    attention_heads,
    attention_pattern,
    colored_tokens,
    probability_tokens,
)
from tempo_lens.display.figures import (
    attention_heatmap_figure,
    head_entropy_figure,
    layer_entropy_figure,
    parallel_vs_nonparallel_figure,
    pruning_scores_figure,
    save_png,
    widths_figure,
)
from tempo_lens.display.report import report_html, write_report
from tempo_lens.display.run import render_run
from tempo_lens.display.tree import tree_svg, tree_text, tree_view

__all__ = [
    "CvView",
    "HtmlView",
    "attention_bars",
    "attention_heads",
    "attention_heatmap",
    "attention_heatmap_figure",
    "attention_pattern",
    "colored_tokens",
    "cross_parallel",
    "head_entropy_figure",
    "heatmap_data",
    "isolation_verdict",
    "layer_entropy_figure",
    "parallel_bars",
    "parallel_groups",
    "parallel_vs_nonparallel_figure",
    "probability_tokens",
    "pruning_scores_figure",
    "render_run",
    "report_html",
    "save_heatmap_json",
    "save_png",
    "token_labels",
    "tree_svg",
    "tree_text",
    "tree_view",
    "widths_figure",
    "write_report",
]
