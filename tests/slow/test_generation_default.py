"""Generation on the real default model: greedy oracle, cache equivalence, the CLI."""

from __future__ import annotations

import json

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
    assert {"prompt", "model", "config", "tokens", "steps"} <= t.keys()
    assert {"index", "token_id", "text", "step", "logical_position", "pruned_at_step"} <= t[
        "tokens"
    ][0].keys()
    step = t["steps"][0]
    assert {"step", "threshold", "readout", "candidates", "indices", "pruning"} <= step.keys()
    assert {"token_id", "text", "probability"} <= step["candidates"][0].keys()
