"""Write the docs notebooks (without outputs; the test suite executes them).

* ``docs/notebooks/walkthrough.ipynb``: a TEMPO run on the tiny model, every display
  (executed by ``tests/model/test_notebook.py``);
* ``docs/notebooks/debugging.ipynb``: debugging one generation of the default model — its
  least confident step, the alternatives, their attention, the pruning decisions around
  it, and each alternative replayed (executed by ``tests/slow/test_debugging_notebook.py``).

Usage: ``python docs/make_notebook.py [OUT_DIR]``. Edit the cells here, not in the .ipynb.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

OUT = Path(__file__).parent / "notebooks"

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
from tempo_lens.hooks.capture import AttentionCapture
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


DEBUG_CELLS = [
    (
        "md",
        """# Debugging one generation

A TEMPO generation on the default model (SmolLM2-135M) with a poor step: which step was the
model least sure about, what were the alternatives, what did they attend to, what did
pruning decide around it, and would a rejected alternative have done better? Each question
is one call of `tempo_lens`.""",
    ),
    (
        "code",
        """import tempo_lens as tl
from tempo_lens import display as tld
from tempo_lens.analysis.paths import replay_alternatives
from tempo_lens.analysis.steps import poorest_step, pruning_analysis, step_alternatives
from tempo_lens.hooks.capture import AttentionCapture

model = tl.load_model()
config = tl.TempoConfig(
    selection_threshold=0.1, max_steps=12, prune=tl.PruningConfig(rule=tl.RelativeRule(ratio=0.5))
)
capture = AttentionCapture()
prompt = "The lighthouse keeper climbed the stairs one last time and"
trace = tl.generate(model, prompt, config, observers=[capture])
data = capture.result(trace)
print(trace.bracket_text())""",
    ),
    (
        "md",
        """## The poor step and its alternatives
`poorest_step` picks the step whose most probable candidate had the lowest probability
(here among steps with at least two candidates); `step_alternatives` lists every candidate
with its probability, whether it was appended, pruned, and which one the clean text kept.""",
    ),
    (
        "code",
        """step = poorest_step(trace, min_candidates=2)
print(f"step {step}: top probability {trace.steps[step].candidates[0].probability:.3f}")
step_alternatives(trace, step)""",
    ),
    (
        "md",
        """## What the alternatives attend to
Each member's attention over the context (mean over layers and heads), top keys first.
Labels: prompt tokens plain, generated tokens `text|step`.""",
    ),
    (
        "code",
        """labels = tld.token_labels(trace)
members = trace.steps[step].indices
rows = data.step_matrix(step)  # [member, key]
print(tld.parallel_bars(rows, [labels[i] for i in members], labels[: rows.shape[1]], top_k=4))""",
    ),
    (
        "md",
        """## Pruning decisions around it
Every retroactive pruning decision on the sets of the step before, the step itself and the
step after (score = attention the member received from the judging step's tokens).""",
    ),
    (
        "code",
        """decisions = pruning_analysis(trace).decisions
decisions[(decisions["set_step"] - step).abs() <= 1]""",
    ),
    ("code", "print(tld.tree_text(trace))"),
    (
        "md",
        """## Would a rejected alternative have done better?
`replay_alternatives` appends each candidate to the prompt and the clean path before the
step, as a plain sequence (no TEMPO hooks), and continues it greedily: `member_nll` is the
candidate's own `-ln p`, `path_nll` the mean over it and its continuation. The lowest
`path_nll` is the alternative the plain model finds most likely over the horizon.""",
    ),
    (
        "code",
        """alts = replay_alternatives(model, trace, step, horizon=8)
best = alts.loc[alts["path_nll"].idxmin()]
kept = alts.loc[alts["clean"]].iloc[0]
print(f"kept {kept['text']!r}: path NLL {kept['path_nll']:.3f}; "
      f"best {best['text']!r}: {best['path_nll']:.3f} -> {best['continuation']!r}")
alts[["text", "probability", "clean", "member_nll", "continuation", "path_nll"]]""",
    ),
]

NOTEBOOKS = {"walkthrough.ipynb": CELLS, "debugging.ipynb": DEBUG_CELLS}


def build(name: str = "walkthrough.ipynb") -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [
        new_markdown_cell(src) if kind == "md" else new_code_cell(src)
        for kind, src in NOTEBOOKS[name]
    ]
    for i, cell in enumerate(nb.cells):  # stable ids: regenerating gives the same file
        cell["id"] = f"cell-{i:02d}"
    return nb


def main(argv: list[str] | None = None) -> list[Path]:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else OUT
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in NOTEBOOKS:
        nbformat.write(build(name), str(out / name))
        paths.append(out / name)
    return paths


if __name__ == "__main__":
    main()
