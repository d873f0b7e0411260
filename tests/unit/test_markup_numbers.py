"""Issue 10, kinds 2 and 3: token text is literal in every renderer; NumPy/torch scalars
are plain numbers in configs and JSON writers."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math

import html5lib
import numpy as np
import pytest
import torch
from rich.console import Console

from tempo_lens import (
    AbsoluteRule,
    PositionScheme,
    ProbabilityRatioRule,
    PruningConfig,
    RelativeRule,
    TempoConfig,
    ThresholdSchedule,
    Trace,
)
from tempo_lens.cli.stats import rich_table
from tempo_lens.display import figures as fg
from tempo_lens.display.cv import CvView, attention_pattern, colored_tokens
from tempo_lens.display.report import report_html
from tempo_lens.display.run import render_run
from tempo_lens.io import atomic_write_json
from tests.display_fixtures import hand_trace

NASTY = ["<!--", "<script>", "</script>", "a & b > c", "\u2028", "$$", "[bold]x[/bold]"]


def _marked(texts: list[str]) -> Trace:
    """The hand trace with its token texts replaced by ``texts`` (cycled)."""
    trace = hand_trace()
    return dataclasses.replace(trace, texts=[texts[i % len(texts)] for i in range(8)])


# --------------------------------------------------------------------------- HTML
def _scripts_and_views(html: str) -> tuple[list[str], list]:
    doc = html5lib.parse(html, namespaceHTMLElements=False)
    scripts = [s.text or "" for s in doc.iter("script")]
    views = [d for d in doc.iter("div") if "tempo-cv" in (d.get("class") or "")]
    return scripts, views


def _render_props(script: str) -> dict:
    """The props JSON of a ``CircuitsVis.render(id, component, props);`` call."""
    args = script[script.index("(") + 1 : script.rindex(")")]
    return json.loads(args.split(", ", 2)[2])


def test_report_keeps_every_view_whatever_the_tokens() -> None:
    trace = _marked(NASTY)
    views = {f"view {i}": attention_pattern(np.tril(np.ones((8, 8))) / 8, trace) for i in range(3)}
    scripts, divs = _scripts_and_views(report_html(trace, views=views))
    renders = [s for s in scripts if "CircuitsVis.render(" in s and "CircuitsVis.Attention" in s]
    assert len(divs) == 3 and len(renders) == 3  # main: 1 of 3 survives the HTML5 parser
    labels = _render_props(renders[-1])["tokens"]
    assert labels[:5] == NASTY[:5]  # the JSON still carries the literal token text


def test_inline_json_escapes_markup_and_line_separators() -> None:
    view = colored_tokens(NASTY, np.arange(len(NASTY)))
    for html in (view.fragment_html(), view.cdn_html()):
        body = html.split("<script", 2)[-1]
        assert not any(ch in body.split(">", 1)[1].rsplit("</script>", 1)[0] for ch in "<&\u2028")
    scripts, _ = _scripts_and_views(view.cdn_html())
    assert "render(" in scripts[-1]
    with pytest.raises(ValueError, match="component"):
        CvView("X);alert(1", {})


# --------------------------------------------------------------------------- matplotlib
def test_matplotlib_labels_are_literal_text() -> None:
    labels = ["$$", "$x^2$", "a$b", "\\$"]
    fig = fg.attention_heatmap_figure(np.eye(4), labels, labels, title="$$ title")
    fg.png_bytes(fig)  # main: ParseException from mathtext
    ax = fig.axes[0]
    shown = [t._preprocess_math(t.get_text()) for t in ax.get_xticklabels()]
    assert shown == [(lab, False) for lab in labels]
    assert ax.title._preprocess_math(ax.title.get_text()) == ("$$ title", False)
    fg.png_bytes(fg.layer_entropy_figure({"$a$": [1.0, 2.0]}, ylabel="$$"))


def test_render_run_reports_failures(tmp_path, monkeypatch, caplog) -> None:
    trace = _marked(NASTY)
    written = render_run(tmp_path / "ok", trace)
    assert tmp_path / "ok" / "figures" / "widths.png" in written
    assert "Rendering failure" not in (tmp_path / "ok" / "report.html").read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("renderer exploded")

    monkeypatch.setattr(fg, "widths_figure", broken)
    with caplog.at_level(logging.WARNING):
        render_run(tmp_path / "bad", trace)
    report = (tmp_path / "bad" / "report.html").read_text()
    assert "Rendering failure: figure widths.png" in report and "renderer exploded" in report
    assert any("renderer exploded" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- rich
def test_rich_table_cells_are_literal() -> None:
    buf = io.StringIO()
    rows = [("ratio mean [CI]", "nan [nan, nan]"), ("markup", "[bold]x[/bold]")]
    Console(file=buf, width=100).print(rich_table("t [x]", rows))
    out = buf.getvalue()
    assert "nan [nan, nan]" in out and "[bold]x[/bold]" in out and "t [x]" in out


# --------------------------------------------------------------------------- numbers
SCALARS = {
    "numpy": (np.float32(0.25), np.int64(3), np.bool_(False)),
    "torch": (torch.tensor(0.25), torch.tensor(3), torch.tensor(False)),
    "0-d array": (np.array(0.25), np.array(3), np.array(False)),
}


@pytest.mark.parametrize("kind", sorted(SCALARS))
def test_configs_normalise_scalars_to_python(kind: str) -> None:
    real, integer, flag = SCALARS[kind]
    cfg = TempoConfig(
        selection_threshold=real,
        max_steps=integer,
        min_steps=integer,
        max_parallel=integer,
        isolate=flag,
        positions=PositionScheme(member_offset=real),
        schedule=ThresholdSchedule(kind="linear", tau0=real, tau_final=real),
        prune=PruningConfig(rule=RelativeRule(ratio=real), lookahead=integer, layers=np.arange(2)),
        prefilter=ProbabilityRatioRule(ratio=real),
    )
    plain = TempoConfig(
        selection_threshold=0.25,
        max_steps=3,
        min_steps=3,
        max_parallel=3,
        isolate=False,
        positions=PositionScheme(member_offset=0.25),
        schedule=ThresholdSchedule(kind="linear", tau0=0.25, tau_final=0.25),
        prune=PruningConfig(rule=RelativeRule(ratio=0.25), lookahead=3, layers=(0, 1)),
        prefilter=ProbabilityRatioRule(ratio=0.25),
    )
    assert cfg == plain
    text = json.dumps(cfg.to_dict())  # plain Python all the way down
    assert TempoConfig.from_dict(json.loads(text)) == plain
    assert type(cfg.max_steps) is int and type(cfg.selection_threshold) is float
    assert type(AbsoluteRule(threshold=real).threshold) is float


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: TempoConfig(selection_threshold=np.float32(1.5)), "selection_threshold"),
        (lambda: TempoConfig(max_steps=np.int64(0)), "max_steps"),
        (lambda: TempoConfig(max_parallel=torch.tensor(0)), "max_parallel"),
        (lambda: RelativeRule(ratio=np.float64(1.5)), "ratio"),
        (lambda: PruningConfig(rule=RelativeRule(ratio=0.5), layers=np.array([-1])), "layer"),
        (lambda: PositionScheme(member_offset=np.float32(-1)), "member_offset"),
        (lambda: ThresholdSchedule(tau0=np.float32(0.2), tau_final=np.float32(0)), "tau_final"),
    ],
)
def test_bad_config_values_are_named(build, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: TempoConfig(selection_threshold="0.1"), "selection_threshold"),
        (lambda: TempoConfig(max_steps=3.0), "max_steps"),
        (lambda: TempoConfig(isolate="yes"), "isolate"),
        (lambda: RelativeRule(ratio="0.5"), "ratio"),
        (lambda: PruningConfig(rule=RelativeRule(ratio=0.5), layers=3), "layers"),
        (lambda: PositionScheme(member_offset="0"), "member_offset"),
    ],
)
def test_wrong_types_are_refused_naming_the_field(build, match: str) -> None:
    # ValueError from the config; under the test suite's runtime type checking the
    # annotation check (a TypeError naming the parameter) may come first.
    with pytest.raises((ValueError, TypeError), match=match):
        build()


def test_json_writers_accept_numpy_scalars(tmp_path) -> None:
    data = {"a": np.float32(0.5), "b": np.int64(2), "c": np.arange(3), "d": torch.tensor(1.5)}
    atomic_write_json(tmp_path / "x.json", data)
    assert json.loads((tmp_path / "x.json").read_text()) == {
        "a": 0.5,
        "b": 2,
        "c": [0, 1, 2],
        "d": 1.5,
    }
    trace = hand_trace()
    trace.extra["score"] = np.float32(0.25)
    assert json.loads(trace.to_json())["extra"]["score"] == 0.25
    # strict JSON: NaN is written as null by default, refused on request (nothing written)
    atomic_write_json(tmp_path / "nan.json", {"x": np.float32(math.nan)})
    assert json.loads((tmp_path / "nan.json").read_text()) == {"x": None}
    with pytest.raises(ValueError, match="x is not a finite number"):
        atomic_write_json(tmp_path / "nan2.json", {"x": np.float32(math.nan)}, nan="raise")
    assert not (tmp_path / "nan2.json").exists()


def test_display_scales_accept_numpy_and_torch_scalars() -> None:
    view = colored_tokens(
        ["a", "b"], [0.1, 0.2], min_value=np.float32(0), max_value=torch.tensor(1)
    )
    assert view.props["minValue"] == 0.0 and view.props["maxValue"] == 1.0
    view.fragment_html()
    with pytest.raises(ValueError, match="max_value"):
        colored_tokens(["a"], [0.1], max_value=float("nan"))
