"""The findings experiment end to end on the tiny model: files, exact checks, reproducibility,
an independent recomputation of one claim from ``per_prompt.csv``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tempo_lens.cli import main as cli_main
from tempo_lens.experiments import findings
from tempo_lens.experiments.findings_claims import COLUMNS
from tempo_lens.experiments.findings_report import FIGURES

CLAIMS = ["1", "1.vis", "1.t15", "1.raw", "1.sink", "1.set", "1.log", "1.early", "1.middle"]
CLAIMS += ["1.late", "1.last", "1.last.vis", "1.readout", "1.pos", "1.n", "2", "2.mask"]
CLAIMS += ["3", "3.ml", "3.me", "3.h", "4", "4.par", "5", "5.near", "6.pos", "6.iso", "6.width"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("findings")
    assert cli_main(["findings", "--tiny", "--quick", "-q", "--output-dir", str(out)]) == 0
    return out


def test_quick_run_writes_every_file(quick_run) -> None:
    claims = pd.read_csv(quick_run / "claims.csv", keep_default_na=False)
    assert list(claims.columns) == COLUMNS
    assert list(claims["claim"]) == CLAIMS
    assert set(claims["verdict"]) <= {"supported", "refuted", "inconclusive", "insufficient"}
    pp = pd.read_csv(quick_run / "per_prompt.csv")
    spec = findings.SPEC
    assert len(pp) == spec.quick_prompts * 8  # prompts x (2 readouts x 2 modes x 2 taus)
    assert set(zip(pp["readout"], pp["mode"], pp["tau"], strict=True)) == {
        (r, m, t) for r in ("mixture", "last") for m in ("isolated", "visible") for t in (0.1, 0.15)
    }
    # the controls (greedy text included) run in the primary condition only
    primary = (pp["readout"] == "mixture") & (pp["mode"] == "isolated") & (pp["tau"] == 0.1)
    assert pp["primary"].tolist() == primary.tolist()
    assert pp.loc[primary, "greedy_text"].notna().all()
    assert pp.loc[~primary, "greedy_text"].isna().all()
    for name in FIGURES:
        assert (quick_run / "figures" / f"{name}.png").stat().st_size > 1000
    text = (quick_run / "findings.md").read_text(encoding="utf-8")
    assert "| 6.iso |" in text and "figures/survival_curve.png" in text
    # the exact checks hold on the tiny model as on any model
    exact = claims.set_index("claim").loc[["6.pos", "6.iso", "6.width"], "verdict"]
    assert (exact == "supported").all()
    iso = pp[pp["mode"] == "isolated"]
    assert (iso.loc[iso["n_parallel_sets"] > 0, "max_sibling_attention"] == 0.0).all()
    assert pp["positions_ok"].all()


def test_claim_recomputed_independently_from_per_prompt_csv(quick_run) -> None:
    """Claim 1.raw: mean and bootstrap-t CI of the isolated tau-0.1 ``ratio`` column,
    recomputed with plain NumPy (studentized resamples, Efron & Tibshirani 1993, 12.5); its
    p-value tests no effect (ratio 1, issue 23)."""
    from scipy import stats as sps

    pp = pd.read_csv(quick_run / "per_prompt.csv")
    sel = (pp["readout"] == "mixture") & (pp["mode"] == "isolated") & np.isclose(pp["tau"], 0.1)
    x = pp[sel]["ratio"].to_numpy(float)
    x = x[np.isfinite(x)]
    assert len(x) >= 2
    rng = np.random.default_rng(0)
    xb = x[rng.integers(0, len(x), size=(10_000, len(x)))]
    m, se = x.mean(), x.std(ddof=1) / np.sqrt(len(x))
    diff = xb.mean(1) - m
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(diff == 0, 0.0, diff / (xb.std(1, ddof=1) / np.sqrt(len(x))))
    q_lo, q_hi = np.quantile(t, [0.025, 0.975], method="inverted_cdf")
    row = pd.read_csv(quick_run / "claims.csv").set_index("claim").loc["1.raw"]
    assert row["estimate"] == pytest.approx(x.mean(), rel=1e-12)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((m - q_hi * se, m - q_lo * se))
    assert row["n_prompts"] == len(x)
    want_p = sps.wilcoxon(x - 1.0).pvalue if np.any(x != 1.0) else np.nan
    assert row["p_value"] == pytest.approx(want_p, rel=1e-12, nan_ok=True)


def test_rerun_reproduces_claims_exactly_and_resumes(quick_run, tmp_path) -> None:
    argv = ["--tiny", "--quick", "-q", "--output-dir", str(tmp_path)]
    assert findings.main(argv) == 0  # a fresh run, every unit recomputed
    first = (quick_run / "claims.csv").read_bytes()
    assert (tmp_path / "claims.csv").read_bytes() == first
    pp = (tmp_path / "per_prompt.csv").read_bytes()
    assert pp == (quick_run / "per_prompt.csv").read_bytes()
    assert cli_main(["experiment", "findings", *argv]) == 0  # resumes: nothing re-run
    assert (tmp_path / "claims.csv").read_bytes() == first


def test_summarize_only_rewrites_the_same_files_from_the_units(quick_run, tmp_path) -> None:
    """``--summarize-only`` runs nothing and rebuilds claims/per_prompt/findings.md from the
    unit files and the manifest (config with tuple fields such as ``taus`` included)."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(quick_run / "units", copy / "units")
    shutil.copy(quick_run / "manifest.json", copy / "manifest.json")
    units = {p.name: p.read_bytes() for p in (copy / "units").iterdir()}
    assert cli_main(["findings", "--summarize-only", "-q", "--output-dir", str(copy)]) == 0
    for name in ("claims.csv", "per_prompt.csv", "layers.csv", "findings.md", "report.txt"):
        assert (copy / name).read_bytes() == (quick_run / name).read_bytes(), name
    assert {p.name: p.read_bytes() for p in (copy / "units").iterdir()} == units


def _close(a, b) -> bool:
    """Equal, floats within 1e-5 (batched forwards round differently, ~1e-7)."""
    if isinstance(a, float) and isinstance(b, float):
        return (np.isnan(a) and np.isnan(b)) or b == pytest.approx(a, rel=1e-5, abs=1e-5)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_batched_units_equal_single_units() -> None:
    """``run_batch`` (generations of a condition in one ``generate_batch``) gives each unit
    the tables ``run_unit`` gives it alone: same tokens and decisions, floats within 1e-5."""
    import tempo_lens as tl
    from tempo_lens.prompts import prompts_from_texts

    spec = findings.SPEC
    cfg = findings.Config(tiny=True, max_steps=6, window=2, taus=(0.05, 0.1))
    model = tl.make_tiny_model()  # the spec's init_scale=1.0 model amplifies rounding to 1e-4
    units = spec.units(cfg, prompts_from_texts(spec.tiny_prompts[:3]))
    batched = findings.run_batch(cfg, model, units)
    assert sum(len(t["members"]) for t in batched) > 0  # parallel sets were measured
    assert [t["per_prompt"][0]["batch_rows"] for t in batched] == [3] * len(units)
    for unit, got in zip(units, batched, strict=True):
        alone = findings.run_unit(cfg, model, unit)
        assert alone["per_prompt"][0]["batch_rows"] == 1
        alone["per_prompt"][0]["batch_rows"] = 3
        assert got["per_prompt"][0]["clean_text"] == alone["per_prompt"][0]["clean_text"]
        assert _close(got, alone), unit.key


def test_bad_values_are_one_line_errors(tmp_path, capsys) -> None:
    out = tmp_path / "bad"
    assert cli_main(["findings", "--tiny", "--window", "0", "--output-dir", str(out)]) == 2
    assert "window" in capsys.readouterr().err
    assert not out.exists()


# ------------------------------------------------------------------------------- issue 23
def test_heldout_support_equals_direct_scoring() -> None:
    """``heldout_loglik`` of a member = the plain model's log p(c_4..c_6 | prefix, member,
    c_1..c_3), recomputed here by one plain forward per member (``token_nll``)."""
    import tempo_lens as tl
    from tempo_lens.analysis.quality import token_nll
    from tempo_lens.analysis.replay import heldout_support
    from tempo_lens.prompts import prompts_from_texts

    spec = findings.SPEC
    cfg = findings.Config(tiny=True, max_steps=12, window=3, taus=(0.05,), readouts=("mixture",))
    model = tl.make_tiny_model(**spec.tiny_model)
    units = [
        u
        for u in spec.units(cfg, prompts_from_texts(spec.tiny_prompts))
        if u.condition["mode"] == "isolated"
    ]
    checked = 0
    for trace, data, _ in findings._generate(cfg, model, units):
        members = heldout_support(model, trace, data, window=cfg.window)
        st, clean = trace.state, trace.clean_ids()
        prompt = st.token_ids[: st.prompt_length]
        for _, m in members.dropna(subset=["heldout_loglik"]).iterrows():
            s = int(m["set_step"])
            ids = prompt + clean[:s] + [st.token_ids[int(m["index"])]] + clean[s + 1 : s + 7]
            want = -float(token_nll(model, ids, start=len(ids) - 3).sum())
            assert m["heldout_loglik"] == pytest.approx(want, rel=1e-5, abs=1e-5)
            checked += 1
        held = members.dropna(subset=["heldout_loglik"])
        for _, g in held.groupby("set_step"):
            assert g["heldout_supported"].sum() == 1
            assert bool(g.loc[g["heldout_loglik"].idxmax(), "heldout_supported"])
    assert checked >= 4


def test_directory_of_record_rebuilds_claims_byte_for_byte(quick_run, tmp_path) -> None:
    """write_record -> gzip tables + manifest; --summarize-only there (no units) rebuilds
    claims.csv and findings.md byte for byte, and the claims equal the run's own."""
    import gzip
    import json
    import shutil

    from tempo_lens.experiments.findings_record import write_record

    rec = write_record(quick_run, tmp_path / "rec", wall_seconds=1.5, load="test")
    man = json.loads((rec / "manifest.json").read_text(encoding="utf-8"))
    assert man["record"]["wall_seconds"] == 1.5 and man["record"]["tempo_lens"]
    assert man["provenance"] and man["config"]["readouts"] == ["mixture", "last"]
    assert (rec / "claims.csv").read_bytes() == (quick_run / "claims.csv").read_bytes()
    heads = pd.read_csv(rec / "heads.csv.gz")
    assert set(zip(heads["readout"], heads["mode"], heads["tau"], strict=True)) == {
        ("mixture", "isolated", 0.1)
    }
    with gzip.open(rec / "per_prompt.csv.gz") as f:
        assert len(pd.read_csv(f)) == len(pd.read_csv(quick_run / "per_prompt.csv"))
    copy = tmp_path / "copy"
    shutil.copytree(rec, copy)
    (copy / "claims.csv").unlink()
    assert cli_main(["findings", "--summarize-only", "-q", "--output-dir", str(copy)]) == 0
    for name in ("claims.csv", "findings.md"):
        assert (copy / name).read_bytes() == (rec / name).read_bytes(), name
    # the tables are written byte-reproducibly (gzip without a timestamp)
    again = write_record(quick_run, tmp_path / "again", wall_seconds=1.5, load="test")
    for name in ("per_prompt", "heads", "members", "layers", "sizes"):
        assert (again / f"{name}.csv.gz").read_bytes() == (rec / f"{name}.csv.gz").read_bytes()


def test_judge_scores_every_unit_and_feeds_the_degeneration_rule(tmp_path) -> None:
    """findings-judge on a run's per-prompt table (a tiny judge with a real tokenizer): one
    row per unit, NLLs equal to a direct forward's; the pre-registered rule marks a unit 2
    nats above its prompt's greedy text degenerate, 0.5 nats not, and a looping one."""
    import torch

    from tempo_lens.experiments.findings_judge import degenerate, judge_run
    from tempo_lens.models import make_tiny_model
    from tests.tokenizer_fixtures import metaspace_tokenizer, with_tokenizer

    judge = with_tokenizer(make_tiny_model(d_vocab=7), metaspace_tokenizer())
    rows = []
    for i, (clean, greedy) in enumerate(
        [("cat sat on", "cat sat"), ("mat mat mat", None), ("on The cat", "sat on mat")]
    ):
        for mode in ("isolated", "visible"):
            rows.append(
                {
                    "prompt_id": f"p{i}",
                    "prompt": "The cat",
                    "readout": "mixture",
                    "mode": mode,
                    "tau": 0.1,
                    # the whole clean text, prompt first (Trace.clean_text): the judge
                    # scores only the part after the prompt
                    "clean_text": "The cat " + clean,
                    "greedy_text": "The cat " + greedy if greedy and mode == "isolated" else "",
                }
            )
    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame(rows).to_csv(run / "per_prompt.csv", index=False)
    j = pd.read_csv(judge_run(run, judge, "tiny", progress=False))
    assert len(j) == len(rows) and set(j["judge"]) == {"tiny"}
    head = judge.to_tokens("The cat")[0].tolist()
    tail = judge.tokenizer.encode(" cat sat on", add_special_tokens=False)
    assert len(tail) == 3
    with torch.no_grad():
        logp = torch.log_softmax(judge(torch.tensor([head + tail]))[0].double(), -1)
    want = -np.mean([float(logp[len(head) - 1 + k, t]) for k, t in enumerate(tail)])
    assert j.iloc[0]["judge_nll"] == pytest.approx(want, rel=1e-6)
    assert j.iloc[0]["judge_tokens"] == 3
    # a prompt whose greedy text is missing has no greedy NLL (and is judged looping-only)
    assert j.loc[j["prompt_id"] == "p1", "greedy_judge_nll"].isna().all()
    assert np.isfinite(j.loc[j["prompt_id"] != "p1", "greedy_judge_nll"]).all()
    pp = pd.DataFrame(rows).assign(distinct_2=1.0, repetition=0.0)
    worse = j.copy()
    worse["greedy_judge_nll"] = 3.0
    worse["judge_nll"] = 3.0 + np.where(np.arange(len(j)) % 2 == 0, 2.0, 0.5)
    assert degenerate(pp, worse).tolist() == [k % 2 == 0 for k in range(len(pp))]
    pp.loc[3, "distinct_2"] = 0.4  # looping
    assert degenerate(pp, worse).iloc[3]
    assert not degenerate(pp, None).iloc[0] and degenerate(pp, None).iloc[3]
    missing = tmp_path / "none"
    assert cli_main(["findings-judge", "--output-dir", str(missing), "--judge-model", "x"]) == 2
