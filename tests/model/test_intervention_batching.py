"""Issue 22: batched intervention forwards equal one-forward-per-intervention oracles.

``isolation_patching`` patches the heads of a layer as batch rows of one forward that
starts at that layer; the oracle is TransformerLens' own activation patching
(``patching.generic_activation_patch`` / ``get_act_patch_attn_head_out_all_pos``), one full
forward per patch, with the same recovery metric on full logits.
"""

from __future__ import annotations

import pytest
import torch
from transformer_lens import patching

import tempo_lens as tl
from tempo_lens.analysis.replay import replay_state
from tempo_lens.experiments import isolation_patching as ip
from tempo_lens.hooks.interventions import head_ablation_hooks, head_patch_hooks
from tempo_lens.prompts import Prompt
from tempo_lens.runner import Unit, encode

pytestmark = pytest.mark.bridge  # also run under TransformerLens 4 (the README's TL4 tier)


def _all_positions(corrupted: torch.Tensor, index: object, clean: torch.Tensor) -> torch.Tensor:
    corrupted[:] = clean
    return corrupted


def _oracle(cfg: ip.Config, model, prompt: str) -> dict[tuple[str, int, int], float]:
    """The patching rows from TransformerLens' patching functions (one forward per patch)."""
    trace = tl.generate(
        model, encode(model, Prompt(id="p", text=prompt)), cfg.tempo_config(prune=None)
    )
    iso, vis = trace.to_state(), replay_state(trace, isolate=False)
    probs = [[float(trace.tokens[i].probability or 0.0) for i in s] for s in iso.set_indices]
    toks = iso.tokens_tensor()
    with torch.no_grad():
        with tl.attach(model, vis):
            vis_logits, vis_cache = model.run_with_cache(toks)
        with tl.attach(model, iso):
            iso_logits = model(toks)
            batch_metric = ip.recovery_metric(vis_logits, iso_logits, iso, probs, cfg.readout)

            def metric(logits: torch.Tensor) -> torch.Tensor:
                return batch_metric(logits)[0]

            resid = patching.generic_activation_patch(
                model, toks, vis_cache, metric, _all_positions, "resid_pre",
                index_axis_names=("layer",),
            )  # fmt: skip
            heads = patching.get_act_patch_attn_head_out_all_pos(model, toks, vis_cache, metric)
    out = {("resid_pre", la, -1): float(v) for la, v in enumerate(resid)}
    out |= {
        ("z", la, h): float(heads[la, h])
        for la in range(heads.shape[0])
        for h in range(heads.shape[1])
    }
    return out


@pytest.mark.parametrize("readout", ["mixture", "last"])
def test_batched_isolation_patching_equals_transformer_lens_patching(readout) -> None:
    model = tl.make_tiny_model(n_layers=3)
    cfg = ip.Config(tiny=True, max_steps=6, readout=readout, selection_threshold=0.05)
    prompt = "3 14 15 9 26"
    got = ip.run_unit(cfg, model, Unit(Prompt(id="p", text=prompt), {}))["patching"]
    assert got, "the prompt needs a parallel set before its last step"
    want = _oracle(cfg, model, prompt)
    assert len(got) == len(want) == model.cfg.n_layers * (model.cfg.n_heads + 1)
    for row in got:
        w = want[(row["kind"], row["layer"], row["head"])]
        assert row["recovery"] == pytest.approx(w, abs=1e-4), row
    assert {round(r["recovery"], 3) for r in got if r["kind"] == "z"} != {0.0}  # patches matter
    # layer 0's resid_pre is the embedding, the same in both runs: nothing to recover
    assert got[0]["recovery"] == pytest.approx(0.0, abs=1e-6)


def test_head_patch_rows_equal_single_patches() -> None:
    """Row b of a batched head patch equals a batch-of-one forward patching that head alone."""
    model = tl.make_tiny_model(n_layers=2)
    st = tl.SequenceState.from_sets([5, 9, 11, 2], [[7, 8, 3], [4], [12, 13]], isolate=True)
    toks = st.tokens_tensor()
    with torch.no_grad(), tl.attach(model, st):
        _, cache = model.run_with_cache(toks)
        source = {1: cache["blocks.1.attn.hook_z"][0].flip(0)}  # any other activations
        chunk = [(1, h) for h in range(model.cfg.n_heads)]
        with model.hooks(fwd_hooks=head_patch_hooks(chunk, source)):
            batched = model(toks.expand(len(chunk), -1))
        for b, one in enumerate(chunk):
            with model.hooks(fwd_hooks=head_patch_hooks([one], source)):
                single = model(toks)
            assert (batched[b] - single[0]).abs().max() < 1e-5
        plain = model(toks)
    assert (batched - plain).abs().max() > 1e-3
    with pytest.raises(ValueError, match=r"no source activations for layers \[0\]"):
        head_patch_hooks([(0, 1)], source)


def test_head_ablation_hooks_unchanged_by_the_shared_replacement() -> None:
    """Zero and mean ablation through the shared row-replacement give the documented values."""
    model = tl.make_tiny_model(n_layers=2)
    mean = torch.randn(model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_head)
    for m in (None, mean):
        hooks = head_ablation_hooks([(1, 0), (1, 2)], mean=m)
        name, fn = hooks[0]
        z = torch.randn(2, 5, model.cfg.n_heads, model.cfg.d_head)
        out = fn(z, None)
        want0 = torch.zeros(5, model.cfg.d_head) if m is None else m[1, 0].expand(5, -1)
        want1 = torch.zeros(5, model.cfg.d_head) if m is None else m[1, 2].expand(5, -1)
        assert name == "blocks.1.attn.hook_z"
        assert torch.equal(out[0, :, 0], want0) and torch.equal(out[1, :, 2], want1)
        assert torch.equal(out[0, :, 1:], z[0, :, 1:]) and torch.equal(out[1, :, :2], z[1, :, :2])
