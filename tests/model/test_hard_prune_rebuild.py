"""Hard pruning's rebuild (``BatchForward.rebuild``) against physical removal, every case.

Issue 27: a rebuild that recomputed from one token too late passed the earlier tests, which
pruned only a middle member in isolated mode (there the token right after the pruned one
never saw it, so skipping it changes nothing). Here the first, middle and last member of a
set are pruned, in isolated and visible mode, with and without a KV cache, on both
backends; every step's logits (the rebuild's readout included) are compared with an
independent reference: Hugging Face's own model fed the sequence in which the pruned token
was never appended (the other tokens at their logical positions, with their mutual
visibility; ``hf_oracle.hf_logits_removed``).

Which cases a one-too-late rebuild breaks: every visible case (the next sibling saw the
pruned member) and every "last member" case (the next set saw it); a "first/middle member,
isolated" case can not tell (the skipped token is a sibling that never saw it), and without
a cache nothing is rebuilt (the next forward recomputes everything).
"""

from __future__ import annotations

import copy

import pytest

from tempo_lens import SequenceState
from tempo_lens.generation.batch_forward import BatchForward

from .hf_oracle import bridge_of, hf_logits_removed, tiny_llama_hf, tiny_llama_pair, tiny_tokenizer

PROMPT = [1, 2, 3, 4, 5]
SETS = [[7, 9, 11], [6], [12, 13], [14], [20, 21, 22]]
PRUNE_STEP = 2  # set 0's member is pruned after sets 1 and 2 were appended
MEMBERS = {"first": 0, "middle": 1, "last": 2}
TOL = {"hooked": 1e-4, "bridge": 1e-4}  # float32 rounding; the bugs found are ~1


@pytest.fixture(scope="module")
def hooked_pair():
    return tiny_llama_pair(seed=4)


@pytest.fixture(scope="module")
def bridge_pair(tmp_path_factory):
    hf = tiny_llama_hf(seed=4)
    return hf, bridge_of(copy.deepcopy(hf), tiny_tokenizer(str(tmp_path_factory.mktemp("tok"))))


def replay_with_hard_prune(
    hf, model, *, isolate: bool, member: int, use_kv_cache: bool
) -> list[tuple[int, float]]:
    """Generate ``SETS`` step by step, prune set 0's ``member`` hard at ``PRUNE_STEP``
    (then rebuild), and return per step the max |logits - reference| of its new tokens."""
    st = SequenceState.from_prompt(PROMPT, isolate=isolate)
    fwd = BatchForward(model, [st], use_kv_cache=use_kv_cache)
    diffs = []
    gone: list[int] = []
    with fwd.attached():
        fwd.run([list(range(len(PROMPT)))], -1)
        for step, members in enumerate(SETS):
            new = st.append_set(members)
            logits = fwd.run([new], step)[0]
            if step == PRUNE_STEP:
                gone = [st.set_indices[0][member]]
                st.prune(gone[0], at_step=step, hard=True)
                logits = fwd.rebuild([0], [new])[0]  # the readout of the rebuilt block
                assert st.stale_from is None
            ref, keep = hf_logits_removed(hf, st, gone)
            rows = [keep.index(i) for i in new]
            diffs.append((step, (logits - ref[0, rows]).abs().max().item()))
    return diffs


@pytest.mark.parametrize("use_kv_cache", [True, False], ids=["cache", "no_cache"])
@pytest.mark.parametrize("member", sorted(MEMBERS), ids=str)
@pytest.mark.parametrize("isolate", [True, False], ids=["isolated", "visible"])
def test_hooked_rebuild_equals_physical_removal(
    hooked_pair, isolate: bool, member: str, use_kv_cache: bool
) -> None:
    hf, model = hooked_pair
    diffs = replay_with_hard_prune(
        hf, model, isolate=isolate, member=MEMBERS[member], use_kv_cache=use_kv_cache
    )
    bad = [(s, d) for s, d in diffs if d > TOL["hooked"]]
    assert not bad, f"steps whose logits differ from physical removal: {bad}"


@pytest.mark.bridge
@pytest.mark.parametrize("use_kv_cache", [True, False], ids=["cache", "no_cache"])
@pytest.mark.parametrize("member", sorted(MEMBERS), ids=str)
@pytest.mark.parametrize("isolate", [True, False], ids=["isolated", "visible"])
def test_bridge_rebuild_equals_physical_removal(
    bridge_pair, isolate: bool, member: str, use_kv_cache: bool
) -> None:
    hf, bridge = bridge_pair
    diffs = replay_with_hard_prune(
        hf, bridge, isolate=isolate, member=MEMBERS[member], use_kv_cache=use_kv_cache
    )
    bad = [(s, d) for s, d in diffs if d > TOL["bridge"]]
    assert not bad, f"steps whose logits differ from physical removal: {bad}"


@pytest.mark.parametrize("isolate", [True, False], ids=["isolated", "visible"])
def test_the_reference_sees_the_prune(hooked_pair, isolate: bool) -> None:
    """The cases are not vacuous: without the rebuild (stale cache, readout from it) the
    logits of the block after the prune differ from physical removal (visible: the next
    sibling saw the pruned member; last member: the next set saw it)."""
    hf, model = hooked_pair
    member = 1 if not isolate else 2
    st = SequenceState.from_prompt(PROMPT, isolate=isolate)
    fwd = BatchForward(model, [st], use_kv_cache=True)
    with fwd.attached():
        fwd.run([list(range(len(PROMPT)))], -1)
        for step, members in enumerate(SETS[: PRUNE_STEP + 2]):
            new = st.append_set(members)
            if step == PRUNE_STEP + 1:
                st.clear_stale()  # pretend the cache was rebuilt: it was not
            logits = fwd.run([new], step)[0]
            if step == PRUNE_STEP:
                gone = st.set_indices[0][member]
                st.prune(gone, at_step=step, hard=True)
    ref, keep = hf_logits_removed(hf, st, [gone])
    rows = [keep.index(i) for i in new]
    assert (logits - ref[0, rows]).abs().max().item() > 1e-2
