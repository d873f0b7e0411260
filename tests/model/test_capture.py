"""Attention captured during generation equals a full forward of the final state.

The reference is ``run_with_cache`` on ``trace.to_state()`` under ``tempo_lens.attach``:
the same rows, placed at the same physical indices. Incremental (KV cache) and shorter
forwards round differently in the last bits, hence the 1e-5 tolerance; masked entries must
be exactly 0 in both, and a mis-indexed capture (rows shifted by one token) must fail.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tempo_lens import PruningConfig, RelativeRule, TempoConfig, attach, generate
from tempo_lens.analysis import isolation_check, load_attention, received_attention, save_attention
from tempo_lens.hooks.capture import AttentionCapture, AttentionData

PROMPT = [3, 14, 15, 9, 26]


def reference(model, trace) -> np.ndarray:
    st = trace.to_state()
    with attach(model, st), torch.no_grad():
        _, cache = model.run_with_cache(st.tokens_tensor())
    return torch.stack([cache["pattern", layer][0] for layer in range(model.cfg.n_layers)]).numpy()


def run(model, cap, **cfg):
    config = TempoConfig(selection_threshold=0.05, max_steps=5, **cfg)
    trace = generate(model, PROMPT, config, observers=[cap])
    return trace, cap.result(trace)


@pytest.mark.parametrize("kv", [True, False], ids=["kv_cache", "no_cache"])
@pytest.mark.parametrize("isolate", [True, False], ids=["isolated", "visible"])
@pytest.mark.parametrize("prune", [False, True], ids=["no_prune", "prune"])
def test_capture_matches_full_forward(tiny_variant, kv: bool, isolate: bool, prune: bool) -> None:
    extra = {"prune": PruningConfig(rule=RelativeRule(ratio=0.9))} if prune else {}
    trace, data = run(tiny_variant, AttentionCapture(), use_kv_cache=kv, isolate=isolate, **extra)
    assert max(trace.widths()) > 1, "the test needs parallel sets"
    if prune:
        assert trace.summary()["pruned"] > 0
    ref = reference(tiny_variant, trace)
    got = data.full_tensor()
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    assert np.array_equal(got == 0, ref == 0)  # masks (isolation, pruning, causal) exact
    # Each step's rows are exactly the queries of that step; a shift by one row fails.
    last = data.steps[-1]
    q = data.query_indices(last)
    shifted = ref[:, :, [i - 1 for i in q], : data.rows(last).shape[-1]]
    assert np.abs(data.rows(last) - shifted).max() > 1e-3


def test_no_cache_last_step_is_bit_exact(tiny) -> None:
    trace, data = run(tiny, AttentionCapture(), use_kv_cache=False)
    last = data.steps[-1]
    ref = reference(tiny, trace)
    assert np.array_equal(data.rows(last), ref[:, :, data.query_indices(last), :])


@pytest.mark.parametrize("kv", [True, False], ids=["kv_cache", "no_cache"])
def test_isolation_exactly_zero_isolated_positive_visible(tiny, kv: bool) -> None:
    _, iso = run(tiny, AttentionCapture(), use_kv_cache=kv, isolate=True)
    chk = isolation_check(iso)
    assert chk.n_sets > 0 and chk.max_sibling_attention == 0.0 and chk.consistent
    _, vis = run(tiny, AttentionCapture(), use_kv_cache=kv, isolate=False)
    chk = isolation_check(vis)
    assert chk.max_sibling_attention > 0.0 and chk.consistent


def test_layer_head_subset_float16_and_spool(tiny, tmp_path) -> None:
    _, full = run(tiny, AttentionCapture())
    cap = AttentionCapture(layers=[1], heads=[0, 2], float16=True, spool_dir=tmp_path / "spool")
    trace, sub = run(tiny, cap)
    assert sub.layers == [1] and sub.heads == [0, 2]
    assert sorted(p.name for p in (tmp_path / "spool").iterdir())[:2] == [
        "prompt.npz",
        "step_00000.npz",
    ]
    assert cap.rows == {}  # nothing kept in memory
    assert sub.stored_rows(0).dtype == np.float16
    want = full.full_tensor()[[1]][:, [0, 2]]
    np.testing.assert_allclose(sub.full_tensor(), want, atol=2e-3)
    assert np.all(sub.full_tensor()[want == 0] == 0)  # masked stays exactly 0 in float16
    np.testing.assert_allclose(
        sub.step_matrix(2, layer=1, head=2), full.step_matrix(2, 1, 2), atol=2e-3
    )
    full_bytes = AttentionCapture(layers=[1], heads=[0, 2])
    run(tiny, full_bytes)
    assert cap.nbytes * 2 == full_bytes.nbytes


def test_extra_hooks_are_stored_per_step(tiny) -> None:
    cap = AttentionCapture(layers=[0], hook_names=["blocks.{layer}.attn.hook_attn_scores"])
    trace, data = run(tiny, cap)
    n_q = len(trace.steps[1].indices)
    scores = data.extra(1)["blocks.0.attn.hook_attn_scores"]
    assert scores.shape == (tiny.cfg.n_heads, n_q, trace.steps[1].indices[-1] + 1)
    with pytest.raises(ValueError, match="unknown hook"):
        run(tiny, AttentionCapture(hook_names=["blocks.0.no_such_hook"]))


def test_result_rejects_another_trace(tiny) -> None:
    cap = AttentionCapture()
    run(tiny, cap)
    other = generate(tiny, [1, 2, 3], TempoConfig(max_steps=2))
    with pytest.raises(ValueError, match="does not match"):
        cap.result(other)


def test_export_round_trip_from_generation(tiny, tmp_path) -> None:
    trace, data = run(tiny, AttentionCapture(float16=True))
    save_attention(data, tmp_path)
    back = load_attention(tmp_path)
    assert isinstance(back, AttentionData) and back.trace is not None
    assert back.trace.to_dict() == trace.to_dict()
    assert back.stored_rows(0).dtype == np.float16
    np.testing.assert_array_equal(back.full_tensor(), data.full_tensor())
    a, b = received_attention(data), received_attention(back)
    assert a.to_dict() == b.to_dict()  # NaN (no singleton sets here) -> None


@pytest.mark.parametrize("layers", ["all", "late"])
def test_pruning_scores_are_the_captured_attention(tiny, layers: str) -> None:
    """Pruning and capture share one recorder: every pruning score is recomputed exactly from
    the attention captured in the same generation (mean over heads, queries, layers)."""
    from tempo_lens.pruning import resolve_layers, score_members

    prune = PruningConfig(rule=RelativeRule(ratio=0.9), lookahead=2, layers=layers)
    trace, data = run(tiny, AttentionCapture(), prune=prune)
    decisions = [d for rec in trace.steps for d in rec.pruning]
    assert len(decisions) >= 4 and any(d.pruned for d in decisions)
    keep = [data.layers.index(layer) for layer in resolve_layers(layers, tiny.cfg.n_layers)]
    for rec in trace.steps:
        by_set: dict[int, list] = {}
        for d in rec.pruning:
            by_set.setdefault(d.set_step, []).append(d)
        for set_step, ds in by_set.items():
            members = [d.index for d in ds]
            rows = [data.rows(s)[keep][..., members] for s in range(set_step + 1, rec.step + 1)]
            votes = torch.from_numpy(np.concatenate(rows, axis=2))
            scores = score_members(
                votes, list(range(len(members))), head_agg="mean", query_agg="mean"
            )
            assert scores.tolist() == [d.score for d in ds]
