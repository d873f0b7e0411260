"""The partial_isolation experiment end to end on --tiny --quick."""

from __future__ import annotations

import json

import pandas as pd

from tempo_lens.experiments import available, partial_isolation


def test_partial_isolation_quick(tmp_path) -> None:
    argv = ["--tiny", "--quick", "-q", "--selection-threshold", "0.05", "--output-dir"]
    assert partial_isolation.main([*argv, str(tmp_path)]) == 0
    runs = pd.read_csv(tmp_path / "runs.csv", keep_default_na=False)
    assert set(runs["layers"]) == set(partial_isolation.LAYER_SETS)
    by_set = runs.groupby("layers")["isolated_layers"].first().to_dict()
    assert by_set == {"none": "", "early": "", "middle": "0", "late": "1", "all": "0,1"}
    layers = pd.read_csv(tmp_path / "sibling_layers.csv")
    iso = layers[layers["isolated"] & (layers["n_members"] > 0)]
    vis = layers[~layers["isolated"] & (layers["n_members"] > 0)]
    assert len(iso) and len(vis)
    assert (iso["sibling_attention"] == 0.0).all()  # isolated layers: exactly none
    assert (vis["sibling_attention"] > 0).all()  # the others: siblings are seen
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["isolation_consistent"] is True
    assert "clean_nll_vs_all" in summary["layer_sets"]["middle"]
    assert "partial_isolation" in available()
