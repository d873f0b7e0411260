"""Committed result tables recompute the numbers the docs quote (no model needed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from tempo_lens.experiments import pruning_layers

ROOT = Path(__file__).resolve().parents[2]
PRUNING = ROOT / "docs" / "results" / "pruning_modes"


def test_pruning_modes_hard_vs_soft_recomputes_from_the_per_prompt_table() -> None:
    """summary.json's hard - soft estimates and the figures in docs/experiments.md come
    from runs.csv (the per-prompt table) with the manifest's config."""
    manifest = json.loads((PRUNING / "manifest.json").read_text(encoding="utf-8"))
    conf = {k: tuple(v) if isinstance(v, list) else v for k, v in manifest["config"].items()}
    cfg = pruning_layers.Config(**conf)
    runs = pd.read_csv(PRUNING / "runs.csv")
    got = pruning_layers._hard_vs_soft(cfg, runs)
    want = json.loads((PRUNING / "summary.json").read_text(encoding="utf-8"))["hard_vs_soft"]
    assert got.keys() == want.keys() and len(got) == 8
    for key, w in want.items():
        g = got[key]
        assert g["n"] == w["n"] == 12 and g["direction"] == w["direction"], key
        assert g["mean"] == pytest.approx(w["mean"], abs=1e-12), key
        assert g["ci"] == pytest.approx(w["ci"], abs=1e-12), key
    doc = (ROOT / "docs" / "experiments.md").read_text(encoding="utf-8")
    text = doc.split("**Result after the hard-pruning fix**", 1)[1].split("###", 1)[0]

    def quoted(key: str) -> str:
        e = got[key]
        f = "{:+.2f}" if abs(e["mean"]) >= 0.05 else "{:+.3f}"
        mean = f.format(e["mean"]).replace("-", "−")
        return mean.lstrip("+")

    for key in got:
        if not key.endswith("n_pruned"):  # the doc quotes the other three metrics
            assert quoted(key) in text, (key, quoted(key))
    pairs = runs.pivot_table(index=["prompt_id", "lookahead"], columns="mode",
                             values="clean_text", aggfunc="first")  # fmt: skip
    same = int((pairs["soft"] == pairs["hard"]).sum())
    assert re.search(rf"\b{same} of {len(pairs)}\b", text)
    assert all(g["direction"] == "inconclusive" for g in got.values())  # "no CI excludes 0"


# ------------------------------------------------------------------ findings (issue 23)
FINDINGS = ROOT / "docs" / "results" / "findings"
FAMILIES = {"SmolLM2-135M-Instruct": FINDINGS / "smollm2", "Gemma 3 270M": FINDINGS / "gemma3"}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_findings_record_rebuilds_claims_and_report_byte_for_byte(name: str, tmp_path) -> None:
    """Each family's committed tables (gzip CSV) give its committed claims.csv and
    findings.md again, byte for byte, through the command's own --summarize-only."""
    import shutil

    from tempo_lens.cli import main as cli_main

    src = FAMILIES[name]
    copy = tmp_path / "record"
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("figures", "claims.csv", "*.md"))
    assert cli_main(["findings", "--summarize-only", "-q", "--output-dir", str(copy)]) == 0
    for f in ("claims.csv", "findings.md"):
        assert (copy / f).read_bytes() == (src / f).read_bytes(), (name, f)
    man = json.loads((src / "manifest.json").read_text(encoding="utf-8"))
    assert man["record"]["wall_seconds"] > 0 and man["record"]["run_commit"]
    assert all(p["weights_sha256"] for p in man["provenance"])
    claims = pd.read_csv(src / "claims.csv", dtype={"claim": str}).set_index("claim")
    assert claims.loc["1", "n_prompts"] >= 48


def test_findings_doc_families_table_is_rebuilt_from_the_committed_claims() -> None:
    """docs/findings.md's side-by-side table is what findings-families makes of the two
    committed claims.csv files (the combined verdicts included)."""
    from tempo_lens.experiments.findings_families import (
        END,
        START,
        families_markdown,
        families_table,
    )

    doc = (ROOT / "docs" / "findings.md").read_text(encoding="utf-8")
    block = doc.split(START, 1)[1].split(END, 1)[0].strip()
    assert block == families_markdown(families_table(FAMILIES))


@pytest.mark.parametrize("damage", ["missing", "edited", "truncated"])
def test_findings_record_refuses_a_damaged_table_before_writing(damage: str, tmp_path) -> None:
    """A record whose manifest lists a table that is missing, edited or truncated is not
    summarized: one error naming the file, and claims.csv / findings.md untouched."""
    import shutil

    from tempo_lens.experiments import findings
    from tempo_lens.runner import summarize_only

    copy = tmp_path / "record"
    shutil.copytree(
        FAMILIES["SmolLM2-135M-Instruct"], copy, ignore=shutil.ignore_patterns("figures")
    )
    table = copy / "members.csv.gz"
    if damage == "missing":
        table.unlink()
    elif damage == "edited":
        import gzip

        text = gzip.decompress(table.read_bytes()).replace(b"mixture", b"mixturE", 1)
        table.write_bytes(gzip.compress(text, mtime=0))
    else:
        table.write_bytes(table.read_bytes()[:100])
    before = {f: (copy / f).read_bytes() for f in ("claims.csv", "findings.md")}
    with pytest.raises(ValueError, match="members.csv.gz"):
        summarize_only(findings.SPEC, copy)
    assert {f: (copy / f).read_bytes() for f in before} == before


# ------------------------------------------------------------------ tree_comparison (issue 25)
TREES = ROOT / "docs" / "results" / "tree_comparison"


@pytest.mark.parametrize(
    ("folder", "marker"),
    [(TREES, "**Result on the default model**"), (TREES / "gemma3", "**Result on Gemma 3 270M**")],
)
def test_tree_comparison_summary_recomputes_from_the_per_prompt_table(folder, marker) -> None:
    """summary.json's estimates, CIs and verdicts come from per_prompt.csv with the
    manifest's config, and docs/experiments.md quotes them."""
    from tempo_lens.experiments import tree_comparison

    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    cfg = tree_comparison.Config(**manifest["config"])
    table = pd.read_csv(folder / "per_prompt.csv")
    got = tree_comparison.summary_of(cfg, table)
    want = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    assert got["n_prompts"] == want["n_prompts"] == len(table) >= 48
    assert got["spec_exact"] == want["spec_exact"] == len(table)
    for m in tree_comparison.PRIMARY:
        g, w = got["primary"][m], want["primary"][m]
        assert g["verdict"] == w["verdict"] and g["n"] == w["n"], m
        assert g["mean"] == pytest.approx(w["mean"], abs=1e-12), m
        assert g["ci"] == pytest.approx(w["ci"], abs=1e-12), m
    doc = (ROOT / "docs" / "experiments.md").read_text(encoding="utf-8")
    text = doc.split(marker, 1)[1].split("**Result on", 1)[0].split("###", 1)[0]
    for m in tree_comparison.PRIMARY:
        p = got["primary"][m]
        assert f"`{m}`" in text and p["verdict"] in text, m
        cell = f"{p['mean']:.3g} [{p['ci'][0]:.3g}, {p['ci'][1]:.3g}]"
        assert cell in text, (m, cell)
