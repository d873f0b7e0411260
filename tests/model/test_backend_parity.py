"""Every experiment gives the same tables on both backends (TransformerLens 3.x).

The tiny ``HookedTransformer`` of each experiment's ``--tiny`` runs and a
``TransformerBridge`` around its exact Hugging Face twin
(:func:`~tempo_lens.models.hf_export.hf_llama_from_hooked`, then
:func:`~tempo_lens.models.load.bridge_around`) run the ``--quick`` sweep; every table must
agree: numbers within 1e-4, absolute or relative (the two backends round differently: RoPE
at a physical position followed by TEMPO's re-rotation vs TransformerLens' own kernels),
everything else (tokens, texts, decisions, verdicts) exactly. Timing columns are left out.
The weights are drawn at ``init_scale <= 0.25``: findings' own tiny model (1.0) has
near-one-hot attention (entropy ~1e-7 nats), whose attention ratios divide masses of
~1e-22 and move by ~1e-3 relative under float32 rounding alone: a test of rounding, not
of the backends.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import tempo_lens as tl
from tempo_lens.backends import HAS_HOOKED_TRANSFORMER, backend_of
from tempo_lens.experiments import available, spec
from tempo_lens.models.hf_export import hf_llama_from_hooked
from tempo_lens.models.load import bridge_around
from tempo_lens.runner import run_experiment

pytestmark = pytest.mark.skipif(
    not HAS_HOOKED_TRANSFORMER, reason="the HookedTransformer side needs TransformerLens 3.x"
)

TOL = 1e-4


def _is_timing(col: str) -> bool:
    return "second" in col or col in ("batch", "wall", "time")


def _quick_run(name: str, model, out):
    s = spec(name)
    cfg = s.config(tiny=True, **dict(s.quick))
    prompts = s.prompts(cfg)[: s.quick_prompts]
    return run_experiment(s, cfg, out, prompts=prompts, model=model, progress=False)


def assert_tables_agree(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame], tol=TOL):
    assert sorted(a) == sorted(b)
    for table in a:
        x, y = a[table], b[table]
        assert list(x.columns) == list(y.columns), table
        assert len(x) == len(y), table
        for col in x.columns:
            if _is_timing(col):
                continue
            u, v = x[col], y[col]
            if pd.api.types.is_float_dtype(u) or pd.api.types.is_float_dtype(v):
                uu, vv = u.to_numpy(dtype=float), v.to_numpy(dtype=float)
                same_nan = np.isnan(uu) == np.isnan(vv)
                assert same_nan.all(), f"{table}.{col}: NaN in one backend only"
                ok = ~np.isnan(uu)
                uu, vv = uu[ok], vv[ok]
                bad = np.abs(uu - vv) > tol + tol * np.abs(uu)
                diff = float(np.max(np.abs(uu - vv), initial=0.0))
                assert not bad.any(), f"{table}.{col}: max |diff| {diff:.2e} > {tol}"
            else:
                assert u.astype(str).tolist() == v.astype(str).tolist(), f"{table}.{col}"


@pytest.mark.parametrize("name", available())
def test_every_experiment_agrees_across_backends(name, tmp_path) -> None:
    s = spec(name)
    kwargs = dict(s.tiny_model)
    kwargs["init_scale"] = min(float(kwargs.get("init_scale", 0.25)), 0.25)
    hooked = tl.make_tiny_model(**kwargs)
    bridge = bridge_around(hf_llama_from_hooked(hooked))
    assert backend_of(bridge).name == "bridge"
    a = _quick_run(name, hooked, tmp_path / "hooked")
    b = _quick_run(name, bridge, tmp_path / "bridge")
    assert a.tables and all(len(t) for t in a.tables.values())
    assert_tables_agree(a.tables, b.tables)


def test_the_comparison_catches_a_difference() -> None:
    a = {"t": pd.DataFrame({"x": [1.0, 2.0], "tok": ["a", "b"]})}
    assert_tables_agree(a, {"t": pd.DataFrame({"x": [1.0, 2.0 + 5e-5], "tok": ["a", "b"]})})
    with pytest.raises(AssertionError, match=r"t.x: max \|diff\|"):
        assert_tables_agree(a, {"t": pd.DataFrame({"x": [1.0, 2.001], "tok": ["a", "b"]})})
    big = {"t": pd.DataFrame({"x": [4e9], "tok": ["a"]})}
    assert_tables_agree(big, {"t": pd.DataFrame({"x": [4e9 * (1 + 5e-5)], "tok": ["a"]})})
    with pytest.raises(AssertionError, match="t.x"):
        assert_tables_agree(big, {"t": pd.DataFrame({"x": [4e9 * (1 + 3e-4)], "tok": ["a"]})})
    with pytest.raises(AssertionError, match="t.tok"):
        assert_tables_agree(a, {"t": pd.DataFrame({"x": [1.0, 2.0], "tok": ["a", "c"]})})
    with pytest.raises(AssertionError, match="NaN in one backend"):
        assert_tables_agree(a, {"t": pd.DataFrame({"x": [1.0, math.nan], "tok": ["a", "b"]})})


@pytest.mark.parametrize("mode", ["soft", "hard"])
@pytest.mark.parametrize("cache", [True, False])
@pytest.mark.parametrize("isolate", [True, False])
def test_pruned_generation_agrees_across_backends(mode, cache, isolate) -> None:
    """Retroactive pruning (hard: the KV-cache rebuild) gives the same sequence on both."""
    hooked = tl.make_tiny_model()
    bridge = bridge_around(hf_llama_from_hooked(hooked))
    cfg = tl.TempoConfig(
        selection_threshold=0.05,
        max_steps=8,
        isolate=isolate,
        use_kv_cache=cache,
        prune=tl.PruningConfig(rule=tl.RelativeRule(ratio=0.9), mode=mode),
    )
    a, b = tl.generate(hooked, [3, 14, 15, 9], cfg), tl.generate(bridge, [3, 14, 15, 9], cfg)
    assert a.state.token_ids == b.state.token_ids
    assert a.state.pruned_at == b.state.pruned_at
    assert any(d.pruned for s in a.steps for d in s.pruning)  # pruning happened
    pa = np.array([p for s in a.steps for p in s.probabilities])
    pb = np.array([p for s in b.steps for p in s.probabilities])
    assert np.abs(pa - pb).max() < 1e-5


def test_path_patching_agrees_across_backends() -> None:
    """Visible run patched into the isolated run's receiver inputs: same logits on both."""
    from tempo_lens.hooks.interventions import path_patching

    hooked = tl.make_tiny_model(n_layers=3)
    bridge = bridge_around(hf_llama_from_hooked(hooked))
    trace = tl.generate(hooked, [3, 14, 15, 9], tl.TempoConfig(selection_threshold=0.05))
    iso = trace.to_state()
    vis = trace.to_state()
    vis.isolate = False
    out = {}
    for name, model in (("hooked", hooked), ("bridge", bridge)):
        tokens = iso.tokens_tensor()
        with torch.no_grad():
            with tl.attach(model, vis):
                _, src = model.run_with_cache(tokens)
            with tl.attach(model, iso):
                target, tgt = model.run_with_cache(tokens)
                with path_patching(model, src, tgt, senders=[(0, 1), (1, 2)], receivers=[(2, 0)]):
                    patched = model(tokens)
        assert not torch.allclose(patched, target, atol=1e-4), name  # the patch acts
        out[name] = (target, patched)
    for a, b in zip(out["hooked"], out["bridge"], strict=True):
        assert (a - b).abs().max() < 1e-4
