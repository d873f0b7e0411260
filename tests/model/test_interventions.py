"""Interventions: attention bias, batched head ablation, teacher-forced step distributions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tempo_lens as tl
from tempo_lens.hooks.interventions import attention_bias, head_ablation_hooks, step_distributions
from tests.model.hf_oracle import reference_mask, reference_positions, tiny_llama_pair


@pytest.fixture(scope="module")
def pair():
    return tiny_llama_pair(seed=3)


def _state(isolate: bool = True) -> tl.SequenceState:
    return tl.SequenceState.from_sets([5, 9, 11, 2], [[7, 8, 3], [4], [12, 13]], isolate=isolate)


def test_beta_zero_is_a_no_op_to_the_bit(pair) -> None:
    _, model = pair
    st = _state()
    with torch.no_grad(), tl.attach(model, st):
        plain = model(st.tokens_tensor())
        with model.hooks(fwd_hooks=attention_bias(st, keys=[4, 5, 6], beta=0.0, layers=[0, 1])):
            biased = model(st.tokens_tensor())
    assert torch.equal(plain, biased)


@pytest.mark.parametrize("isolate", [True, False])
def test_bias_on_all_layers_equals_hf_with_an_additive_mask(pair, isolate) -> None:
    hf, model = pair
    st = _state(isolate)
    keys, beta = [4, 5, 6, 8], -1.7
    allowed = reference_mask(st)
    mask = torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))
    mask[:, keys] += beta
    pos = torch.tensor([reference_positions(st)])
    with torch.no_grad():
        ref = hf(
            input_ids=st.tokens_tensor(),
            attention_mask=mask[None, None],
            position_ids=pos,
            use_cache=False,
        ).logits
        with (
            tl.attach(model, st),
            model.hooks(fwd_hooks=attention_bias(st, keys=keys, beta=beta, layers=[0, 1])),
        ):
            got = model(st.tokens_tensor())
        with tl.attach(model, st):
            unbiased = model(st.tokens_tensor())
    assert (got - ref).abs().max() < 1e-4
    assert (unbiased - ref).abs().max() > 1e-2  # the bias matters


def test_bias_restricted_to_heads_and_layers(pair) -> None:
    _, model = pair
    st = _state()
    hooks = attention_bias(st, keys=[4, 5], beta=2.0, layers=[1], heads=[2])
    with torch.no_grad(), tl.attach(model, st):
        _, clean = model.run_with_cache(st.tokens_tensor(), names_filter=lambda n: "scores" in n)
        with model.hooks(fwd_hooks=hooks):
            _, biased = model.run_with_cache(
                st.tokens_tensor(), names_filter=lambda n: "scores" in n
            )
    b1, c1 = biased["attn_scores", 1], clean["attn_scores", 1]
    assert torch.equal(biased["attn_scores", 0], clean["attn_scores", 0])
    finite = torch.isfinite(c1)
    target = torch.zeros_like(finite)
    target[:, 2, :, 4:6] = True
    # the hook adds beta in the scores' dtype: biased == fl(clean + 2) exactly, where finite
    # (a difference biased - clean is not exactly 2.0 in float32 for most scores)
    assert torch.equal(b1[target & finite], c1[target & finite] + 2.0)
    assert (target & finite).sum() > 0
    assert torch.equal(b1[~target & finite], c1[~target & finite])


def test_bias_rejects_keys_outside_the_state() -> None:
    with pytest.raises(ValueError, match=r"keys outside .* \[99\]"):
        attention_bias(_state(), keys=[99], beta=1.0, layers=[0])


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_batched_head_ablation_equals_one_forward_per_head(pair, mode) -> None:
    _, model = pair
    st = _state()
    ablations = [(0, 1), (1, 3), (1, 0)]
    mean = torch.randn(2, 4, 16) if mode == "mean" else None
    toks = st.tokens_tensor().expand(len(ablations), -1)
    with torch.no_grad(), tl.attach(model, st):
        with model.hooks(fwd_hooks=head_ablation_hooks(ablations, mean=mean)):
            batched, cache = model.run_with_cache(toks, names_filter=lambda n: n.endswith("hook_z"))
        for b, (layer, head) in enumerate(ablations):
            want = (
                torch.zeros(len(st), 16) if mean is None else mean[layer, head].expand(len(st), -1)
            )
            assert torch.equal(cache["z", layer][b, :, head], want)

            def ablate(z, hook, head=head):
                z = z.clone()
                z[:, :, head] = 0.0 if mean is None else mean[hook.layer(), head]
                return z

            single = model.run_with_hooks(
                st.tokens_tensor(), fwd_hooks=[(f"blocks.{layer}.attn.hook_z", ablate)]
            )
            assert (batched[b] - single[0]).abs().max() < 1e-5


@pytest.mark.parametrize("readout", ["last", "top", "mixture"])
def test_step_distributions_replay_the_generation(readout) -> None:
    model = tl.make_tiny_model()
    trace = tl.generate(
        model,
        [3, 14, 15, 9],
        tl.TempoConfig(selection_threshold=0.05, max_steps=5, readout=readout),
    )
    st = trace.to_state()
    probs = [[trace.tokens[i].probability for i in st.set_indices[s]] for s in range(st.n_steps)]
    with torch.no_grad(), tl.attach(model, st):
        logits = model(st.tokens_tensor())
    dists = step_distributions(logits, st, probs, readout)[0]
    assert dists.shape == (st.n_steps, model.cfg.d_vocab)
    for s, rec in enumerate(trace.steps):
        for c in rec.candidates:
            assert float(dists[s, c.token_id]) == pytest.approx(c.probability, abs=1e-5)


def test_replay_clean_is_zero_and_matches_a_full_unembedding() -> None:
    from tempo_lens.analysis.teacher_forced import Replay
    from tempo_lens.hooks.interventions import readout_positions

    model = tl.make_tiny_model()
    trace = tl.generate(model, [3, 14, 15, 9], selection_threshold=0.05, max_steps=5)
    r = Replay(model, trace)
    again = r.measure(2, [])
    np.testing.assert_equal(again[0], again[1])
    assert again[0]["kl_parallel"] == 0.0 and again[0]["dnll"] == 0.0
    st = r.state
    with torch.no_grad(), tl.attach(model, st):
        full = model(st.tokens_tensor())
    pos = readout_positions(st)
    probs = r.member_probs
    a = step_distributions(full, st, probs, "mixture")
    b = step_distributions(full[:, pos], st, probs, "mixture", pos)
    assert torch.equal(a, b)
    pruned = tl.generate(
        model,
        [3, 14, 15, 9],
        selection_threshold=0.05,
        max_steps=5,
        prune=tl.PruningConfig(rule=tl.RelativeRule(ratio=0.9)),
    )
    if any(t.pruned_at_step is not None for t in pruned.tokens):
        with pytest.raises(ValueError, match="without pruning"):
            Replay(model, pruned)


def test_bias_per_batch_row_equals_separate_forwards(pair) -> None:
    _, model = pair
    st = _state()
    betas = [0.0, -2.0, 1.5]
    toks = st.tokens_tensor().expand(3, -1)
    with torch.no_grad(), tl.attach(model, st):
        with model.hooks(fwd_hooks=attention_bias(st, keys=[4, 6], beta=betas, layers=[1])):
            batched = model(toks)
        for b, beta in enumerate(betas):
            with model.hooks(fwd_hooks=attention_bias(st, keys=[4, 6], beta=beta, layers=[1])):
                single = model(st.tokens_tensor())
            assert (batched[b] - single[0]).abs().max() < 1e-5


def test_replay_starting_at_a_later_layer_is_exact() -> None:
    from tempo_lens.analysis.teacher_forced import Replay

    model = tl.make_tiny_model(n_layers=3)
    trace = tl.generate(model, [3, 14, 15, 9], selection_threshold=0.05, max_steps=5)
    r = Replay(model, trace, ratio_layers=[0, 1, 2])
    hooks = head_ablation_hooks([(1, 0), (1, 2)])
    full = r.measure(2, hooks)
    late = r.measure(2, hooks, start_layer=1)
    for a, b in zip(full, late, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], abs=1e-6, nan_ok=True), k
    assert full[0]["kl_parallel"] > 0


def test_the_docs_intervention_example_runs(capsys) -> None:
    from tests.model.test_docs_examples import python_blocks

    block = next(b for b in python_blocks("experiments.md") if "Replay(model, trace)" in b)
    exec(compile(block, "experiments.md", "exec"), {})  # noqa: S102
    out = capsys.readouterr().out.split()
    assert len(out) == 2 and all(float(x) > 0 for x in out)
