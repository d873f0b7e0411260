"""Token trees under the TEMPO hooks: the tree state, tree beam search, tree speculative decoding.

Oracles:

* a tree :class:`SequenceState` under ``attach`` equals Hugging Face given explicit
  ``position_ids`` (depth) and the 4-D ancestor mask written out as loops in
  ``hf_oracle.reference_mask`` (tiny Llama, several tree shapes, a TEMPO/tree mix, pruning);
* ``tree_beam_search`` returns what Hugging Face ``generate(num_beams=k)`` returns, on the
  beam baseline's own cases (``test_compare_decoders``), and what ``beam_search`` returns;
* ``tree_speculative`` returns ``greedy``'s tokens, with the n-gram drafter, with a drafter
  that proposes the true continuation (long accepted paths) and with a wrong one;
* attention captured during tree generation equals ``run_with_cache`` on the final tree.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import tempo_lens as tl
from tempo_lens import SequenceState, attach
from tempo_lens.generation.trees import ngram_draft
from tempo_lens.hooks.capture import AttentionCapture
from tempo_lens.models.convert import attach_tokenizer

from .conftest import TINY_VARIANTS
from .hf_oracle import hf_logits, reference_mask, tiny_gemma3_pair, tiny_llama_pair
from .test_compare_decoders import EOS, PROMPTS, hf_generate, word_tokenizer

PROMPT = [1, 2, 3, 4, 5]


def beam_like() -> SequenceState:
    """Three steps of a 3-beam search: beams branch, die and share ancestors."""
    st = SequenceState(PROMPT)
    a = st.append_set([7, 9, 11], parents=[4, 4, 4])
    b = st.append_set([6, 8, 10], parents=[a[0], a[0], a[2]])
    st.append_set([12, 13, 14], parents=[b[1], b[2], b[2]])
    return st


def draft_tree() -> SequenceState:
    """A verified draft tree in one set after two accepted tokens (as tree_speculative)."""
    st = SequenceState(PROMPT)
    (r,) = st.append_set([20], parents=[4])
    f = len(st)
    st.append_set([21, 22, 23, 24, 25, 26], parents=[r, f, f, f + 1, r, f + 4])
    st.prune(f + 2, at_step=1)
    return st


def mixed() -> SequenceState:
    """A TEMPO set, then tree tokens under one of its members, with a pruned member."""
    st = SequenceState(PROMPT, isolate=True)
    a = st.append_set([30, 31, 32])
    st.prune(a[2], at_step=0)
    b = st.append_set([33, 34], parents=[a[1], a[1]])
    st.append_set([35, 36], parents=[b[0], b[1]])
    return st


TREES = {"beam_like": beam_like, "draft_tree": draft_tree, "mixed": mixed}


@pytest.fixture(scope="module")
def pair():
    return tiny_llama_pair(seed=1)


def test_tree_visibility_by_hand() -> None:
    st = beam_like()
    vis = st.visibility()
    # token 11 (physical 8, beam 3 of step 0) sees the prompt and itself only
    assert vis[7].nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 7]
    # token 14 (physical 13): parent 10 (physical 10), whose parent is 11 (physical 7)
    assert vis[13].nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 7, 10, 13]
    assert st.logical[5:] == [5.0] * 3 + [6.0] * 3 + [7.0] * 3
    assert torch.equal(vis, reference_mask(st))
    for build in TREES.values():
        assert torch.equal(build().visibility(), reference_mask(build()))


def random_state(seed: int) -> SequenceState:
    """A random mix of TEMPO sets and tree sets (whole draft trees in one set), with
    soft pruning, in isolated or visible mode."""
    rng = np.random.default_rng(seed)
    st = SequenceState(PROMPT, isolate=bool(rng.integers(2)))
    for step in range(int(rng.integers(2, 6))):
        k = int(rng.integers(1, 5))
        ids = rng.integers(0, 64, k).tolist()
        if rng.random() < 0.6:
            first = len(st)
            parents = [int(rng.integers(0, first + j)) for j in range(k)]
            st.append_set(ids, parents=parents)
        else:
            st.append_set(ids)
        for i in range(st.prompt_length, len(st)):
            if st.pruned_at[i] is None and rng.random() < 0.1:
                st.prune(i, at_step=step)
    return st


@pytest.mark.parametrize("window", [None, 3])
def test_tree_visibility_equals_the_loop_reference(window) -> None:
    """masks.visibility (rule 5, vectorised) equals hf_oracle.reference_mask (loops) on
    200 random TEMPO/tree mixes with pruning, with and without a logical window."""
    for seed in range(200):
        st = random_state(seed)
        assert torch.equal(st.visibility(window=window), reference_mask(st, window=window)), seed


def test_random_trees_match_hf(pair) -> None:
    hf, model = pair
    for seed in range(12):
        st = random_state(seed)
        with attach(model, st), torch.no_grad():
            ours = model(st.tokens_tensor())
        assert (ours - hf_logits(hf, st)).abs().max().item() <= 1e-4, seed


@pytest.mark.parametrize("tree", sorted(TREES))
def test_tree_matches_hf(pair, tree: str) -> None:
    hf, model = pair
    st = TREES[tree]()
    with attach(model, st), torch.no_grad():
        ours = model(st.tokens_tensor())
    delta = (ours - hf_logits(hf, st)).abs().max().item()
    assert delta <= 1e-4, delta


@pytest.mark.parametrize("tree", sorted(TREES))
def test_tree_matches_hf_gemma3_windows(tree: str) -> None:
    """Gemma 3 (window 4 on two of three layers): the logical window cuts tree paths too."""
    hf, model = tiny_gemma3_pair(seed=2)
    st = TREES[tree]()
    assert max(st.logical) - st.logical[0] >= 4  # the window bites
    with attach(model, st), torch.no_grad():
        ours = model(st.tokens_tensor())
    delta = (ours - hf_logits(hf, st)).abs().max().item()
    assert delta <= 1e-4, delta


@pytest.mark.parametrize("tree", sorted(TREES))
def test_tree_kv_cache_matches_full_forward(pair, tree: str) -> None:
    """Set by set with a KV cache (as the decoders run) equals one full forward."""
    _, model = pair
    st = TREES[tree]()
    with attach(model, st), torch.no_grad():
        full = model(st.tokens_tensor())
    out = []
    fwd = tl.generation.batch_forward.BatchForward(model, [st], use_kv_cache=True)
    with fwd.attached():
        out.append(fwd.run([list(range(st.prompt_length))], -1)[0])
        for s, idx in enumerate(st.set_indices):
            out.append(fwd.run([idx], s)[0])
    assert (torch.cat(out) - full[0]).abs().max().item() <= 1e-5


def test_oracle_catches_a_wrong_tree_mask(pair) -> None:
    """The comparison can fail: the TEMPO mask (siblings' subtrees visible) on the same
    tokens and positions differs grossly from the ancestor mask."""
    hf, model = pair
    st = beam_like()
    flat = SequenceState.from_dict({**st.to_dict(), "parents": None})
    flat.set_logical_positions(st.logical)
    with attach(model, flat), torch.no_grad():
        ours = model(flat.tokens_tensor())
    assert (ours - hf_logits(hf, st)).abs().max().item() > 1e-2


def test_tree_state_round_trips_and_refuses_bad_parents() -> None:
    st = mixed()
    again = SequenceState.from_dict(st.to_dict())
    assert again == st and again.parents == st.parents
    assert st.ancestors(len(st) - 1) == [len(st) - 3, 6]
    assert st.token(len(st) - 1).parent == len(st) - 3 and st.token(0).parent is None
    assert "parents" not in SequenceState.from_sets(PROMPT, [[1, 2]]).to_dict()
    with pytest.raises(ValueError, match="parents must be earlier"):
        SequenceState(PROMPT).append_set([1, 2], parents=[4, 6])
    with pytest.raises(ValueError, match="3 parents for 2 members"):
        SequenceState(PROMPT).append_set([1, 2], parents=[4, 4, 4])
    with pytest.raises(ValueError, match="prompt tokens cannot have tree parents"):
        SequenceState.from_dict({**st.to_dict(), "parents": [0] + st.parents[1:]})


# ---------------------------------------------------------------- tree beam search
@pytest.fixture(scope="module", params=[0, 1])
def eos_pair(request):
    """As test_compare_decoders' pair: EOS made likely (same change in both)."""
    hf, ht = tiny_llama_pair(seed=request.param)
    with torch.no_grad():
        hf.lm_head.weight[EOS] *= 1.6
        ht.W_U[:, EOS] *= 1.6
    attach_tokenizer(ht, word_tokenizer())
    return hf, ht


@pytest.mark.parametrize("eos", [True, False])
@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_tree_beam_equals_hf_generate(eos_pair, k, eos) -> None:
    hf, ht = eos_pair
    hits = 0
    for prompt in PROMPTS:
        want = hf_generate(hf, prompt, k=k, n=8, eos=eos)
        res = tl.tree_beam_search(ht, prompt, max_steps=8, num_beams=k, stop_at_eos=eos)
        got = res.token_ids + ([EOS] if res.stop_reason == "eos" else [])
        assert got == want, (prompt, k, eos)
        assert res.trace.clean_ids() == res.token_ids
        base = tl.beam_search(ht, prompt, max_steps=8, num_beams=k, stop_at_eos=eos)
        assert [b["token_ids"] for b in res.beams] == [b["token_ids"] for b in base.extra["beams"]]
        assert np.allclose(
            [b["score"] for b in res.beams], [b["score"] for b in base.extra["beams"]]
        )
        hits += want[-1:] == [EOS]
        assert res.n_forwards <= 9 and (res.state.is_tree or not res.token_ids)
    if eos and k > 1:
        assert hits, "no beam ended in EOS: the EOS rules were not exercised"


@pytest.mark.parametrize(
    ("seed", "scale", "prompt"), [(1, 2.0, [7, 1, 8, 2, 8, 18]), (3, 1.3, [11, 12])]
)
def test_tree_beam_finishes_eos_only_among_the_top_k(seed, scale, prompt) -> None:
    hf, ht = tiny_llama_pair(seed=seed)
    with torch.no_grad():
        hf.lm_head.weight[EOS] *= scale
        ht.W_U[:, EOS] *= scale
    attach_tokenizer(ht, word_tokenizer())
    res = tl.tree_beam_search(ht, prompt, max_steps=10, num_beams=2)
    got = res.token_ids + ([EOS] if res.stop_reason == "eos" else [])
    assert got == hf_generate(hf, prompt, k=2, n=10, eos=True)


def test_tree_beam_keeps_one_sequence_and_captures(pair) -> None:
    """All beams in one sequence (k tokens per step, parents = beam predecessors), and the
    attention captured during the search equals run_with_cache on the final tree."""
    _, model = pair
    cap = AttentionCapture()
    res = tl.tree_beam_search(
        model, PROMPT, max_steps=6, num_beams=3, stop_at_eos=False, observers=[cap]
    )
    st = res.state
    assert [len(s) for s in st.set_indices] == [3] * 5 + [1]  # last token: not forwarded
    assert all(
        st.parents[i] in st.set_indices[s - 1] for s in range(1, 6) for i in st.set_indices[s]
    )
    fed = [i for s in sorted(cap.query_indices) for i in cap.query_indices[s]]
    assert fed == list(range(len(st) - 1))  # each token fed once, in order; one cache
    data = cap.result(res.trace)
    with attach(model, res.trace.to_state()), torch.no_grad():
        _, cache = model.run_with_cache(st.tokens_tensor())
    for s in range(5):
        q = st.set_indices[s]
        rows = data.rows(s)
        want = torch.stack([cache["pattern", layer][0][:, q] for layer in range(2)])
        assert np.allclose(rows, want[..., : rows.shape[-1]].numpy(), atol=1e-4)
        assert (want[..., rows.shape[-1] :] == 0).all()
        vis = st.visibility(q).numpy()[:, : rows.shape[-1]]
        assert (rows[:, :, ~vis] == 0).all() and (rows[:, :, vis] > 0).all()


def test_tree_beam_refuses_a_tree_past_the_context() -> None:
    model = tl.make_tiny_model()
    with pytest.raises(ValueError, match=r"num_beams \(8\) \* max_steps \(100\)"):
        tl.tree_beam_search(model, [1, 2], max_steps=100, num_beams=8)
    with pytest.raises(ValueError, match="num_beams must be an int >= 1, got 0"):
        tl.tree_beam_search(model, [1, 2], max_steps=3, num_beams=0)


# ---------------------------------------------------------------- tree speculative decoding
def chain_drafter(truth: list[int], n_prompt: int):
    """Drafts the true greedy continuation after the root as one chain (all accepted)."""

    def draft(context: list[int], depth: int) -> tuple[list[int], list[int]]:
        right = truth[len(context) - n_prompt :][:depth]
        return right, list(range(len(right)))

    return draft


def oracle_drafter(truth: list[int], n_prompt: int):
    """Proposes the true greedy continuation as one branch, next to two wrong branches."""

    def draft(context: list[int], depth: int) -> tuple[list[int], list[int]]:
        done = len(context) - n_prompt  # the root is the next true token
        right = truth[done : done + depth]
        wrong = [(t + 1) % 64 for t in right]
        if not right:
            return [], []
        # node 1: wrong[0] under the root; nodes 2..: the true path; last: wrong[1] under node 1
        tokens = [wrong[0], *right, *wrong[1:2]]
        parents = [0, 0, *range(2, len(right) + 1), 1][: len(tokens)]
        return tokens, parents

    return draft


@pytest.mark.parametrize("variant", sorted(TINY_VARIANTS))
def test_tree_speculative_equals_greedy(variant) -> None:
    model = tl.make_tiny_model(**TINY_VARIANTS[variant])
    for prompt in ([1, 2, 3], [5, 6, 7, 5, 6, 7, 5, 6], [9, 4, 9, 4, 9]):
        want = tl.greedy(model, prompt, max_steps=16, stop_at_eos=False).clean_ids()
        res = tl.tree_speculative(model, prompt, max_steps=16, stop_at_eos=False)
        assert res.token_ids == want == res.trace.clean_ids()
        assert sum(res.accepted) == len(want) - 1  # the last token needs no forward
        draft = oracle_drafter(want[1:], len(prompt) + 1)
        fast = tl.tree_speculative(model, prompt, max_steps=16, stop_at_eos=False, draft=draft)
        assert fast.token_ids == want
        assert fast.accepted_per_forward > 3 and fast.forwards_per_token < 0.5


def test_tree_speculative_with_a_wrong_drafter_is_still_greedy(pair) -> None:
    _, model = pair
    want = tl.greedy(model, PROMPT, max_steps=10, stop_at_eos=False).clean_ids()

    def wrong(context, depth):
        return [(context[-1] + 1) % 64, 3, 3], [0, 1, 1]

    res = tl.tree_speculative(model, PROMPT, max_steps=10, stop_at_eos=False, draft=wrong)
    assert res.token_ids == want and res.accepted_per_forward == 1.0
    assert res.n_forwards == 10 and res.drafted[0] == 3


def test_tree_speculative_stops_at_eos_like_greedy(eos_pair) -> None:
    _, ht = eos_pair
    stops = set()
    for prompt in PROMPTS:
        base = tl.greedy(ht, prompt, max_steps=12)
        res = tl.tree_speculative(ht, prompt, max_steps=12)
        assert (res.token_ids, res.stop_reason) == (base.clean_ids(), base.stop_reason)
        stops.add(res.stop_reason)
    assert "eos" in stops, "no prompt reached EOS: the EOS rule was not exercised"


def test_tree_speculative_captures_and_rejects_invisibly(pair) -> None:
    """Rejected draft nodes are pruned at their step and never seen by later queries."""
    _, model = pair
    truth = tl.greedy(model, PROMPT, max_steps=12, stop_at_eos=False).clean_ids()
    cap = AttentionCapture(include_prompt=False)
    draft = oracle_drafter(truth[1:], len(PROMPT) + 1)
    res = tl.tree_speculative(
        model, PROMPT, max_steps=12, stop_at_eos=False, draft=draft, observers=[cap]
    )
    st = res.state
    rejected = [i for i in range(len(st)) if st.pruned_at[i] is not None]
    assert rejected
    vis = st.visibility()
    assert st.steps[rejected[0]] < st.n_steps - 1
    for j in rejected:
        later = [i for i in range(len(st)) if st.steps[i] > st.steps[j]]
        assert not vis[later, j].any()
    data = cap.result(res.trace)
    with attach(model, res.trace.to_state()), torch.no_grad():
        _, cache = model.run_with_cache(st.tokens_tensor())
    for s in data.steps:
        q = st.set_indices[s]
        rows = data.rows(s)
        want = torch.stack([cache["pattern", layer][0][:, q] for layer in range(2)])
        assert np.allclose(rows, want[..., : rows.shape[-1]].numpy(), atol=1e-4)


def test_ngram_draft_and_bad_drafts(pair) -> None:
    assert ngram_draft([5, 6, 7, 5, 6, 8, 5, 6], max_ngram=2, branches=2, depth=2) == (
        [8, 5, 7, 5],
        [0, 1, 0, 3],
    )
    assert ngram_draft([1, 2, 3]) == ([], [])
    with pytest.raises(ValueError, match="branches must be an int >= 1, got 0"):
        ngram_draft([1, 2, 3], branches=0)
    with pytest.raises(ValueError, match="non-empty context"):
        ngram_draft([])
    _, model = pair
    with pytest.raises(ValueError, match="node 1 has parent 1"):
        tl.tree_speculative(model, PROMPT, max_steps=4, draft=lambda c, d: ([1], [1]))
    with pytest.raises(ValueError, match="draft: 1 tokens but 2 parents"):
        tl.tree_speculative(model, PROMPT, max_steps=4, draft=lambda c, d: ([1], [0, 0]))
    with pytest.raises(ValueError, match="depth must be an int >= 1, got 0"):
        tl.tree_speculative(model, PROMPT, max_steps=4, depth=0)


def test_tree_traces_render_analyse_and_round_trip(pair) -> None:
    """The trace view, SVG tree, received attention and JSON work on trees unchanged; the
    recorded probabilities are greedy's (spec) and the beams' (beam)."""
    from tempo_lens.analysis.patterns import isolation_check
    from tempo_lens.analysis.received import received_attention
    from tempo_lens.display.tree import tree_svg, tree_text

    _, model = pair
    greedy = tl.greedy(model, PROMPT, max_steps=10, stop_at_eos=False)
    draft = oracle_drafter(greedy.clean_ids()[1:], len(PROMPT) + 1)
    for run in (
        lambda cap: tl.tree_beam_search(model, PROMPT, max_steps=5, num_beams=3, observers=cap),
        lambda cap: tl.tree_speculative(
            model, PROMPT, max_steps=10, stop_at_eos=False, draft=draft, observers=cap
        ),
    ):
        cap = AttentionCapture()
        res = run([cap])
        trace = res.trace
        assert "clean:" in tree_text(trace) and "<svg" in tree_svg(trace)
        data = cap.result(trace)
        received_attention(data)
        assert isolation_check(data).max_sibling_attention == 0.0 or trace.method == "tree_spec"
        again = tl.Trace.from_dict(json.loads(trace.to_json()))
        assert again.state == trace.state and again.clean_ids() == res.token_ids
    on_path = [trace.token(i).probability for i in trace.clean_indices()]
    want = [r.probabilities[0] for r in greedy.steps]
    assert np.allclose(on_path, want, atol=1e-5)


def test_tree_speculative_stops_at_the_context_like_greedy() -> None:
    """Drafts never reach past the context: with a drafter whose nodes are accepted up to
    the context (and that proposes past it) the output and the stop reason are greedy's."""
    model = tl.make_tiny_model()
    prompt = [(7 * i) % 60 + 3 for i in range(model.cfg.n_ctx - 6)]
    base = tl.greedy(model, prompt, max_steps=20, stop_at_eos=False)
    assert base.stop_reason == "context"
    want = base.clean_ids()
    chain = chain_drafter(want + [0] * 20, len(prompt))  # proposes past the context
    res = tl.tree_speculative(model, prompt, max_steps=20, stop_at_eos=False, draft=chain, depth=10)
    assert (res.token_ids, res.stop_reason) == (want, "context")
    assert max(res.state.logical) < model.cfg.n_ctx and res.accepted_per_forward > 1
