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
