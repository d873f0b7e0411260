"""Experiment manifests, analysis summaries and reports record where results came from.

Issue 21 (provenance): the model's name, its weights' SHA-256 (the packaged GGUF's, for
the offline models), the backend and the TransformerLens version, as traces do.
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest

from tempo_lens import TempoConfig, make_tiny_model
from tempo_lens.analysis.run import analyze_prompt
from tempo_lens.backends import provenance
from tempo_lens.cli import main
from tempo_lens.display import render_run
from tempo_lens.runner.store import MANIFEST, check_manifest


def test_tiny_models_are_named_by_shape_and_seed() -> None:
    prov = provenance(make_tiny_model())
    assert prov["model"] == "tiny-random-llama(n_layers=2,d_model=64,n_heads=4,d_vocab=64,seed=0)"
    assert provenance(make_tiny_model(n_layers=1, seed=3))["model"].endswith(",seed=3)")
    assert prov["transformer_lens"] == importlib.metadata.version("transformer-lens")


def test_experiment_manifest_records_provenance(tmp_path: Path) -> None:
    out = tmp_path / "iso"
    argv = ["experiment", "isolation_ab", "--tiny", "--quick", "--output-dir", str(out), "-q"]
    assert main(argv) == 0
    want = [provenance(make_tiny_model())]
    have = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    assert have["provenance"] == want
    units = sorted((out / "units").glob("*.json"))
    assert units and all(
        json.loads(u.read_text(encoding="utf-8"))["provenance"] == want[0] for u in units
    )
    # a resume is the same sweep: provenance is not part of the identity compared
    assert main(argv) == 0
    assert json.loads((out / MANIFEST).read_text(encoding="utf-8"))["provenance"] == want
    check_manifest(out / MANIFEST, {k: v for k, v in have.items() if k != "provenance"})
    report = (out / "report.txt").read_text(encoding="utf-8").splitlines()
    origin = [line for line in report if line.startswith("provenance: ")]
    assert origin == [f"provenance: model {want[0]['model']} · weights SHA-256 not recorded · "
                      f"backend {want[0]['backend']} · TransformerLens "
                      f"{want[0]['transformer_lens']}"]  # fmt: skip


def test_analysis_summary_and_report_record_provenance(tmp_path: Path) -> None:
    model = make_tiny_model()
    summary = analyze_prompt(model, [3, 14, 15], TempoConfig(max_steps=3), tmp_path,
                             render=render_run)  # fmt: skip
    prov = provenance(model)
    assert summary["provenance"] == prov
    on_disk = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert on_disk["provenance"] == prov
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    line = html.split('id="provenance">', 1)[1].split("</p>", 1)[0]
    assert prov["model"] in line and f"backend {prov['backend']}" in line
    assert f"TransformerLens {prov['transformer_lens']}" in line
    assert "weights SHA-256 not recorded" in line  # a tiny random model has no GGUF


@pytest.mark.parametrize("sha", ["ab" * 32])
def test_report_names_the_weights_hash(tmp_path: Path, sha: str) -> None:
    model = make_tiny_model()
    model.tempo_lens_weights_sha256 = sha  # what load_model records for a packaged GGUF
    analyze_prompt(model, [3, 14, 15], TempoConfig(max_steps=2), tmp_path, render=render_run)
    assert f"weights SHA-256 {sha}" in (tmp_path / "report.html").read_text(encoding="utf-8")
