"""Write ``docs/notebooks/walkthrough.ipynb``: a TEMPO run on the tiny model, every display.

Usage: ``python docs/make_notebook.py [OUT.ipynb]``. The notebook is written without
outputs (the test suite executes it: ``tests/model/test_notebook.py``). Edit the cells
here, not in the .ipynb.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

OUT = Path(__file__).parent / "notebooks" / "walkthrough.ipynb"

CELLS = [
    (
        "md",
        """# TEMPO displays: a walkthrough

A TEMPO generation on the tiny random model (`make_tiny_model()`: no download, runs in
seconds), captured attention, the analyses, and every display of `tempo_lens.display`:
text, token tree, figures, circuitsvis views (offline) and the HTML report. With the real
model use `model = load_model()` and a text prompt; everything else is unchanged.""",
    ),
    (
        "code",
        """from pathlib import Path
import tempfile

from IPython.display import Image, display

from tempo_lens import PruningConfig, RelativeRule, TempoConfig, generate, make_tiny_model
from tempo_lens.analysis.run import analyze_data
from tempo_lens.capture import AttentionCapture
from tempo_lens import display as tld
from tempo_lens.display.figures import png_bytes

model = make_tiny_model()
config = TempoConfig(
    selection_threshold=0.05, max_steps=5, prune=PruningConfig(rule=RelativeRule(ratio=0.7))
)
capture = AttentionCapture()
trace = generate(model, [1, 2, 3, 4, 5], config, observers=[capture])
data = capture.result(trace)
results = analyze_data(trace, data)
print(trace.bracket_text())
print(trace.clean_text())""",
    ),
    (
        "md",
        """## The token tree
Each step's set is a column; red is the clean path (top surviving member per step),
dashed grey members were pruned (✗ = the step that pruned them).""",
    ),
    ("code", "print(tld.tree_text(trace))"),
    ("code", "tld.tree_view(trace)"),
    (
        "md",
        """## Text views
Labels: prompt tokens plain, generated tokens `text|step`, pruned ones `~text~|step`.""",
    ),
    (
        "code",
        """labels = tld.token_labels(trace)
print(tld.attention_heatmap(data.full_matrix(), labels, labels))""",
    ),
    (
        "code",
        """step = max(range(len(trace.steps)), key=lambda s: len(trace.steps[s].indices))
members = trace.steps[step].indices
rows = data.step_matrix(step)               # [member, key], mean over layers and heads
print(tld.cross_parallel(rows[:, members], [labels[i] for i in members],
                         expect_isolated=trace.isolate))
print()
print(tld.parallel_bars(rows, [labels[i] for i in members], labels[: rows.shape[1]], top_k=3))""",
    ),
    ("md", "## Figures"),
    (
        "code",
        """groups = tld.parallel_groups(trace)
fig = tld.attention_heatmap_figure(data.full_matrix(), labels, labels,
                                   row_groups=groups, col_groups=groups)
display(Image(png_bytes(fig)))""",
    ),
    (
        "code",
        """w = results["widths"]
display(Image(png_bytes(tld.widths_figure(w["width"], thresholds=w["threshold"],
                                          pruned=w["pruned_later"]))))
display(Image(png_bytes(tld.head_entropy_figure(results["entropy"].per_head))))
display(Image(png_bytes(tld.pruning_scores_figure(results["pruning"].decisions))))""",
    ),
    (
        "md",
        """## circuitsvis, offline
The views carry the circuitsvis JavaScript bundle inline: they render without internet.""",
    ),
    (
        "code",
        """tld.attention_heads(data.full_tensor()[-1], trace,
                    head_names=[f"L{data.layers[-1]}H{h}" for h in data.heads])""",
    ),
    ("code", "tld.probability_tokens(trace)"),
    (
        "md",
        "## The report\n`render_run` writes figures, text views and one self-contained `report.html`.",
    ),
    (
        "code",
        """out = Path(tempfile.mkdtemp(prefix="tempo_walkthrough_"))
paths = tld.render_run(out, trace, data, results)
sorted(str(p.relative_to(out)) for p in paths)""",
    ),
]


def build() -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [
        new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in CELLS
    ]
    for i, cell in enumerate(nb.cells):  # stable ids: regenerating gives the same file
        cell["id"] = f"cell-{i:02d}"
    return nb


def main(argv: list[str] | None = None) -> Path:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(build(), str(out))
    return out


if __name__ == "__main__":
    main()
