"""Issue 10: every public entry point works or fails loudly (tiny model).

One section per kind of fault: token text in context, context length, hook composition,
error propagation through observers, padding conventions, prompt shapes, EOS as a member,
float64 re-rotation tables.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import tempo_lens as tl
from tempo_lens import (
    AttentionCapture,
    SequenceState,
    TempoConfig,
    attach,
    beam_search,
    generate,
    greedy,
    make_tiny_model,
    sample,
    tempo_fwd_hooks,
)
from tempo_lens.generation import text as tl_text
from tempo_lens.generation.text import label_texts, sequence_texts
from tempo_lens.hooks import HookConflictError
from tempo_lens.trace import Candidate, StepRecord, Trace
from tests.tokenizer_fixtures import byte_tokenizer, metaspace_tokenizer, with_tokenizer

PROMPT = [1, 2, 3]
DECODERS = {
    "generate": lambda m, p, **kw: generate(m, p, max_steps=3, **kw),
    "greedy": lambda m, p, **kw: greedy(m, p, max_steps=3, **kw),
    "sample": lambda m, p, **kw: sample(m, p, max_steps=3, **kw),
    "beam_search": lambda m, p, **kw: beam_search(m, p, max_steps=3, **kw),
}


def n_hooks(model) -> int:
    return sum(len(hp.fwd_hooks) for hp in model.hook_dict.values())


# --------------------------------------------------------------------------- 1. token text
def test_metaspace_text_keeps_word_boundaries() -> None:
    tok = metaspace_tokenizer()
    model = with_tokenizer(make_tiny_model(d_vocab=7), tok)
    trace = generate(model, "The cat sat", max_steps=3, stop_at_eos=False)
    prompt_ids = [t.token_id for t in trace.tokens[: trace.prompt_length]]
    assert prompt_ids == [2, 3, 4]
    assert trace.clean_text() == tok.decode(prompt_ids + trace.clean_ids())
    assert " " in trace.clean_text()[len("The cat sat") :]  # main: "...catsat"
    # every member's text is what it adds to the clean text before its step
    for s, rec in enumerate(trace.steps):
        before = prompt_ids + trace.clean_ids()[:s]
        for i in rec.indices:
            t = trace.tokens[i]
            assert t.text == tok.decode(before + [t.token_id])[len(tok.decode(before)) :]
        for c in rec.candidates:
            assert c.text == tok.decode(before + [c.token_id])[len(tok.decode(before)) :]
    assert trace.raw_text().startswith("The cat sat")
    for method in ("greedy", "beam_search"):
        t = DECODERS[method](model, "The cat sat", stop_at_eos=False)
        assert t.clean_text() == tok.decode(prompt_ids + t.clean_ids())


def _byte_trace(tok, prompt: str, steps: list[list[int]]) -> Trace:
    """A hand-built trace whose step ``s`` appends the members ``steps[s]``."""
    state = SequenceState.from_sets(tok.encode(prompt), steps)
    records = [
        StepRecord(s, 0.1, "mixture", [Candidate(t, "", 0.5, True) for t in members], idx)
        for s, (members, idx) in enumerate(zip(steps, state.set_indices, strict=True))
    ]
    return Trace(prompt, "byte", "tempo", {}, state, [""] * len(state), records)


def test_split_characters_decode_jointly_never_fffd() -> None:
    tok = byte_tokenizer()
    model = with_tokenizer(make_tiny_model(d_vocab=256), tok)
    smile, e_acute, cafe = tok.encode("😀"), tok.encode("é"), tok.encode("ü")
    # steps: the 4 bytes of 😀 one per step, except step 1 holds an alternative member
    # that completes nothing (a lead byte of é) and step 2 one that completes ü's bytes
    steps = [[smile[0]], [smile[1], e_acute[0]], [smile[2]], [smile[3], cafe[1]]]
    trace = label_texts(_byte_trace(tok, "café ", steps), model)
    joint = tok.decode(
        [t.token_id for t in trace.tokens[: trace.prompt_length]] + trace.clean_ids()
    )
    assert joint == "café 😀" and trace.clean_text() == joint
    assert "\ufffd" not in trace.bracket_text() and "\ufffd" not in trace.raw_text()
    assert [trace.tokens[i].text for i in trace.clean_indices()] == ["", "", "", "😀"]
    # a non-clean member that ends inside a character shows its vocabulary entry
    assert trace.members(1)[1].text == tok.convert_ids_to_tokens(e_acute[0])
    # prompt text is the prompt, decoded jointly ("é" spans two byte tokens)
    assert "".join(t.text for t in trace.tokens[: trace.prompt_length]) == "café "


def test_generated_byte_text_is_decoded_jointly() -> None:
    tok = byte_tokenizer()
    model = with_tokenizer(make_tiny_model(d_vocab=256), tok)
    prompt = tok.encode("café 😀")  # ids: "é" and "😀" span 2 and 4 byte tokens
    trace = generate(model, prompt, max_steps=4, selection_threshold=0.02)
    assert trace.bracket_text().startswith("café 😀")  # main: "caf\ufffd\ufffd ..."
    assert trace.clean_text() == tok.decode(prompt + trace.clean_ids())
    assert greedy(model, prompt, max_steps=4).clean_text().startswith("café 😀")


def test_sequence_texts_without_tokenizer() -> None:
    model = make_tiny_model()
    assert sequence_texts(model, [1, 2], [3], [[3, 4]]) == (
        ["<1>", "<2>"],
        ["<3>"],
        [{3: "<3>", 4: "<4>"}],
    )


# --------------------------------------------------------------------------- 4. context
@pytest.mark.parametrize("method", sorted(DECODERS))
def test_prompt_longer_than_context_is_one_value_error(method: str) -> None:
    model = make_tiny_model(n_ctx=16)
    with pytest.raises(ValueError, match="30 tokens.*context is 16"):
        DECODERS[method](model, list(range(1, 31)))
    with pytest.raises(ValueError, match="16 tokens.*context is 16"):
        DECODERS[method](model, list(range(1, 17)))


@pytest.mark.parametrize("method", sorted(DECODERS))
def test_generation_stops_at_the_context_limit(method: str) -> None:
    model = make_tiny_model(n_ctx=16)
    kw = {"max_parallel": 1} if method == "generate" else {}
    trace = DECODERS[method](model, list(range(1, 15)), **kw)
    assert trace.stop_reason == "context" and len(trace.tokens) == 16


def test_text_prompt_is_never_truncated() -> None:
    model = with_tokenizer(make_tiny_model(d_vocab=7, n_ctx=16), metaspace_tokenizer())
    with pytest.raises(ValueError, match="30 tokens"):
        generate(model, " ".join(["The cat sat"] * 10), max_steps=2)


def test_cli_context_error_is_one_line_exit_2(tmp_path) -> None:
    prompt = " ".join(str(i % 60 + 1) for i in range(600))
    out = tmp_path / "t.json"
    cmd = [sys.executable, "-m", "tempo_lens.cli", "generate", "--tiny", "--prompt", prompt]
    proc = subprocess.run([*cmd, "--json", str(out)], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "context is 512" in proc.stderr
    assert not out.exists()


# --------------------------------------------------------------------------- 5. hooks
@pytest.fixture
def hooked():
    model = make_tiny_model()
    state = SequenceState.from_sets(PROMPT, [[4, 5], [6]])
    x = state.tokens_tensor()
    with attach(model, state):
        ref = model(x)
    plain = model(x)
    assert (ref - plain).abs().max() > 1e-3  # TEMPO changes these logits
    yield model, state, x, ref
    assert n_hooks(model) == 0  # nothing left behind, whatever happened


def test_double_attach_raises(hooked) -> None:
    model, state, x, _ = hooked
    with (
        pytest.raises(HookConflictError, match="already attached"),
        attach(model, state),
        attach(model, state),
    ):
        model(x)


def test_tempo_fwd_hooks_inside_attach_raise(hooked) -> None:
    model, state, x, _ = hooked
    with pytest.raises(HookConflictError, match="2 sets of TEMPO hooks"), attach(model, state):
        model.run_with_hooks(x, fwd_hooks=tempo_fwd_hooks(model, state))
    with pytest.raises(HookConflictError), attach(model, state):
        generate(model, PROMPT, max_steps=2)
    for name, fn in tempo_fwd_hooks(model, state):
        model.add_hook(name, fn)
    try:
        with pytest.raises(HookConflictError):
            model.run_with_hooks(x, fwd_hooks=tempo_fwd_hooks(model, state))
    finally:
        model.reset_hooks()


def test_reset_hooks_inside_attach_keeps_tempo(hooked) -> None:
    model, state, x, ref = hooked
    with attach(model, state):
        model.reset_hooks()  # TransformerLens' default keeps permanent hooks
        assert torch.equal(model(x), ref)
        logits, _ = model.run_with_cache(x)
        assert torch.equal(logits, ref)


def test_hooks_removed_inside_attach_are_detected(hooked) -> None:
    model, state, x, _ = hooked
    with pytest.raises(HookConflictError, match="removed while attach"), attach(model, state):
        model.reset_hooks(including_permanent=True)
        model(x)
    with pytest.raises(HookConflictError, match="1 of 6"), attach(model, state):
        model.blocks[1].attn.hook_rot_k.remove_hooks(including_permanent=True)


def test_error_inside_attach_propagates_and_detaches(hooked) -> None:
    model, state, x, _ = hooked
    with pytest.raises(KeyError, match="mine"), attach(model, state):
        raise KeyError("mine")


# --------------------------------------------------------------------------- 6. errors
class _Recorder:
    """An observer that records its calls (and defines no abort_step)."""

    def __init__(self) -> None:
        self.open = False
        self.ended = 0

    def fwd_hooks(self, model):
        return []

    def begin_step(self, step, query_indices, state) -> None:
        self.open = True

    def end_step(self) -> None:
        self.open = False
        self.ended += 1


@pytest.mark.parametrize(
    "error",
    [ValueError("boom"), KeyboardInterrupt(), torch.OutOfMemoryError("CUDA out of memory")],
    ids=["ValueError", "KeyboardInterrupt", "OutOfMemoryError"],
)
@pytest.mark.parametrize("at_step", [-1, 1])
def test_original_error_propagates_through_observers(error, at_step, tmp_path) -> None:
    model = make_tiny_model()
    calls = {"n": 0}
    fail_at = 1 if at_step < 0 else 3  # the prompt forward, or step 1 (KV cache)

    def hook(x, hook):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise error

    model.add_hook("blocks.1.hook_resid_post", hook)
    spool = tmp_path / "spool"
    cap, rec = AttentionCapture(spool_dir=spool), _Recorder()
    with pytest.raises(type(error)) as info:
        generate(model, PROMPT, max_steps=3, observers=[cap, rec])
    assert info.value is error
    assert cap._step is None and not rec.open and rec.ended >= 1
    assert len(list(spool.glob("*.npz"))) == (0 if at_step < 0 else 2)  # prompt + step 0
    model.reset_hooks()
    assert n_hooks(model) == 0
    cap2 = AttentionCapture()
    trace = generate(model, PROMPT, max_steps=3, observers=[cap2])
    assert cap2.result(trace).steps == [-1, 0, 1, 2]


# --------------------------------------------------------------------------- 7. padding
@pytest.mark.parametrize("side", ["left", "right"])
def test_prompts_are_never_treated_as_padded(side: str) -> None:
    words = ["<pad>", *[f"▁w{i}" for i in range(63)]]
    tok = metaspace_tokenizer(words, eos=None, pad="<pad>", side=side)
    model = with_tokenizer(make_tiny_model(), tok)
    assert tok.pad_token_id == 0 and tok.padding_side == side
    assert tl_text.eos_token_id(model) is None  # the EOS attach_tokenizer named is not in vocab
    reference = make_tiny_model()  # same weights, no tokenizer: nothing can be padding
    prompt = [0, 5, 6, 7]
    cfg = TempoConfig(selection_threshold=0.05, max_steps=4, stop_at_eos=False)
    want = generate(reference, prompt, cfg).clean_ids()
    for kv in (True, False):
        got = generate(model, prompt, cfg, use_kv_cache=kv)
        assert got.clean_ids() == want, (side, kv)
    assert beam_search(model, prompt, max_steps=4).clean_ids() == (
        beam_search(reference, prompt, max_steps=4).clean_ids()
    )


# --------------------------------------------------------------------------- 8. shapes
GOOD_SHAPES = {
    "list": [1, 2, 3],
    "numpy ints": [np.int64(1), np.int32(2), 3],
    "1-D tensor": torch.tensor([1, 2, 3]),
    "[1, pos] tensor": torch.tensor([[1, 2, 3]]),
    "[1, pos] array": np.array([[1, 2, 3]]),
    "nested list": [[1, 2, 3]],
}
BAD_SHAPES = {
    "batch of 2": (torch.tensor([[1, 2], [3, 4]]), r"shape \(2, 2\)"),
    "0-d": (torch.tensor(3), r"shape \(\)"),
    "3-D": (np.ones((1, 1, 3), dtype=int), r"shape \(1, 1, 3\)"),
    "floats": (np.array([1.5, 2.0]), "integers, got 1.5"),
    "bools": ([True, False], "integers, got True"),
}


@pytest.mark.parametrize("method", sorted(DECODERS))
def test_prompt_shapes_accepted_everywhere(method: str) -> None:
    model = make_tiny_model()
    want = DECODERS[method](model, [1, 2, 3]).clean_ids()
    for name, prompt in GOOD_SHAPES.items():
        trace = DECODERS[method](model, prompt)
        assert trace.clean_ids() == want, name
        assert trace.prompt == [1, 2, 3]
    single = DECODERS[method](model, torch.tensor([[5]]))
    assert [t.token_id for t in single.tokens[: single.prompt_length]] == [5]
    for prompt, msg in BAD_SHAPES.values():
        with pytest.raises(ValueError, match=msg):
            DECODERS[method](model, prompt)
    assert SequenceState.from_prompt(np.array([[1, 2, 3]])).token_ids == [1, 2, 3]


def test_to_tokens_output_is_a_prompt() -> None:
    model = with_tokenizer(make_tiny_model(d_vocab=7), metaspace_tokenizer())
    tokens = model.to_tokens("The cat sat")
    for method in sorted(DECODERS):
        a = DECODERS[method](model, tokens, stop_at_eos=False)
        b = DECODERS[method](model, "The cat sat", stop_at_eos=False)
        assert a.clean_ids() == b.clean_ids() and a.clean_text() == b.clean_text()


# --------------------------------------------------------------------------- 9. EOS
def _eos_model(rank: int) -> tuple:
    """A tiny model whose EOS is the token ranked ``rank`` at step 0 after PROMPT."""
    plain = make_tiny_model()
    probs = torch.softmax(plain(torch.tensor([PROMPT]))[0, -1].double(), -1)
    order = torch.argsort(probs, descending=True).tolist()
    words = [f"▁w{i}" for i in range(64)]
    model = with_tokenizer(make_tiny_model(), metaspace_tokenizer(words, eos=words[order[rank]]))
    return model, order[rank], probs[order[: rank + 1]].tolist()


@pytest.mark.parametrize("stop_at_eos", [True, False])
@pytest.mark.parametrize("min_steps", [0, 2])
@pytest.mark.parametrize("max_parallel", [1, 2, None])
@pytest.mark.parametrize("rank", [0, 1])
def test_eos_is_never_a_non_top_member(stop_at_eos, min_steps, max_parallel, rank) -> None:
    model, eos, probs = _eos_model(rank)
    tau = min(probs) * 0.999  # EOS qualifies at step 0
    cfg = TempoConfig(
        selection_threshold=tau,
        max_steps=4,
        min_steps=min_steps,
        max_parallel=max_parallel,
        stop_at_eos=stop_at_eos,
    )
    trace = generate(model, PROMPT, cfg)
    for rec in trace.steps:
        members = [trace.tokens[i].token_id for i in rec.indices]
        assert eos not in members[1:], (rec.step, members)
        if rec.step < min_steps:
            assert eos not in members and eos not in [c.token_id for c in rec.candidates]
    eos_top_at_0 = rank == 0 and min_steps == 0
    if eos_top_at_0 and stop_at_eos:
        assert trace.stop_reason == "eos" and not trace.steps
    elif eos_top_at_0:
        assert trace.clean_ids()[0] == eos and len(trace.steps) == 4
    elif rank == 1 and min_steps == 0 and max_parallel != 1:
        # EOS qualified as a non-top member: recorded as dropped, never appended
        assert eos in [c.token_id for c in trace.steps[0].prefiltered]


# --------------------------------------------------------------------------- 10. float64
def test_float64_model_gets_float64_rerotation() -> None:
    model = make_tiny_model(dtype=torch.float64)
    state = SequenceState.from_sets(list(range(1, 40)), [[4, 5, 6], [7, 8], [9]])
    x = state.tokens_tensor()
    with attach(model, state):
        logits = model(x)[0]
    errors = []
    for i in state.set_indices[0]:  # sibling equivalence (DESIGN §4 oracle 2)
        ref = model(torch.tensor([list(range(1, 40)) + [state.token_ids[i]]]))[0, -1]
        errors.append(float((logits[i] - ref).abs().max().detach()))
    assert max(errors) < 1e-12, errors  # float32 tables: ~7e-7


def test_public_api_exports_hook_conflict_error() -> None:
    assert tl.HookConflictError is HookConflictError
