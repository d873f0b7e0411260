"""The intervention experiments end to end on --tiny, and their exactness checks."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import tempo_lens as tl
from tempo_lens.experiments import head_ablation, isolation_patching, layer_intervention
from tempo_lens.experiments.isolation_patching import recovery_metric

ARGS = ["--tiny", "--quick", "-q", "--selection-threshold", "0.05"]


def test_head_ablation_covers_every_head(tmp_path) -> None:
    assert head_ablation.main([*ARGS, "--output-dir", str(tmp_path)]) == 0
    heads = pd.read_csv(tmp_path / "heads.csv")
    model = tl.make_tiny_model()
    per_unit = heads.groupby(["prompt_id", "ablation"]).size()
    assert (per_unit == model.cfg.n_layers * model.cfg.n_heads).all()
    assert set(heads["ablation"]) == {"zero", "mean"}
    assert (heads["kl_parallel"].dropna() >= 0).all()
    crit = pd.read_csv(tmp_path / "critical_heads.csv")
    assert {"kl_difference", "ci_low", "ci_high", "direction", "p_bh", "critical"} <= set(
        crit.columns
    )
    few = crit["n_prompts"] < 10  # below the default --min-prompts: shown, never critical
    assert (crit.loc[few, "direction"] == "insufficient").all()
    assert not crit.loc[few, "critical"].any()
    assert (tmp_path / "head_ablation.png").stat().st_size > 0


def test_layer_intervention_grid(tmp_path) -> None:
    assert layer_intervention.main([*ARGS, "--output-dir", str(tmp_path)]) == 0
    rows = pd.read_csv(tmp_path / "layers.csv")
    assert sorted(set(rows["beta"])) == [-2.0, 2.0]
    assert set(rows["layer"]) == {0, 1}
    assert (rows["kl_parallel"].dropna() > 0).any()
    assert (tmp_path / "layer_effects.csv").is_file()


def test_layer_intervention_rejects_zero_beta(tmp_path, capsys) -> None:
    assert layer_intervention.main(["--tiny", "--betas", "0,1", "--output-dir", str(tmp_path)]) == 2
    assert "betas" in capsys.readouterr().err


def test_isolation_patching_runs(tmp_path) -> None:
    assert isolation_patching.main([*ARGS, "--output-dir", str(tmp_path)]) == 0
    rows = pd.read_csv(tmp_path / "patching.csv")
    assert set(rows["kind"]) == {"resid_pre", "z"}
    assert (
        rows[(rows["kind"] == "resid_pre") & (rows["layer"] == 0)]["recovery"].abs() < 1e-9
    ).all()


def test_patching_every_head_recovers_the_visible_run_exactly() -> None:
    model = tl.make_tiny_model()
    trace = tl.generate(model, [3, 14, 15, 9], selection_threshold=0.05, max_steps=4)
    iso = trace.to_state()
    sets = [[iso.token_ids[i] for i in s] for s in iso.set_indices]
    vis = tl.SequenceState.from_sets(iso.token_ids[: iso.prompt_length], sets, isolate=False)
    probs = [[trace.tokens[i].probability for i in s] for s in iso.set_indices]
    toks = iso.tokens_tensor()
    with torch.no_grad():
        with tl.attach(model, vis):
            vis_logits, cache = model.run_with_cache(toks)
        with tl.attach(model, iso):
            iso_logits = model(toks)
            metric = recovery_metric(vis_logits, iso_logits, iso, probs, "mixture")
            hooks = [
                (f"blocks.{la}.attn.hook_z", lambda z, hook: cache[hook.name])
                for la in range(model.cfg.n_layers)
            ]
            patched = model.run_with_hooks(toks, fwd_hooks=hooks)
    assert (iso_logits - vis_logits).abs().max() > 1e-3  # isolation matters here
    assert torch.equal(patched, vis_logits)
    assert float(metric(patched)) == 1.0
    assert float(metric(iso_logits)) == 0.0


@pytest.mark.parametrize("script", [head_ablation, layer_intervention, isolation_patching])
def test_rerun_resumes(script, tmp_path) -> None:
    out = str(tmp_path)
    assert script.main([*ARGS, "--output-dir", out]) == 0
    first = {p.name: p.read_bytes() for p in tmp_path.glob("*.csv")}
    assert script.main([*ARGS, "--output-dir", out]) == 0
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.csv")} == first
