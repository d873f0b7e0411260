"""Head-to-head path patching (``interventions.path_patching``) on the tiny model."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import tempo_lens as tl
from tempo_lens.experiments.isolation_patching import recovery_metric
from tempo_lens.hooks.interventions import path_patching


def _runs(model):
    trace = tl.generate(model, [3, 14, 15, 9], selection_threshold=0.05, max_steps=4)
    iso = trace.to_state()
    sets = [[iso.token_ids[i] for i in s] for s in iso.set_indices]
    vis = tl.SequenceState.from_sets(iso.token_ids[: iso.prompt_length], sets, isolate=False)
    toks = iso.tokens_tensor()
    with torch.no_grad():
        with tl.attach(model, vis):
            vis_logits, vis_cache = model.run_with_cache(toks)
        with tl.attach(model, iso):
            iso_logits, iso_cache = model.run_with_cache(toks)
    probs = [[trace.tokens[i].probability for i in s] for s in iso.set_indices]
    metric = recovery_metric(vis_logits, iso_logits, iso, probs, "mixture")
    return iso, toks, vis_cache, iso_cache, iso_logits, metric


def _patched(model, iso, toks, src, tgt, **kw):
    with torch.no_grad(), tl.attach(model, iso), path_patching(model, src, tgt, **kw):
        return model.run_with_cache(toks)


def test_identical_source_and_target_is_a_no_op() -> None:
    model = tl.make_tiny_model()
    iso, toks, _, iso_cache, iso_logits, metric = _runs(model)
    logits, _ = _patched(model, iso, toks, iso_cache, iso_cache, senders=[(0, 1)],
                         receivers=[(1, 2)], paths="qkv")  # fmt: skip
    torch.testing.assert_close(logits, iso_logits, rtol=1e-6, atol=1e-6)
    assert float(metric(logits)) == pytest.approx(0.0, abs=1e-5)
    assert model.cfg.use_split_qkv_input is False  # restored


def test_only_the_receiver_query_changes_by_the_sender_output() -> None:
    model = tl.make_tiny_model()
    iso, toks, vis_cache, iso_cache, _, _ = _runs(model)
    _, cache = _patched(model, iso, toks, vis_cache, iso_cache, senders=[(0, 1)],
                        receivers=[(1, 2)], paths="q")  # fmt: skip
    q, q0 = cache["blocks.1.attn.hook_q"], iso_cache["blocks.1.attn.hook_q"]
    others = [0, 1, 3]
    torch.testing.assert_close(q[:, :, others], q0[:, :, others], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(cache["blocks.1.attn.hook_k"], iso_cache["blocks.1.attn.hook_k"])
    assert (q[:, :, 2] - q0[:, :, 2]).abs().max() > 1e-4
    # independent: ln1(resid_pre + (z_vis - z_iso)[head 1] @ W_O[0, 1]) @ W_Q[1, 2] + b_Q
    dz = vis_cache["blocks.0.attn.hook_z"][:, :, 1] - iso_cache["blocks.0.attn.hook_z"][:, :, 1]
    resid = iso_cache["blocks.1.hook_resid_pre"] + dz @ model.W_O[0, 1]
    want = model.blocks[1].ln1(resid) @ model.W_Q[1, 2] + model.b_Q[1, 2]
    torch.testing.assert_close(q[:, :, 2], want, rtol=1e-5, atol=1e-5)


def test_full_patching_recovers_the_source_inputs_exactly() -> None:
    model = tl.make_tiny_model()
    iso, toks, vis_cache, iso_cache, _, _ = _runs(model)
    heads = [(0, h) for h in range(model.cfg.n_heads)]
    _, cache = _patched(model, iso, toks, vis_cache, iso_cache, senders=heads, sender_mlps=[0],
                        receivers=[(1, h) for h in range(4)], paths="qkv")  # fmt: skip
    for name in ("q", "k", "v"):
        got, src = cache[f"blocks.1.attn.hook_{name}"], vis_cache[f"blocks.1.attn.hook_{name}"]
        assert (src - iso_cache[f"blocks.1.attn.hook_{name}"]).abs().max() > 1e-4
        torch.testing.assert_close(got, src, rtol=1e-5, atol=1e-5)


def test_gqa_key_path_patches_the_group_key_head() -> None:
    model = tl.make_tiny_model(n_key_value_heads=2)
    iso, toks, vis_cache, iso_cache, _, _ = _runs(model)
    _, cache = _patched(model, iso, toks, vis_cache, iso_cache, senders=[(0, 0)],
                        receivers=[(1, 3)], paths="k")  # fmt: skip
    k, k0 = cache["blocks.1.attn.hook_k"], iso_cache["blocks.1.attn.hook_k"]
    assert k.shape[2] == 2
    torch.testing.assert_close(k[:, :, 0], k0[:, :, 0])  # head 3 is in group 1
    assert (k[:, :, 1] - k0[:, :, 1]).abs().max() > 1e-4
    torch.testing.assert_close(cache["blocks.1.attn.hook_q"], iso_cache["blocks.1.attn.hook_q"])


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"senders": [(1, 0)], "receivers": [(1, 2)]}, "layers before"),
        ({"senders": [(0, 0)], "receivers": [(1, 2)], "paths": "qx"}, "subset"),
        ({"senders": [(0, 9)], "receivers": [(1, 2)]}, "L0H9"),
        ({"senders": [], "receivers": [(1, 2)]}, "sender"),
        ({"senders": [(0, 0)], "receivers": []}, "receiver"),
    ],
)
def test_bad_arguments_raise(kw, match) -> None:
    model = tl.make_tiny_model()
    with pytest.raises(ValueError, match=match), path_patching(model, {}, {}, **kw):
        pass
    assert model.cfg.use_split_qkv_input is False


def test_isolation_patching_path_heads(tmp_path) -> None:
    from tempo_lens.experiments import isolation_patching

    args = ["--tiny", "--quick", "-q", "--selection-threshold", "0.05", "--no-heads"]
    heads = ["--path-heads", "L0H1,L1H2,L1H0"]
    assert isolation_patching.main([*args, *heads, "--output-dir", str(tmp_path)]) == 0
    paths = pd.read_csv(tmp_path / "paths.csv")
    per_prompt = paths.groupby("prompt_id").size()
    assert (per_prompt == 2 * 4).all()  # L0H1 -> L1H2, L0H1 -> L1H0; q, k, v, qkv
    assert set(paths["path"]) == {"q", "k", "v", "qkv"}
    assert paths["recovery"].notna().all() and (paths["recovery"] != 0).any()
    summary = pd.read_csv(tmp_path / "path_recovery.csv")
    assert len(summary) == 8 and {"ci_low", "ci_high", "direction"} <= set(summary.columns)
    assert "path patching" in (tmp_path / "report.txt").read_text()


@pytest.mark.parametrize("heads", ["L0X1", "L0H1,L0H1", "L0H1,L7H0"])
def test_isolation_patching_rejects_bad_path_heads(heads, tmp_path, capsys) -> None:
    from tempo_lens.experiments import isolation_patching

    argv = ["--tiny", "--quick", "--path-heads", heads, "--output-dir", str(tmp_path)]
    assert isolation_patching.main(argv) == 2
    assert "path_heads" in capsys.readouterr().err


@pytest.mark.parametrize("n_kv", [None, 2])
def test_one_path_per_row_equals_single_path_forwards(n_kv) -> None:
    """paths=["q", "k", "v", "qkv"] on 4 rows: row b equals a batch-of-one with paths[b]."""
    model = tl.make_tiny_model(n_key_value_heads=n_kv) if n_kv else tl.make_tiny_model()
    iso, toks, vis_cache, iso_cache, _, _ = _runs(model)
    paths = ["q", "k", "v", "qkv"]
    kw = {"senders": [(0, 1)], "receivers": [(1, 3)]}
    batched, _ = _patched(model, iso, toks.expand(4, -1), vis_cache, iso_cache, paths=paths, **kw)
    singles = [_patched(model, iso, toks, vis_cache, iso_cache, paths=p, **kw)[0] for p in paths]
    for b, single in enumerate(singles):
        torch.testing.assert_close(batched[b], single[0], rtol=1e-5, atol=1e-5)
    assert (singles[0] - singles[1]).abs().max() > 1e-4  # the variants differ
    with pytest.raises(ValueError, match="one path per row .4 rows. got a forward of batch 1"):
        _patched(model, iso, toks, vis_cache, iso_cache, paths=paths, **kw)
    assert model.cfg.use_split_qkv_input is False
