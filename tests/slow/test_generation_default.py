"""Generation on the real default model: greedy oracle, cache equivalence, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from tempo_lens import PruningConfig, RelativeRule, TempoConfig, generate, greedy
from tempo_lens.cli import main
from tests.model.test_generation import assert_same_trace

PROMPT = "The cat sat on the"


def test_unreachable_threshold_is_greedy(default_model) -> None:
    ref = greedy(default_model, PROMPT, max_steps=20)
    for kw in ({"selection_threshold": 1.0}, {"max_parallel": 1}):
        trace = generate(default_model, PROMPT, TempoConfig(max_steps=20, **kw))
        assert trace.clean_ids() == ref.clean_ids()
        assert trace.clean_text() == ref.clean_text()


def test_cache_and_no_cache_identical(default_model) -> None:
    cfg = TempoConfig(
        selection_threshold=0.1, max_steps=8, prune=PruningConfig(rule=RelativeRule(ratio=0.5))
    )
    a = generate(default_model, PROMPT, cfg)
    b = generate(default_model, PROMPT, cfg, use_kv_cache=False)
    assert max(a.widths()) > 1
    assert_same_trace(a, b, atol=1e-5)


def test_cli_generate_writes_trace(tmp_path, capsys) -> None:
    out = tmp_path / "out.json"
    argv = ["generate", "--prompt", PROMPT, "--max-steps", "20", "--selection-threshold", "0.1"]
    assert main([*argv, "--json", str(out), "-q"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(PROMPT) and "[" in text and "/" in text
    t = json.loads(out.read_text())
    assert {"prompt", "model", "config", "state", "texts", "steps"} <= t.keys()
    assert {"token_ids", "steps", "logical", "pruned_at"} <= t["state"].keys()
    assert len(t["texts"]) == len(t["state"]["token_ids"])
    step = t["steps"][0]
    assert {"step", "threshold", "readout", "candidates", "indices", "pruning"} <= step.keys()
    assert len(step["probabilities"]) == len(step["indices"])
    assert {"token_id", "text", "probability"} <= step["candidates"][0].keys()


def test_reproduces_a_trace_written_before_format_2(default_model) -> None:
    """The generation (recorder, pruning, readout) reproduces a trace written by an earlier
    version (tests/fixtures/trace_v1_default.json, commit dd20c47): tokens, indices and
    decisions exactly, probabilities and scores to 1e-5 (float32 sums differ at ~1e-7 between
    CPUs and thread counts)."""
    from tempo_lens.trace import Trace

    old = Trace.load(Path(__file__).resolve().parent.parent / "fixtures" / "trace_v1_default.json")
    new = generate(default_model, old.prompt, old.tempo_config)
    assert sum(p is not None for p in new.state.pruned_at) == 5
    # the fixture predates provenance: it names the model "custom" and records no backend
    assert new.model == "SmolLM2-135M-Instruct" and old.model == "custom"
    assert_same_trace(new, old, atol=1e-5, ignore=("model", "provenance"))
