"""Reports of long runs stay bounded; the full data is kept beside them; provenance recorded.

A long tiny-model run (over :data:`~tempo_lens.display.run.REPORT_MAX_TOKENS` tokens) used
to embed every ``[head, n, n]`` pattern of the last layer as JSON in ``report.html`` and
densify ``[layer, head, n, n]`` twice to draw it.
"""

from __future__ import annotations

import json
import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from tempo_lens import TempoConfig, generate
from tempo_lens.analysis.run import analyze_data
from tempo_lens.display import render_run, token_labels
from tempo_lens.display.cv import attention_heads, bundle_script
from tempo_lens.display.run import FULL_DATA_NAME, REPORT_MAX_TOKENS
from tempo_lens.hooks.capture import AttentionCapture

# the thinned heads view (4 heads x 256**2 values of at most ~7 characters) and the bundle,
# plus what grows linearly with the run (figures, tree, text views: ~2 MB at 509 tokens).
# Unthinned, the view alone is 4 x 509**2 values of ~11 characters (over 11 MB).
BOUND = len(bundle_script()) + 4 * REPORT_MAX_TOKENS**2 * 7 + 4_000_000


@pytest.fixture(scope="module")
def long_run(tiny):
    cap = AttentionCapture()
    cfg = TempoConfig(selection_threshold=0.05, max_steps=160, stop_at_eos=False)
    trace = generate(tiny, [3, 14, 15], cfg, observers=[cap])
    data = cap.result(trace)
    assert len(trace.state) > REPORT_MAX_TOKENS + 40, len(trace.state)
    return trace, data


@pytest.fixture(scope="module")
def long_dir(long_run, tmp_path_factory):
    trace, data = long_run
    out = tmp_path_factory.mktemp("long")
    render_run(out, trace, data, analyze_data(trace, data))
    return out


def test_long_report_is_bounded_and_says_what_was_thinned(long_run, long_dir: Path) -> None:
    trace, _ = long_run
    n = len(trace.state)
    size = (long_dir / "report.html").stat().st_size
    assert size < BOUND, (size, BOUND)
    html = (long_dir / "report.html").read_text(encoding="utf-8")
    assert f"Thinned: this run has {n} tokens (more than {REPORT_MAX_TOKENS})" in html
    assert FULL_DATA_NAME in html
    assert f"(last {REPORT_MAX_TOKENS} of {n} tokens)" in html
    props = re.search(r"CircuitsVis\.AttentionHeads, (\{.*?\})\);</script>", html).group(1)
    assert np.asarray(json.loads(props)["attention"]).shape == (4, 256, 256)
    heat = json.loads((long_dir / "heatmap.json").read_text(encoding="utf-8"))
    assert heat["shape"] == [REPORT_MAX_TOKENS, REPORT_MAX_TOKENS]
    assert heat["thinned"] == {
        "first_token": n - REPORT_MAX_TOKENS,
        "n_tokens": n,
        "full_data": FULL_DATA_NAME,
        "full_data_key": "mean",
    }
    assert heat["source_labels"] == token_labels(trace)[n - REPORT_MAX_TOKENS :]


def test_side_file_holds_the_full_data_exactly(long_run, long_dir: Path) -> None:
    trace, data = long_run
    with np.load(long_dir / FULL_DATA_NAME) as z:
        np.testing.assert_array_equal(z["mean"], data.full_matrix())
        last = data.layers[-1]
        np.testing.assert_array_equal(z[f"layer{last}"], data.full_tensor()[-1])
        assert z["mean"].dtype == np.float32 and z[f"layer{last}"].dtype == np.float32
        assert z["labels"].tolist() == token_labels(trace)
    # the thinned window of heatmap.json is the side file's tail, to the float
    heat = json.loads((long_dir / "heatmap.json").read_text(encoding="utf-8"))
    start = heat["thinned"]["first_token"]
    np.testing.assert_array_equal(
        np.asarray(heat["values"], dtype=np.float32), data.full_matrix()[start:, start:]
    )


def test_short_run_is_not_thinned_unless_asked(tiny, tmp_path: Path) -> None:
    cap = AttentionCapture()
    trace = generate(tiny, [3, 14, 15], TempoConfig(max_steps=6), observers=[cap])
    data = cap.result(trace)
    n = len(trace.state)
    render_run(tmp_path / "short", trace, data)
    html = (tmp_path / "short" / "report.html").read_text(encoding="utf-8")
    assert "Thinned" not in html and not (tmp_path / "short" / FULL_DATA_NAME).exists()
    heat = json.loads((tmp_path / "short" / "heatmap.json").read_text(encoding="utf-8"))
    assert heat["shape"] == [n, n] and "thinned" not in heat
    # the same run past a lower bound is thinned to it
    render_run(tmp_path / "cut", trace, data, max_tokens=4)
    html = (tmp_path / "cut" / "report.html").read_text(encoding="utf-8")
    assert f"Thinned: this run has {n} tokens (more than 4)" in html
    heat = json.loads((tmp_path / "cut" / "heatmap.json").read_text(encoding="utf-8"))
    assert heat["shape"] == [4, 4]
    with pytest.raises(ValueError, match="max_tokens"):
        render_run(tmp_path / "bad", trace, data, max_tokens=0)
    # a later unthinned run into the thinned directory leaves no stale side file behind
    assert (tmp_path / "cut" / FULL_DATA_NAME).exists()
    render_run(tmp_path / "cut", trace, data)
    assert not (tmp_path / "cut" / FULL_DATA_NAME).exists()


def test_full_matrix_does_not_densify_every_layer(long_run) -> None:
    _, data = long_run
    n = len(data)
    dense = len(data.layers) * len(data.heads) * n * n * 4
    expected = data.select(data.full_tensor(), None, None, "mean")
    tracemalloc.start()
    try:
        got = data.full_matrix()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(got, expected)
    assert peak < dense / 2, (peak, dense)
    tail = data.full_tensor([data.layers[0]], start=n - 10)
    np.testing.assert_array_equal(tail, data.full_tensor()[:1, :, n - 10 :, n - 10 :])
    with pytest.raises(ValueError, match="not captured"):
        data.full_tensor([99])


def test_attention_heads_rounds_when_asked() -> None:
    pattern = np.full((1, 2, 2), 1 / 3, dtype=np.float32)
    view = attention_heads(pattern, ["a", "b"], decimals=4)
    assert "0.3333," in view.fragment_html() and "0.33333" not in view.fragment_html()
    assert "0.3333333" in attention_heads(pattern, ["a", "b"]).fragment_html()
    with pytest.raises(ValueError, match="decimals"):
        attention_heads(pattern, ["a", "b"], decimals=-1)
