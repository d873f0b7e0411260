"""Hard pruning (issue 13 part 6): the tokens appended after a pruned token are recomputed
without it, so the context is that of a sequence in which it was never appended.

Reference: a Hugging Face Llama fed the sequence with the pruned token physically removed,
every other token at its own logical position (explicit ``position_ids``) — oracle 4 of
DESIGN.md extended to every later token.
"""

from __future__ import annotations

import pytest
import torch

from tempo_lens import PruningConfig, RelativeRule, SequenceState, attach, generate
from tempo_lens.generation.batch_forward import BatchForward
from tempo_lens.hooks import StateMismatchError

from .hf_oracle import hf_logits_removed, tiny_llama_pair

PROMPT = [1, 2, 3, 4, 5]
SETS = [[7, 9, 11], [6], [12, 13], [14], [20, 21, 22]]


@pytest.fixture(scope="module")
def pair():
    return tiny_llama_pair(seed=4)


def build(isolate: bool, hard: bool, upto: int = len(SETS)) -> tuple[SequenceState, int]:
    """The sets; member 2 of set 0 pruned at step 2 (two sets were appended after it)."""
    st = SequenceState.from_prompt(PROMPT, isolate=isolate)
    for step, members in enumerate(SETS[:upto]):
        st.append_set(members)
        if step == 2:
            st.prune(st.set_indices[0][1], at_step=2, hard=hard)
    return st, st.set_indices[0][1]


@pytest.mark.parametrize("isolate", [True, False])
def test_hard_prune_equals_physical_removal(pair, isolate: bool) -> None:
    hf, model = pair
    st, gone = build(isolate, hard=True)
    with attach(model, st), torch.no_grad():
        ours = model(st.tokens_tensor())
    ref, keep = hf_logits_removed(hf, st, [gone])
    torch.testing.assert_close(ours[:, keep], ref, rtol=1e-5, atol=1e-5)
    # soft pruning is not removal: the tokens appended before the prune saw the token
    soft, _ = build(isolate, hard=False)
    with attach(model, soft), torch.no_grad():
        soft_logits = model(soft.tokens_tensor())
    assert (soft_logits[:, keep] - ref).abs().max().item() > 1e-3


def test_kv_cache_rebuild_equals_physical_removal(pair) -> None:
    """Step by step with a KV cache: after the rebuild, later forwards read a cache equal
    to that of the sequence without the pruned token."""
    hf, model = pair
    st = SequenceState.from_prompt(PROMPT, isolate=True)
    fwd = BatchForward(model, [st], use_kv_cache=True)
    with fwd.attached():
        fwd.run([list(range(len(PROMPT)))], -1)
        for step, members in enumerate(SETS):
            new = st.append_set(members)
            logits = fwd.run([new], step)[0]
            if step == 2:
                gone = st.set_indices[0][1]
                st.prune(gone, at_step=2, hard=True)
                with pytest.raises(StateMismatchError, match="pruned retroactively"):
                    fwd.rerun({0: (3, new[0])}, [new])  # a stale cache is refused
                logits = fwd.rebuild([0], [new])[0]
            ref, keep = hf_logits_removed(hf, st, [gone] if step >= 2 else [])
            rows = [keep.index(i) for i in new]
            torch.testing.assert_close(logits, ref[0, rows], rtol=1e-5, atol=1e-5)


def test_hard_pruning_generation_kv_cache_equals_full_forwards() -> None:
    from tempo_lens import make_tiny_model

    model = make_tiny_model(seed=5)
    prune = PruningConfig(rule=RelativeRule(ratio=0.9), lookahead=2, mode="hard")
    kw = dict(selection_threshold=0.04, max_steps=10, prune=prune)
    cached = generate(model, [3, 14, 15, 9], **kw)
    full = generate(model, [3, 14, 15, 9], use_kv_cache=False, **kw)
    assert cached.state.hard_pruned, "nothing was pruned: the test would not test the rebuild"
    assert cached.state.token_ids == full.state.token_ids
    assert cached.state.pruned_at == full.state.pruned_at
    a = [p for s in cached.steps for p in s.probabilities]
    b = [p for s in full.steps for p in s.probabilities]
    assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    soft = generate(
        model,
        [3, 14, 15, 9],
        **{**kw, "prune": PruningConfig(rule=RelativeRule(ratio=0.9), lookahead=2)},
    )
    assert [p for s in soft.steps for p in s.probabilities] != pytest.approx(a, abs=1e-6)
    rules = {d.rule for s in cached.steps for d in s.pruning}
    assert rules and all(r.endswith(", hard") for r in rules)


def test_captured_attention_of_a_hard_pruned_trace_counts_its_receivers() -> None:
    """Captured rows were recorded before the prune: analyses see the token as received."""
    from tempo_lens import AttentionCapture, make_tiny_model
    from tempo_lens.analysis import pruning_analysis, received_attention

    model = make_tiny_model(seed=5)
    prune = PruningConfig(rule=RelativeRule(ratio=0.9), lookahead=2, mode="hard")
    cap = AttentionCapture()
    trace = generate(
        model, [3, 14, 15, 9], selection_threshold=0.04, max_steps=10, prune=prune, observers=[cap]
    )
    survival = pruning_analysis(trace, received_attention(cap.result(trace))).survival
    pruned = survival[survival["pruned"].astype(bool)]
    assert len(pruned) and pruned["received"].notna().all()
    assert trace.state.hard_pruned  # the trace itself keeps the hard marks


def test_hard_pruned_state_round_trips() -> None:
    st, gone = build(True, hard=True)
    back = SequenceState.from_dict(st.to_dict())
    assert back.hard_pruned == {gone} and back == st
    assert "hard_pruned" not in build(True, hard=False)[0].to_dict()  # old format unchanged
    with pytest.raises(Exception, match="firm"):  # ValueError (jaxtyping's error in tests)
        PruningConfig(rule=RelativeRule(ratio=0.5), mode="firm")


def test_pruning_layers_compares_soft_and_hard(tmp_path) -> None:
    import json

    import pandas as pd

    from tempo_lens.experiments import pruning_layers

    argv = ["--tiny", "--quick", "-q", "--selection-threshold", "0.05", "--lookaheads", "2"]
    argv += ["--modes", "soft,hard", "--layer-groups", "all,late", "--output-dir", str(tmp_path)]
    assert pruning_layers.main(argv) == 0
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert set(runs["mode"]) == {"soft", "hard"}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["reproduced"] is True  # hard runs' decisions re-judged identically too
    assert "lookahead=2 all clean_nll" in summary["hard_vs_soft"]


@pytest.mark.parametrize("through_rebuild", [False, True])
@pytest.mark.parametrize("use_kv_cache", [True, False])
def test_rebuild_rerecords_the_pruners_votes(pair, use_kv_cache: bool, through_rebuild) -> None:
    """After the rebuild the recorder holds, for every recomputed step, the attention rows
    of the context without the pruned token (a fresh full forward's pattern), whether the
    caller brackets the rebuild itself or hands the recorder to ``rebuild(rerecord=)`` as
    generation does (``None`` entries, rows without a pruner, are skipped)."""
    from tempo_lens.hooks.recorder import AttentionRecorder

    _, model = pair
    st = SequenceState.from_prompt(PROMPT, isolate=True)
    rec = AttentionRecorder(include_prompt=False)
    fwd = BatchForward(model, [st], use_kv_cache=use_kv_cache, observers=[[rec]])
    with fwd.attached():
        fwd.run([list(range(len(PROMPT)))], -1)
        for step, members in enumerate(SETS[:4]):
            new = st.append_set(members)
            fwd.run([new], step)
        before = {t: rec.rows[t].clone() for t in (1, 2, 3)}
        st.prune(st.set_indices[0][1], at_step=3, hard=True)
        if through_rebuild:
            fwd.rebuild([0], [new], rerecord=[None, rec])
        else:
            rec.begin_rerecord()
            fwd.rebuild([0], [new])
            rec.end_rerecord()
    _, cache = _full_cache(model, st)
    for t in (1, 2, 3):
        q, n_keys = st.set_indices[t], before[t].shape[-1]
        fresh = torch.stack([cache["pattern", la][0, :, q, :n_keys] for la in range(2)])
        torch.testing.assert_close(rec.rows[t], fresh, rtol=1e-5, atol=1e-6)
        assert (before[t] - fresh).abs().max() > 1e-4  # the votes did change


def _full_cache(model, st):
    with attach(model, st), torch.no_grad():
        return model.run_with_cache(st.tokens_tensor())
