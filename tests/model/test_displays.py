"""Figures, circuitsvis views and the run report on the tiny model."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tempo_lens import PruningConfig, RelativeRule, TempoConfig, attach, generate
from tempo_lens.display import (
    attention_heads,
    attention_heatmap_figure,
    attention_pattern,
    colored_tokens,
    head_entropy_figure,
    layer_entropy_figure,
    parallel_groups,
    parallel_vs_nonparallel_figure,
    probability_tokens,
    pruning_scores_figure,
    render_run,
    token_labels,
    widths_figure,
)
from tempo_lens.display._common import script_json
from tempo_lens.display.cv import bundle_script
from tests.display_fixtures import hand_trace

PNG = b"\x89PNG\r\n\x1a\n"
# an attribute or CSS reference that would make a browser fetch something remote
EXTERNAL = re.compile(
    r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?\s*(?:https?:)?//|@import|from\s+["']https?://""",
    re.I,
)


@pytest.fixture(scope="module")
def run(tiny):
    cfg = TempoConfig(
        selection_threshold=0.05, max_steps=4, prune=PruningConfig(rule=RelativeRule(ratio=0.7))
    )
    trace = generate(tiny, [1, 2, 3, 4, 5], cfg)
    st = trace.to_state()
    with attach(tiny, st):
        _, cache = tiny.run_with_cache(st.tokens_tensor())
    pattern = np.stack([cache["pattern", layer][0].numpy() for layer in range(tiny.cfg.n_layers)])
    return trace, pattern


def _is_png(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG


def test_every_figure_writes_a_png(run, tmp_path: Path) -> None:
    trace, pattern = run
    labels = token_labels(trace)
    groups = parallel_groups(trace)
    assert groups, "the fixture should have parallel sets"
    ent = -(pattern * np.log(np.clip(pattern, 1e-12, None))).sum(-1).mean(-1)  # layer head
    decisions = [d for s in trace.steps for d in s.pruning]
    assert any(d.pruned for d in decisions)
    paths = [
        attention_heatmap_figure(pattern[0].mean(0), labels, labels, row_groups=groups,
                                 col_groups=groups, path=tmp_path / "heat.png"),
        layer_entropy_figure({"mean": ent.mean(1), "max": ent.max(1)}, path=tmp_path / "le.png"),
        head_entropy_figure(ent, path=tmp_path / "he.png"),
        widths_figure(trace.widths(), thresholds=[s.threshold for s in trace.steps],
                      pruned=[1, 0, 2, 0], path=tmp_path / "w.png"),
        parallel_vs_nonparallel_figure(ent.mean(1), ent.min(1), path=tmp_path / "pv.png"),
        pruning_scores_figure(decisions, path=tmp_path / "pr.png"),
        pruning_scores_figure([], path=tmp_path / "empty.png"),
    ]  # fmt: skip
    for name in ("heat", "le", "he", "w", "pv", "pr", "empty"):
        assert _is_png(tmp_path / f"{name}.png"), name
    assert all(hasattr(f, "savefig") for f in paths)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_cv_views_are_offline(run, tmp_path: Path) -> None:
    trace, pattern = run
    views = [
        attention_heads(pattern[1], trace),
        attention_pattern(pattern[0, 0], trace),
        colored_tokens(trace, pattern[0].mean(0).sum(0)),
        probability_tokens(trace),
    ]
    bundle = bundle_script()
    assert len(bundle) > 500_000 and "CircuitsVis" in bundle
    for v in views:
        html = v._repr_html_()
        assert bundle in html  # the inline bundle, not the CDN
        assert "unpkg.com" not in html and not EXTERNAL.search(html)
        # prompt tokens plain; "<" inside the inline JSON is escaped as \u003c
        assert "\\u003c1\\u003e|" not in html and "\\u003c6" in html
        assert "CircuitsVis.render(" in html
    labels = token_labels(trace)
    assert any("|0" in lab for lab in labels)
    assert all(f'"{script_json(lab)}"' in views[0].fragment_html() for lab in labels[:5])
    saved = views[0].save(tmp_path / "heads.html").read_text()
    assert saved.startswith("<!DOCTYPE html>") and bundle in saved
    online = attention_heads(pattern[1], trace, offline=False)._repr_html_()
    assert "unpkg.com/circuitsvis" in online and bundle not in online


def test_cv_escapes_script_breaking_tokens() -> None:
    view = colored_tokens(["</script><b>", "x"], [0.5, 1.0])
    frag = view.fragment_html()
    assert "</script><b>" not in frag and "\\u003c/script\\u003e\\u003cb\\u003e" in frag


def test_cv_label_count_must_match() -> None:
    with pytest.raises(ValueError, match="tokens"):
        attention_pattern(np.eye(3), ["a", "b"])


def test_render_run_bare_trace_has_no_external_urls(tmp_path: Path) -> None:
    paths = render_run(tmp_path, hand_trace())
    names = {p.name for p in paths}
    assert {"report.html", "tree.txt", "tree.html", "widths.png", "pruning.png"} <= names
    html = (tmp_path / "report.html").read_text()
    assert not EXTERNAL.search(html)
    assert "The cat sat on the" in html and "<svg" in html
    assert html.count("data:image/png;base64,") == 2


def test_render_run_with_analysis(tiny, tmp_path: Path) -> None:
    analysis = pytest.importorskip("tempo_lens.analysis.run")
    from tempo_lens.hooks.capture import AttentionCapture

    cap = AttentionCapture()
    cfg = TempoConfig(
        selection_threshold=0.05, max_steps=4, prune=PruningConfig(rule=RelativeRule(ratio=0.7))
    )
    trace = generate(tiny, [1, 2, 3, 4, 5], cfg, observers=[cap])
    data = cap.result(trace)
    paths = render_run(tmp_path, trace, data, analysis.analyze_data(trace, data))
    for p in paths:
        assert p.exists() and p.stat().st_size > 0, p
        if p.suffix == ".png":
            assert _is_png(p), p
    html = (tmp_path / "report.html").read_text()
    assert not EXTERNAL.search(html)
    # outside the inline circuitsvis bundle (whose JS strings mention URLs) no URL at all
    outside = html.replace(bundle_script(), "")
    assert "http://" not in outside and "https://" not in outside
    assert html.count(bundle_script()) == 1  # one bundle for all views
    assert html.count('class="tempo-cv"') >= 3
    assert html.count("data:image/png;base64,") >= 7
    ascii_txt = (tmp_path / "attention_ascii.txt").read_text()
    assert "verdict: ISOLATED" in ascii_txt and "NOT ISOLATED" not in ascii_txt
    assert "Isolation check: max sibling attention 0.000e+00" in html
