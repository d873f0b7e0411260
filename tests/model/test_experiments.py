"""The four research-question scripts end to end on --tiny, and tempo_lens.analysis.quality."""

from __future__ import annotations

import dataclasses
import json
import math

import pandas as pd
import pytest
import torch

import tempo_lens as tl
from experiments import isolation_ab, position_sharing, pruning_layers, threshold_sweep
from tempo_lens import experiment_cli
from tempo_lens.analysis.quality import clean_text_nll, distinct_n, token_nll, trace_diversity
from tempo_lens.options import field_docs
from tempo_lens.runner import ExperimentSpec
from tempo_lens.runner_cli import build_parser

SCRIPTS = [position_sharing, isolation_ab, pruning_layers, threshold_sweep]
GEN = ["--tiny", "--selection-threshold", "0.05", "--max-steps", "4", "-q"]


def _read(out, name: str) -> pd.DataFrame:
    return pd.read_csv(out / name)


# ---------------------------------------------------------------------- scripts
def test_position_sharing_writes_tidy_table(tmp_path) -> None:
    out = tmp_path / "ps"
    argv = ["--tiny", "--n-values", "1,2,3", "--deltas", "0.01,1", "--continuation", "2", "-q"]
    assert position_sharing.main([*argv, "--output-dir", str(out)]) == 0
    df = _read(out, "attention.csv")
    assert set(df["scheme"]) == {"shared", "offset", "distinct"}
    # 3 tiny prompts x 3 n x (shared, 2 offsets, distinct) x 2 layers
    assert len(df) == 3 * 3 * 4 * 2
    n = df["n"].to_numpy()
    assert (df["attention_per_member"] * n - df["attention_set_total"]).abs().max() < 1e-9
    assert df["attention_set_total"].between(0, 1).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n1_max_scheme_difference"] < 1e-6  # n = 1: every scheme is the same
    assert {r["scheme"] for r in summary["n_effect"]} == {"shared", "offset", "distinct"}


def test_isolation_ab_compares_modes(tmp_path) -> None:
    out = tmp_path / "iso"
    assert isolation_ab.main([*GEN, "--output-dir", str(out)]) == 0
    runs = _read(out, "runs.csv")
    assert sorted(runs["mode"].unique()) == ["isolated", "visible"]
    iso, vis = runs[runs["mode"] == "isolated"], runs[runs["mode"] == "visible"]
    assert (iso["max_sibling_attention"].dropna() == 0).all()
    assert (vis["max_sibling_attention"].dropna() > 0).any()
    assert runs["clean_nll"].notna().all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["isolation_consistent"] is True
    assert set(summary["comparisons"]) == set(isolation_ab.COMPARED)
    assert (out / "sibling_layers.csv").is_file()


def test_pruning_layers_counterfactual_reproduces_all(tmp_path) -> None:
    out = tmp_path / "pl"
    argv = [*GEN, "--max-steps", "5", "--lookaheads", "1,2", "--layer-groups", "all,early,late"]
    argv += ["--prompt", "3 14 15 9 26"]
    assert pruning_layers.main([*argv, "--output-dir", str(out)]) == 0
    runs = _read(out, "runs.csv")
    assert len(runs) == 1 * 2 * 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reproduced"] is True  # re-scoring with 'all' gives the recorded verdicts
    agreement = _read(out, "agreement.csv")
    assert len(agreement) and set(agreement["layers"]) == {"all", "early", "late"}
    survival = _read(out, "survival.csv")
    assert {"received", "probability", "pruned", "score"} <= set(survival.columns)


def test_threshold_sweep_grid(tmp_path) -> None:
    out = tmp_path / "ts"
    argv = ["--tiny", "--max-steps", "4", "-q", "--thresholds", "0.05,0.2"]
    argv += ["--schedules", "constant,linear,bezier", "--prompt", "3 14 15", "--prompt", "2 7"]
    assert threshold_sweep.main([*argv, "--output-dir", str(out)]) == 0
    runs = _read(out, "runs.csv")
    assert len(runs) == 2 * (1 + 2 * 3)  # prompts x (greedy + thresholds x schedules)
    const = runs[runs["schedule"] == "constant"]
    assert (const["tau_first"] == const["threshold"]).all()
    assert (runs[runs["schedule"] == "greedy"]["max_width"] == 1).all()
    lin = runs[(runs["schedule"] == "linear") & (runs["threshold"] == 0.05)]
    assert (lin["tau_last"] > 0.05).all()  # the schedule moved toward final_threshold
    summary = json.loads((out / "summary.json").read_text())
    assert "mean_width" in summary["constant_trends"]


BAD = [
    (position_sharing, ["--n-values", "0"]),
    (position_sharing, ["--deltas", "-0.1"]),
    (position_sharing, ["--n-values", "x"]),
    (isolation_ab, ["--selection-threshold", "0"]),
    (isolation_ab, ["--readout", "first"]),
    (isolation_ab, ["--prune", "relative:2"]),
    (pruning_layers, ["--lookaheads", "0"]),
    (pruning_layers, ["--layer-groups", "all,deep"]),
    (threshold_sweep, ["--schedules", "cubic"]),
    (threshold_sweep, ["--final-threshold", "1.5"]),
    (threshold_sweep, ["--prompt", "not ids"]),
    (threshold_sweep, ["--prompts-file", "missing.txt"]),
]


@pytest.mark.parametrize(("script", "bad"), BAD, ids=[f"{s.__name__[12:]}{b}" for s, b in BAD])
def test_bad_values_exit_2_without_writing(script, bad, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert script.main(["--tiny", *bad, "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error:" in err[0]
    assert not out.exists()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: s.__name__)
def test_help_comes_from_the_config_docs(script) -> None:
    if isinstance(script.SPEC, ExperimentSpec):  # on the runner
        text = " ".join(build_parser(script.SPEC).format_help().split())
        docs = field_docs(script.Config)
        assert set(docs) == {f.name for f in dataclasses.fields(script.Config)}
        for doc in docs.values():
            assert " ".join(doc.split()[:4]) in text
        return
    text = " ".join(experiment_cli.build_parser(script.SPEC).format_help().split())
    docs = experiment_cli.field_docs(script.Config)
    assert set(docs) == {f.name for f in dataclasses.fields(script.Config)}
    for doc in docs.values():
        assert " ".join(doc.split()[:4]) in text


# ---------------------------------------------------------------------- quality
@pytest.fixture(scope="module")
def model():
    return tl.make_tiny_model()


def test_distinct_n_known_values() -> None:
    assert distinct_n([1, 2, 1, 2], 1) == 0.5
    assert distinct_n([1, 2, 1, 2], 2) == pytest.approx(2 / 3)
    assert distinct_n([1, 2, 3], 3) == 1.0
    assert math.isnan(distinct_n([1], 2))
    with pytest.raises(ValueError):
        distinct_n([1, 2], 0)


def test_clean_nll_matches_selection_probabilities(model) -> None:
    # tau = 1: one member per step, so each step's probability (recorded by the TEMPO loop
    # through its KV cache and hooks) is the plain model's p(token | clean prefix).
    trace = tl.generate(model, [3, 14, 15, 9], tl.TempoConfig(selection_threshold=1.0, max_steps=6))
    q = clean_text_nll(model, trace)
    expected = [-math.log(t.probability) for t in trace.tokens if t.step >= 0]
    assert q.n_tokens == 6
    assert q.per_token == pytest.approx(expected, abs=1e-5)
    assert q.mean_nll == pytest.approx(sum(expected) / 6, abs=1e-5)
    assert q.perplexity == pytest.approx(math.exp(q.mean_nll))


def test_clean_nll_scores_only_the_clean_path(model) -> None:
    cfg = tl.TempoConfig(selection_threshold=0.05, max_steps=5)
    trace = tl.generate(model, [1, 2, 3], cfg)
    assert max(trace.widths()) > 1  # parallel sets exist, yet only the clean path counts
    ids = [1, 2, 3, *trace.clean_ids()]
    expected = []
    with torch.no_grad():
        for t in range(3, len(ids)):  # one prefix forward per token: an independent path
            logits = model(torch.tensor([ids[:t]]))[0, -1].double()
            expected.append(-torch.log_softmax(logits, -1)[ids[t]].item())
    assert clean_text_nll(model, trace).per_token == pytest.approx(expected, abs=1e-5)
    div = trace_diversity(trace)
    assert div["generated_tokens"] == sum(trace.widths())
    assert div["distinct_generated"] == len({t.token_id for t in trace.tokens if t.step >= 0})


def test_token_nll_edges(model) -> None:
    assert token_nll(model, [1, 2, 3], start=3).numel() == 0
    with pytest.raises(ValueError):
        token_nll(model, [1, 2, 3], start=0)
    with pytest.raises(ValueError):
        token_nll(model, [1, 2], start=5)
