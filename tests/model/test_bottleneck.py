"""Bottleneck analysis and experiment (RQ 10.3, docs/preregistration.md#r6) on tiny models.

Every quantity is checked against an independent computation written out here: a plain
``run_with_cache`` under ``tl.attach``, the RMS norm and unembedding by hand from the
weights, scipy's cosine distance and Spearman rho. The final norm's weights are drawn at
random (the tiny model's are ones), so a lens that applied the norm weight twice, or not at
all, would fail.
"""

from __future__ import annotations

import itertools
import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.spatial.distance import cosine
from scipy.stats import spearmanr

import tempo_lens as tl
from tempo_lens.analysis.bottleneck import merge_layer, set_bottleneck
from tempo_lens.backends import backend_of
from tempo_lens.backends.bridge import BridgeBackend
from tempo_lens.experiments import bottleneck

PROMPTS = ([3, 14, 15, 9], [5, 3, 8, 9, 7, 9])
N_LAYERS = 4


def _tiny(backend: str):
    model = tl.make_tiny_model(n_layers=N_LAYERS, d_vocab=16, backend=backend)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        w = model.ln_final.w if backend == "hooked" else model.original_model.model.norm.weight
        w.copy_(torch.rand(w.shape, generator=gen) + 0.5)
    return model


def _reference_lens(model, x: torch.Tensor) -> torch.Tensor:
    """Final RMS norm and unembedding from the weights: logits ``[n, d_vocab]``."""
    x = x.double()
    if backend_of(model).name == "hooked":
        w, eps = model.ln_final.w, model.cfg.eps
        w_u, b_u = model.W_U, model.b_U
    else:
        hf = model.original_model
        w, eps = hf.model.norm.weight, hf.config.rms_norm_eps
        w_u, b_u = hf.lm_head.weight.T, torch.zeros(hf.config.vocab_size)
    normed = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w.double()
    return normed @ w_u.double() + b_u.double()


@pytest.fixture(scope="module", params=["hooked", "bridge"])
def runs(request):
    model = _tiny(request.param)
    cfg = tl.TempoConfig(selection_threshold=0.05, max_steps=6)
    return model, [tl.generate(model, p, cfg) for p in PROMPTS]


def _plain_cache(model, trace):
    st = trace.state
    with torch.no_grad(), tl.attach(model, st):
        logits, cache = model.run_with_cache(st.tokens_tensor())
    resid = [cache[f"blocks.{la}.hook_resid_post"][0] for la in range(N_LAYERS)]
    return logits[0], resid


def test_distinguishability_and_agreement_match_a_plain_forward(runs) -> None:
    model, traces = runs
    n_agree = 0
    for trace in traces:
        b = set_bottleneck(model, trace)
        _, resid = _plain_cache(model, trace)
        sets = [(k, list(s)) for k, s in enumerate(trace.state.set_indices) if len(s) > 1]
        assert [k for k, _ in sets] == b.sets["step"].tolist()
        assert max(len(s) for _, s in sets) >= 3  # averaging over several pairs is tested
        for j, (step, members) in enumerate(sets):
            for la in range(N_LAYERS):
                r = resid[la].double().numpy()
                pairs = list(itertools.combinations(range(len(members)), 2))
                centred = r[members] - r[1:].mean(0)  # position 0 left out (amended R6)
                want_d = np.mean([cosine(centred[a], centred[c]) for a, c in pairs])
                every = r[members] - r.mean(0)  # the first registered version
                want_all = np.mean([cosine(every[a], every[c]) for a, c in pairs])
                top = _reference_lens(model, resid[la][members]).argmax(-1).numpy()
                want_a = np.mean([top[a] == top[c] for a, c in pairs])
                row = b.sets_layers[
                    (b.sets_layers["step"] == step) & (b.sets_layers["layer"] == la)
                ]
                assert row["distinguishability"].item() == pytest.approx(want_d, rel=1e-6)
                assert row["distinguishability_all"].item() == pytest.approx(want_all, rel=1e-6)
                assert row["agreement"].item() == want_a
                assert row["n_members"].item() == len(members)
                n_agree += want_a > 0
            assert b.sets["merge_layer"][j] == merge_layer(b.agreement[j]) or (
                math.isnan(b.sets["merge_layer"][j]) and math.isnan(merge_layer(b.agreement[j]))
            )
    assert n_agree > 0  # some layers have agreeing pairs: agreement is not trivially 0


def test_final_layer_lens_is_the_models_own_prediction(runs) -> None:
    model, traces = runs
    backend = backend_of(model)
    for trace in traces:
        b = set_bottleneck(model, trace)
        logits, resid = _plain_cache(model, trace)
        with torch.no_grad():
            lens = backend.logit_lens(resid[-1])
        torch.testing.assert_close(lens, logits, rtol=1e-5, atol=1e-5)
        for members, top1 in zip(b.members, b.top1, strict=True):
            assert top1[-1].tolist() == logits[members].argmax(-1).tolist()
        assert (b.sets["final_mismatches"] == 0).all()


def test_merge_layer() -> None:
    assert merge_layer([0.0, 1.0, 0.5, 1.0, 1.0]) == 3.0
    assert merge_layer([1.0, 1.0, 1.0]) == 0.0
    assert merge_layer([0.0, 0.0, 1.0]) == 2.0
    assert math.isnan(merge_layer([1.0, 1.0, 0.5]))
    assert math.isnan(merge_layer([]))


def test_sets_merge_when_every_position_predicts_one_token() -> None:
    model = tl.make_tiny_model(n_layers=N_LAYERS, d_vocab=16)
    trace = tl.generate(model, PROMPTS[0], selection_threshold=0.05, max_steps=4)
    with torch.no_grad():
        model.b_U[7] = 1e4  # after generation: every lens's top-1 is token 7
    b = set_bottleneck(model, trace)
    assert len(b.sets) and (b.agreement == 1).all()
    assert b.sets["merge_layer"].tolist() == [0.0] * len(b.sets)
    assert b.sets["merged"].all()


def test_refusals(runs) -> None:
    model, _ = runs
    pruned = tl.generate(
        model,
        PROMPTS[0],
        selection_threshold=0.05,
        max_steps=5,
        prune=tl.PruningConfig(rule=tl.RelativeRule(ratio=0.9)),
    )
    assert any(p is not None for p in pruned.state.pruned_at)
    with pytest.raises(ValueError, match="without pruning"):
        set_bottleneck(model, pruned)
    with pytest.raises(ValueError, match="TEMPO trace"):
        set_bottleneck(model, tl.greedy(model, PROMPTS[0], max_steps=2))
    no_norm = SimpleNamespace(cfg=SimpleNamespace(model_name="m"), ln_final=None)
    with pytest.raises(ValueError, match="bridge backend.*has no ln_final"):
        BridgeBackend(no_norm).logit_lens(torch.zeros(1, 4))


def test_bottleneck_experiment_end_to_end(tmp_path) -> None:
    out = tmp_path / "r6"
    assert bottleneck.main(["--tiny", "--quick", "-q", "--output-dir", str(out)]) == 0
    sl = pd.read_csv(out / "sets_layers.csv")
    pp = pd.read_csv(out / "per_prompt.csv")
    assert len(pp) == 2 and (pp["n_sets"] > 0).all()
    for r in pp.itertuples():
        g = sl[sl["prompt_id"] == r.prompt_id]
        assert len(g) == r.n_sets * r.n_layers == r.n_sets * N_LAYERS
        curve = g.groupby("layer")["distinguishability"].mean()
        assert r.rho == pytest.approx(spearmanr(curve.index, curve.to_numpy()).statistic)
        merges = [merge_layer(s.sort_values("layer")["agreement"]) for _, s in g.groupby("step")]
        assert r.merged_fraction == pytest.approx(np.mean([not math.isnan(m) for m in merges]))
        merged = [m / N_LAYERS for m in merges if not math.isnan(m)]
        assert (math.isnan(r.merge_depth) and not merged) or r.merge_depth == pytest.approx(
            np.mean(merged)
        )
        assert r.final_mismatches == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rho"]["mean"] == pytest.approx(pp["rho"].mean())
    assert summary["verdict"] == "insufficient"  # 2 prompts < min_prompts
    layers = pd.read_csv(out / "layers_summary.csv")
    assert len(layers) == 2 * N_LAYERS
    assert (out / "bottleneck.png").stat().st_size > 0
    assert "members with depth (R6): insufficient" in (out / "report.txt").read_text()


@pytest.mark.parametrize(
    ("rho", "verdict"),
    [(-0.6, "converge"), (0.6, "diverge"), (0.0, "inconclusive")],
)
def test_summary_applies_the_r6_rule(tmp_path, rho, verdict) -> None:
    rng = np.random.default_rng(0)
    n = 12
    pp = pd.DataFrame(
        {
            "prompt_id": [f"p{i}" for i in range(n)],
            "n_sets": 3,
            "rho": rho + rng.normal(0, 0.1, n),
            "merged_fraction": rng.uniform(0, 1, n),
            "merge_depth": [math.nan, *rng.uniform(0, 1, n - 1)],
            "final_mismatches": 0,
        }
    )
    if rho == 0.0:
        pp["rho"] = np.tile([-0.5, 0.5], n // 2)
    cfg = bottleneck.Config(tiny=True)
    report = bottleneck.summarize(cfg, {"per_prompt": pp}, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["verdict"] == verdict
    assert f"members with depth (R6): {verdict}" in report
    assert summary["merge_depth"]["n"] == n - 1  # a prompt without merged sets is counted out


def test_bottleneck_refuses_pruning(tmp_path, capsys) -> None:
    args = ["--tiny", "--prune", "relative:0.5", "--output-dir", str(tmp_path)]
    assert bottleneck.main(args) == 2
    assert "prune must be none" in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["hooked", "bridge"])
def test_logits_from_layer_applies_the_final_norm_once(backend) -> None:
    """Replay's forward from a layer gives the model's logits with a final-norm weight != 1.

    (Gemma 3 keeps its norms unfolded on the HookedTransformer; the tiny model's are ones.)
    """
    model = _tiny(backend)
    tokens = torch.tensor([[3, 14, 15, 9, 2]])
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
        got = backend_of(model).logits_from_layer(
            tokens, cache["blocks.1.hook_resid_pre"], 1, [0, 2, 4]
        )
    torch.testing.assert_close(got, logits[:, [0, 2, 4]], rtol=1e-5, atol=1e-5)
