"""Attention capture and analysis on the real default model (SmolLM2-135M-Instruct)."""

from __future__ import annotations

import json

import pytest

from experiments import run_attention_analysis
from tempo_lens import TempoConfig, generate
from tempo_lens.analysis import isolation_check, received_attention
from tempo_lens.hooks.capture import AttentionCapture

pytestmark = pytest.mark.slow

PROMPT = "The cat sat on the"


@pytest.mark.parametrize("isolate", [True, False], ids=["isolated", "visible"])
def test_isolation_check_default_model(default_model, isolate: bool) -> None:
    cap = AttentionCapture()
    config = TempoConfig(selection_threshold=0.1, max_steps=4, isolate=isolate)
    trace = generate(default_model, PROMPT, config, observers=[cap])
    assert max(trace.widths()) > 1
    data = cap.result(trace)
    chk = isolation_check(data)
    if isolate:
        assert chk.max_sibling_attention == 0.0
    else:
        assert chk.max_sibling_attention > 0.0
    assert chk.consistent is True
    res = received_attention(data)
    assert res.n_parallel > 0 and res.n_non_parallel > 0


def test_run_attention_analysis_script(tmp_path) -> None:
    out = tmp_path / "cat"
    argv = ["--prompt", PROMPT, "--max-steps", "8", "--selection-threshold", "0.1"]
    assert run_attention_analysis.main([*argv, "--output-dir", str(out), "-q"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["summary"]["total_steps"] == 8
    assert summary["isolation"]["max_sibling_attention"] == 0.0
    ratio = summary["received"]["ratio"]
    assert ratio is not None and ratio > 0
    assert summary["capture"]["layers"] == list(range(30))
    for name in ["trace.json", "attention.npz", "attention_seed.json", "analysis.json"]:
        assert (out / name).is_file()
