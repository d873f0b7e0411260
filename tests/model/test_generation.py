"""Generation on the tiny model: oracles 5 and 6, pruning semantics, knobs, trace, EOS."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from tempo_lens import (
    PositionScheme,
    PruningConfig,
    RelativeRule,
    SequenceState,
    TempoConfig,
    ThresholdSchedule,
    Trace,
    attach,
    generate,
    greedy,
    make_tiny_model,
)
from tempo_lens.backends import make_kv_cache
from tests.compare import assert_close_tree

PROMPT = [1, 2, 3]
PRUNE = PruningConfig(rule=RelativeRule(ratio=0.7))


def assert_same_trace(a: Trace, b: Trace, atol: float = 1e-6, ignore: tuple[str, ...] = ()) -> None:
    """Everything equal except the top-level keys ``ignore``; floats to ``atol``."""
    da, db = a.to_dict(), b.to_dict()
    for d in (da, db):
        d["config"].pop("use_kv_cache")
        for key in ignore:
            d.pop(key, None)
    assert_close_tree(da, db, rtol=0.0, atol=atol, path="trace")


@pytest.fixture(scope="module")
def model():
    return make_tiny_model()


@pytest.mark.parametrize("isolate", [True, False])
@pytest.mark.parametrize("prune", [None, PRUNE])
def test_cache_and_no_cache_traces_identical(model, isolate, prune) -> None:
    cfg = TempoConfig(selection_threshold=0.03, max_steps=8, isolate=isolate, prune=prune)
    a = generate(model, PROMPT, cfg)
    b = generate(model, PROMPT, cfg, use_kv_cache=False)
    assert max(a.widths()) > 1  # the test exercises parallel sets
    if prune:
        assert a.summary()["pruned"] > 0
    assert_same_trace(a, b)


@pytest.mark.parametrize("variant", [{}, {"n_key_value_heads": 2, "rotary_dim": 8}])
@pytest.mark.parametrize("how", ["unreachable", "width1"])
def test_greedy_equivalence(variant, how) -> None:
    """Oracle 6: an unreachable threshold or max_parallel=1 is greedy decoding."""
    m = make_tiny_model(**variant)
    kw = {"selection_threshold": 1.0} if how == "unreachable" else {"max_parallel": 1}
    tempo = generate(m, PROMPT, TempoConfig(max_steps=12, **kw))
    assert tempo.clean_ids() == greedy(m, PROMPT, max_steps=12).clean_ids()
    assert max(tempo.widths()) == 1


def test_every_member_is_fed_exactly_once(model) -> None:
    seen: list[int] = []
    calls = {"n": 0}

    class Count:
        def fwd_hooks(self, m):
            return [("hook_embed", self.hook)]

        def begin_step(self, step, idx, state):
            seen.extend(idx)

        def end_step(self):
            pass

        def hook(self, x, hook):
            calls["n"] += x.shape[1]

    cfg = TempoConfig(selection_threshold=0.03, max_steps=6, prune=PRUNE)
    trace = generate(model, PROMPT, cfg, observers=[Count()])
    assert seen == list(range(len(trace.tokens)))  # each physical index exactly once, in order
    readout_tokens = sum(len(s.indices) for s in trace.steps if any(d.pruned for d in s.pruning))
    assert calls["n"] == len(trace.tokens) + readout_tokens  # plus only the readout re-forwards


def test_pruned_token_invisible_later_and_to_next_readout(model) -> None:
    cfg = TempoConfig(selection_threshold=0.03, max_steps=5, readout="top", prune=PRUNE)
    trace = generate(model, PROMPT, cfg)
    state = trace.to_state()
    pruned = [t for t in trace.tokens if t.pruned_at_step is not None]
    assert pruned
    with attach(model, state), torch.no_grad():
        _, cache = model.run_with_cache(state.tokens_tensor())
    checked = 0
    for t in pruned:
        later = [i for i in range(len(state)) if state.steps[i] > t.pruned_at_step]
        checked += len(later)
        for layer in range(model.cfg.n_layers if later else 0):
            assert cache["pattern", layer][0, :, later, t.index].abs().max().item() == 0.0
    assert checked > 0
    # The distribution that selected step s+1 was read with the tokens pruned at step s
    # hidden: equal to a forward where they are physically deleted (isolated, lookahead 1).
    s = pruned[0].pruned_at_step
    gone = {t.index for t in pruned if t.pruned_at_step <= s}
    keep = [i for i in range(len(state)) if i not in gone and state.steps[i] <= s]
    ref = SequenceState([state.token_ids[i] for i in keep[: state.prompt_length]])
    for step in range(s + 1):
        members = [i for i in keep if state.steps[i] == step]
        ref.append_set(
            [state.token_ids[i] for i in members], positions=[state.logical[i] for i in members]
        )
    with attach(model, ref), torch.no_grad():
        logits = model(ref.tokens_tensor())[0]
    top_member = keep.index(trace.steps[s].indices[0])
    probs = torch.softmax(logits[top_member].double(), -1)
    for c in trace.steps[s + 1].candidates:
        assert math.isclose(probs[c.token_id].item(), c.probability, abs_tol=1e-5)


def test_pruning_changes_what_follows(model) -> None:
    base = TempoConfig(selection_threshold=0.03, max_steps=6)
    a = generate(model, PROMPT, base)
    b = generate(model, PROMPT, base, prune=PruningConfig(rule=RelativeRule(ratio=0.9)))
    assert [s.candidates for s in a.steps] != [s.candidates for s in b.steps]


KNOBS = {
    "readout_last": {"readout": "last"},
    "readout_top": {"readout": "top"},
    "visible": {"isolate": False},
    "distinct": {"positions": PositionScheme(kind="distinct")},
    "offset": {"positions": PositionScheme(member_offset=0.5)},
    "max_parallel": {"max_parallel": 2},
    "schedule": {"schedule": ThresholdSchedule(kind="linear", tau0=0.03, tau_final=0.2)},
    "prefilter": {"prefilter": __import__("tempo_lens").ProbabilityRatioRule(ratio=0.8)},
    "prune_max_heads": {"prune": PruningConfig(rule=RelativeRule(ratio=0.7), head_agg="max")},
    "prune_late": {"prune": PruningConfig(rule=RelativeRule(ratio=0.7), layers=[1])},
    "prune_lookahead2": {"prune": PruningConfig(rule=RelativeRule(ratio=0.7), lookahead=2)},
}


@pytest.mark.parametrize("knob", sorted(KNOBS))
def test_every_knob_changes_behaviour(model, knob) -> None:
    base = {"selection_threshold": 0.03, "max_steps": 6}
    if knob.startswith("prune_"):
        base["prune"] = PRUNE
    a = generate(model, PROMPT, TempoConfig(**base)).to_dict()
    b = generate(model, PROMPT, TempoConfig(**{**base, **KNOBS[knob]})).to_dict()
    a.pop("config"), b.pop("config")
    assert a != b


def test_schedule_thresholds_recorded(model) -> None:
    sched = ThresholdSchedule(kind="linear", tau0=0.05, tau_final=0.25)
    trace = generate(
        model, PROMPT, TempoConfig(selection_threshold=0.05, max_steps=4, schedule=sched)
    )
    assert [s.threshold for s in trace.steps] == pytest.approx([0.05, 0.1, 0.15, 0.2])
    for s in trace.steps:
        assert all(c.probability >= s.threshold for c in s.candidates) or s.fell_back


def test_trace_json_round_trip(model, tmp_path) -> None:
    trace = generate(model, PROMPT, TempoConfig(selection_threshold=0.03, max_steps=5, prune=PRUNE))
    path = trace.save(tmp_path / "t.json")
    back = Trace.load(path)
    assert back.to_dict() == trace.to_dict()
    assert back.tempo_config == TempoConfig(selection_threshold=0.03, max_steps=5, prune=PRUNE)
    assert back.to_state().pruned_at == trace.to_state().pruned_at


def test_renderings(model) -> None:
    trace = generate(model, PROMPT, TempoConfig(selection_threshold=0.03, max_steps=3, prune=PRUNE))
    text = trace.bracket_text()
    assert text.startswith("<1><2><3>[") and "/" in text
    assert "~" in text  # pruned members are marked
    assert "\x1b[" in trace.bracket_text(color=True)
    assert "~" not in trace.bracket_text(show_pruned=False)
    assert trace.raw_text() == "".join(t.text for t in trace.tokens)
    assert trace.clean_text().count("<") == 3 + 3


def _fake_tokenizer(eos: int) -> SimpleNamespace:
    return SimpleNamespace(
        eos_token_id=eos, padding_side="right", decode=lambda ids: "".join(f"<{i}>" for i in ids)
    )


def test_eos_stops_and_min_steps_suppresses(model) -> None:
    ids = greedy(model, PROMPT, max_steps=5).clean_ids()
    m = make_tiny_model()
    m.tokenizer = _fake_tokenizer(ids[2])
    try:
        t = generate(m, PROMPT, TempoConfig(selection_threshold=1.0, max_steps=5))
        assert t.stop_reason == "eos" and len(t.steps) == 2
        t = generate(m, PROMPT, TempoConfig(selection_threshold=1.0, max_steps=5, min_steps=4))
        assert t.stop_reason == "max_steps" and ids[2] not in t.clean_ids()[:4]
    finally:
        m.tokenizer = None


def test_context_limit_stops() -> None:
    m = make_tiny_model(n_ctx=12)
    t = generate(m, PROMPT, TempoConfig(selection_threshold=0.03, max_steps=50))
    assert t.stop_reason == "context" and len(t.tokens) <= 12


def test_bad_inputs() -> None:
    m = make_tiny_model()
    with pytest.raises(ValueError, match="empty"):
        generate(m, [], TempoConfig())
    with pytest.raises(ValueError, match="tokenizer"):
        generate(m, "hello", TempoConfig())
    with pytest.raises(ValueError, match="out of range"):
        generate(m, [999], TempoConfig())
    with pytest.raises(ValueError, match="selection_threshold"):
        TempoConfig(selection_threshold=0.0)
    _ = make_kv_cache


def test_bracket_text_keeps_sets_on_one_line(model) -> None:
    trace = generate(model, PROMPT, TempoConfig(selection_threshold=0.03, max_steps=2))
    i = trace.steps[0].indices[1]
    trace.texts[i] = "\n"
    assert "\n" not in trace.bracket_text() and "\\n" in trace.bracket_text()
    assert "\n" in trace.raw_text()
