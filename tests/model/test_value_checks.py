"""Value checks for three mistakes that earlier tests caught only by a crash (issue 27).

* A batch that shrinks (rows finishing early) must keep every remaining row's observers and
  readouts on that row: each row's trace and captured attention equal a single generation.
* A grouped (GQA) path patch moves exactly the receiver's key/value head ``h // group``, by
  the amount an independent formula gives (``ln1(resid + dz @ W_O) @ W_K + b_K``).
* ``Replay``'s received-attention ratio counts each ratio layer once: it equals the ratio
  computed by loops from ``run_with_cache``'s patterns, whatever layer the forward starts at.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tempo_lens as tl
from tempo_lens import AttentionCapture, PruningConfig, RelativeRule, TempoConfig
from tempo_lens.analysis.teacher_forced import Replay
from tempo_lens.hooks.interventions import path_patching

from .test_batch import compare
from .test_path_patching import _runs as _path_patching_runs


# ---------------------------------------------------------------------------- batch shrink
@pytest.mark.parametrize("first_done", [0, 1, 2], ids=["first", "middle", "last"])
@pytest.mark.parametrize("use_kv_cache", [True, False], ids=["cache", "no_cache"])
def test_rows_left_after_a_batch_shrinks_equal_single_runs(first_done: int, use_kv_cache) -> None:
    """Rows stop at the context limit at different steps (the longest prompt first); the
    rows left must see their own tokens: traces, pruning and capture equal single runs."""
    model = tl.make_tiny_model(n_ctx=22)
    config = TempoConfig(
        selection_threshold=0.03,
        max_steps=30,
        prune=PruningConfig(rule=RelativeRule(ratio=0.7)),
        use_kv_cache=use_kv_cache,
    )
    lengths = [4, 8, 12]
    lengths.insert(first_done, 16)  # this row reaches the limit first
    prompts = [[(7 * r + 3 * i) % 60 + 1 for i in range(n)] for r, n in enumerate(lengths)]
    caps = [AttentionCapture(layers=[0, 1]) for _ in prompts]
    sizes: list[int] = []
    handle = model.embed.register_forward_hook(lambda m, i, o: sizes.append(o.shape[0]))
    try:
        batch = tl.generate_batch(model, prompts, config, observers=[[c] for c in caps])
    finally:
        handle.remove()
    assert sizes[0] == len(prompts) and sizes[-1] < len(prompts)  # the batch did shrink
    assert len(batch[first_done].steps) == min(len(t.steps) for t in batch)
    assert len({len(t.steps) for t in batch}) > 1
    assert sum(t.summary()["pruned"] for t in batch) > 0  # readouts after prunes ran
    for prompt, cap, trace in zip(prompts, caps, batch, strict=True):
        alone = AttentionCapture(layers=[0, 1])
        single = tl.generate(model, prompt, config, observers=[alone])
        compare(trace, single)
        got, want = cap.result(trace).full_matrix(), alone.result(single).full_matrix()
        np.testing.assert_allclose(got, want, atol=1e-6)


# ---------------------------------------------------------------------------- GQA path patch
def _gqa_runs(model):
    """The isolated/visible runs of tests/model/test_path_patching.py (same helper)."""
    iso, toks, vis_cache, iso_cache, _, _ = _path_patching_runs(model)
    return iso, toks, vis_cache, iso_cache


@pytest.fixture(scope="module")
def gqa():
    model = tl.make_tiny_model(n_key_value_heads=2)  # 4 query heads, 2 key/value heads
    return model, *_gqa_runs(model)


@pytest.mark.parametrize("path", ["k", "v"])
@pytest.mark.parametrize("receiver", [0, 1, 2, 3])
def test_gqa_path_patch_moves_the_group_head_by_the_formula(gqa, receiver: int, path) -> None:
    model, iso, toks, vis_cache, iso_cache = gqa
    group = model.cfg.n_heads // model.cfg.n_key_value_heads
    kv = receiver // group
    with (
        torch.no_grad(),
        tl.attach(model, iso),
        path_patching(
            model, vis_cache, iso_cache, senders=[(0, 1)], receivers=[(1, receiver)], paths=path
        ),
    ):
        _, cache = model.run_with_cache(toks)
    got, clean = cache[f"blocks.1.attn.hook_{path}"], iso_cache[f"blocks.1.attn.hook_{path}"]
    other = 1 - kv
    torch.testing.assert_close(got[:, :, other], clean[:, :, other], rtol=0, atol=0)
    dz = vis_cache["blocks.0.attn.hook_z"][:, :, 1] - iso_cache["blocks.0.attn.hook_z"][:, :, 1]
    resid = iso_cache["blocks.1.hook_resid_pre"] + dz @ model.W_O[0, 1]
    attn = model.blocks[1].attn
    w = (attn._W_K if path == "k" else attn._W_V)[kv]
    b = (attn._b_K if path == "k" else attn._b_V)[kv]
    want = model.blocks[1].ln1(resid) @ w + b
    assert (want - clean[:, :, kv]).abs().max() > 1e-4  # the patch does move this head
    torch.testing.assert_close(got[:, :, kv], want, rtol=1e-5, atol=1e-5)
    # query heads are untouched by a key/value path
    torch.testing.assert_close(cache["blocks.1.attn.hook_q"], iso_cache["blocks.1.attn.hook_q"])


# ---------------------------------------------------------------------------- Replay ratio
def _reference_ratio(replay: Replay, patterns: dict[int, torch.Tensor]) -> float:
    """Sum over ratio layers of the mean received attention of the parallel tokens, over the
    same sum for the generated singletons; per token, the mean over heads and over the later
    queries that may see it. Loops over the state, independent of ``Replay``'s tensors."""
    st = replay.state
    n = len(st)
    vis = st.visibility()
    par = [st.steps[i] >= 0 and st.is_parallel(i) for i in range(n)]
    single = [st.steps[i] >= 0 and not par[i] for i in range(n)]
    sums = [0.0, 0.0]
    for la in replay.ratio_layers:
        p = patterns[la][0].double().mean(0)  # query key
        recv = []
        for k in range(n):
            qs = [q for q in range(n) if st.steps[q] > st.steps[k] >= 0 and bool(vis[q, k])]
            recv.append(sum(float(p[q, k]) for q in qs) / max(len(qs), 1))
        for g, members in enumerate((par, single)):
            sums[g] += float(np.mean([r for r, m in zip(recv, members, strict=True) if m]))
    return sums[0] / sums[1]


@pytest.fixture(scope="module")
def replay():
    model = tl.make_tiny_model(n_layers=4)
    trace = tl.generate(model, [3, 14, 15, 9], selection_threshold=0.1, max_steps=8)
    assert 1 in trace.widths()[:-1] and max(trace.widths()) > 1  # both groups received
    return Replay(model, trace, ratio_layers=[1, 2, 3])


def _ablate(z, hook):
    z = z.clone()
    z[:, :, 0] = 0.0
    return z


@pytest.mark.parametrize("start_layer", [0, 1, 2])
def test_replay_ratio_counts_each_layer_once(replay, start_layer: int) -> None:
    names = [f"blocks.{la}.attn.hook_pattern" for la in replay.ratio_layers]
    _, clean = replay.run_with_cache(names_filter=lambda n: n in names)
    clean_ratio = _reference_ratio(replay, {la: clean[names[i]] for i, la in enumerate([1, 2, 3])})
    assert replay.clean["ratio_late"] == pytest.approx(clean_ratio, rel=1e-9)
    assert any(replay.state.is_parallel(i) for i in range(len(replay.state)))
    # an intervention at layer 2 (head 0 ablated), the forward starting at start_layer <= 2
    hook = ("blocks.2.attn.hook_z", _ablate)
    (got,) = replay.measure(1, [hook], start_layer=start_layer)
    with torch.no_grad(), tl.attach(replay.model, replay.state), replay.model.hooks([hook]):
        _, cache = replay.model.run_with_cache(
            replay.state.tokens_tensor(), names_filter=lambda n: n in names
        )
    want = _reference_ratio(replay, {la: cache[names[i]] for i, la in enumerate([1, 2, 3])})
    assert not math.isclose(want, clean_ratio, rel_tol=1e-6)  # layers 2-3 did change
    assert got["ratio_late"] == pytest.approx(want, rel=1e-9)
    assert got["dratio_late"] == pytest.approx(want - clean_ratio, rel=1e-6, abs=1e-12)
