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
