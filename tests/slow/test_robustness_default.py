"""Issue 10 on the default model, where the tokenizer matters (byte-level BPE)."""

from __future__ import annotations

import pytest

from tempo_lens import TempoConfig, generate, greedy

TEXT = "Le café coûte 3 €, 日本語のテキスト"


def test_split_characters_are_decoded_jointly(default_model) -> None:
    tok = default_model.tokenizer
    prompt = default_model.to_tokens(TEXT)[0].tolist()
    assert any("\ufffd" in tok.decode([t]) for t in prompt)  # characters span tokens
    trace = generate(default_model, prompt, TempoConfig(selection_threshold=0.05, max_steps=6))
    assert max(trace.widths()) > 1
    joint = tok.decode(prompt + trace.clean_ids())
    assert trace.clean_text() == joint
    assert trace.bracket_text().startswith(TEXT)  # main: "Le caf\ufffd\ufffd ..."
    if "\ufffd" not in joint:
        assert "\ufffd" not in trace.bracket_text()
    clean = set(trace.clean_indices())
    for s in range(len(trace.steps)):  # each member: what it adds to the text before it
        before = prompt + trace.clean_ids()[:s]
        shown = tok.decode(before).rstrip("\ufffd")  # a pending split character is not shown
        for m in trace.members(s):
            full = tok.decode(before + [m.token_id])
            if m.index not in clean and not full.endswith("\ufffd"):
                assert m.text == full[len(shown) :]
    assert greedy(default_model, prompt, max_steps=4).clean_text().startswith(TEXT)


def test_long_text_prompt_is_refused_not_truncated(default_model) -> None:
    n_ctx = default_model.cfg.n_ctx
    with pytest.raises(ValueError, match=f"context is {n_ctx}"):
        generate(default_model, "word " * (n_ctx + 10), max_steps=1)


EOS_FIRST = "What is the best way to learn to play the piano as an adult?"  # suite's question_02


@pytest.mark.parametrize("name", ["head_ablation", "layer_intervention", "isolation_patching"])
def test_a_prompt_answered_by_end_of_sequence_gives_no_rows(default_model, name) -> None:
    """The default model ends this prompt at once (EOS first, no step): the replaying
    experiments record no rows for it instead of stopping the sweep (found at --limit 48)."""
    import importlib

    from tempo_lens.analysis.teacher_forced import Replay
    from tempo_lens.prompts import Prompt
    from tempo_lens.runner import Unit, encode

    mod = importlib.import_module(f"tempo_lens.experiments.{name}")
    cfg = mod.Config()
    unit = Unit(Prompt(id="q", text=EOS_FIRST), {"ablation": "zero"})
    trace = generate(default_model, encode(default_model, unit.prompt), cfg.tempo_config())
    assert trace.stop_reason == "eos" and not trace.steps
    tables = mod.run_unit(cfg, default_model, unit)
    assert tables and all(rows == [] for rows in tables.values()), tables
    with pytest.raises(ValueError, match="has none .stopped: 'eos'"):
        Replay(default_model, trace)
