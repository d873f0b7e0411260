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


@pytest.mark.parametrize("name", ["head_ablation", "layer_intervention", "isolation_patching"])
def test_max_rows_changes_the_forwards_not_the_results(name) -> None:
    """--max-rows 1 (one intervention per forward) and 3 (a ragged last chunk) give the rows
    of the default budget (every head or beta of a layer in one forward), in the same order;
    the number of batch rows per block call follows the budget."""
    import importlib

    mod = importlib.import_module(f"tempo_lens.experiments.{name}")
    model = tl.make_tiny_model(n_layers=2)
    unit = Unit(Prompt(id="p", text="3 14 15 9 26"), {"ablation": "mean"})
    base = {"tiny": True, "max_steps": 6, "selection_threshold": 0.05}
    if name == "layer_intervention":
        base["betas"] = (-2.0, -1.0, 1.0, 2.0)  # 4 rows: chunks of 3 + 1
    widest = {}
    results = {}
    for max_rows in (64, 3, 1):
        seen: list[int] = []
        hook = lambda m, a, seen=seen: seen.append(a[0].shape[0])  # noqa: E731
        handle = model.blocks[1].register_forward_pre_hook(hook)
        try:
            results[max_rows] = mod.run_unit(mod.Config(**base, max_rows=max_rows), model, unit)
        finally:
            handle.remove()
        widest[max_rows] = max(seen)
    (table,) = [k for k in results[64] if results[64][k]][:1]
    want = results[64][table]
    assert want, "the prompt needs a parallel set"
    for max_rows in (3, 1):
        got = results[max_rows][table]
        assert [{k: v for k, v in r.items() if isinstance(v, str | int)} for r in got] == [
            {k: v for k, v in r.items() if isinstance(v, str | int)} for r in want
        ]
        for g, w in zip(got, want, strict=True):
            for k, v in w.items():
                if isinstance(v, float):
                    assert g[k] == pytest.approx(v, rel=1e-4, abs=1e-6, nan_ok=True), (k, g, w)
    assert widest[1] == 1 and widest[3] == 3 and widest[64] == 4


def test_max_rows_is_an_execution_setting() -> None:
    """Refused below 1, naming the value; not part of a sweep's identity (a resume may change it)."""
    from tempo_lens.experiments import head_ablation as ha
    from tempo_lens.runner.store import manifest

    with pytest.raises(ValueError, match="max_rows must be >= 1, got 0"):
        ha.Config(tiny=True, max_rows=0)
    prompts = [Prompt(id="p", text="3 14")]
    assert manifest(ha.SPEC, ha.Config(tiny=True, max_rows=2), prompts) == manifest(
        ha.SPEC, ha.Config(tiny=True), prompts
    )
