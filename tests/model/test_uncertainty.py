"""Uncertainty analysis and experiment, and the debugging helpers, on the tiny model.

Each quantity is checked against an independent computation: scipy for entropies, JSD,
cosine and Spearman, a plain forward without TEMPO hooks for probabilities and NLLs.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.spatial.distance import cosine, jensenshannon
from scipy.stats import entropy as sp_entropy
from scipy.stats import spearmanr

import tempo_lens as tl
from tempo_lens.analysis.paths import replay_alternatives
from tempo_lens.analysis.steps import poorest_step, step_alternatives
from tempo_lens.analysis.uncertainty import step_uncertainty
from tempo_lens.experiments import uncertainty

PROMPT = [3, 14, 15, 9]


@pytest.fixture(scope="module")
def model():
    return tl.make_tiny_model()


@pytest.fixture(scope="module")
def trace(model):
    return tl.generate(model, PROMPT, selection_threshold=0.05, max_steps=5)


def test_step_rows_match_generation_and_plain_forward(model, trace) -> None:
    u = step_uncertainty(model, trace)
    assert u.steps["width"].tolist() == trace.widths()
    assert any(w > 1 for w in trace.widths())
    top = [rec.probabilities[0] for rec in trace.steps]
    assert u.steps["top_probability"].tolist() == pytest.approx(top, rel=1e-5, abs=1e-6)
    with torch.no_grad():  # step 0: the plain model's next-token distribution
        p0 = torch.softmax(model(torch.tensor([PROMPT]))[0, -1].double(), -1).numpy()
    assert u.steps["next_entropy"][0] == pytest.approx(sp_entropy(p0), rel=1e-5)


def test_attention_entropy_of_readout_queries(model, trace) -> None:
    u = step_uncertainty(model, trace)
    st = trace.state
    with torch.no_grad(), tl.attach(model, st):
        _, cache = model.run_with_cache(st.tokens_tensor())
    s, layer, head = 2, 1, 3
    q = st.set_indices[s - 1]  # readout queries of step 2: the members of set 1
    rows = cache[f"blocks.{layer}.attn.hook_pattern"][0, head, q].double().numpy()
    want = np.mean([sp_entropy(r[r > 0]) for r in rows])
    assert u.head_entropy[s, layer, head] == pytest.approx(want, rel=1e-5)
    n_keys = [int((r > 0).sum()) for r in rows]  # every visible key gets some mass
    want_norm = np.mean(
        [sp_entropy(r[r > 0]) / math.log(n) for r, n in zip(rows, n_keys, strict=True)]
    )
    assert u.head_entropy_norm[s, layer, head] == pytest.approx(want_norm, rel=1e-5)
    assert np.nanmax(u.head_entropy_norm) <= 1 + 1e-9


def test_sibling_pairs_against_scipy(model, trace) -> None:
    u = step_uncertainty(model, trace)
    assert len(u.pairs) > 0
    st = trace.state
    with torch.no_grad(), tl.attach(model, st):
        _, cache = model.run_with_cache(st.tokens_tensor())
    pat = torch.stack([cache[f"blocks.{la}.attn.hook_pattern"][0] for la in range(2)])
    mean = pat.double().mean((0, 1)).numpy()  # query key, mean over layers and heads
    for r in u.pairs.itertuples():
        start = st.set_indices[r.step][0]
        want = jensenshannon(mean[r.a, :start], mean[r.b, :start], base=2) ** 2
        assert r.jsd_bits == pytest.approx(want, rel=1e-4, abs=1e-7)
        w_e = model.W_E.detach().double().numpy()
        cos = 1 - cosine(w_e[st.token_ids[r.a]], w_e[st.token_ids[r.b]])
        assert r.cos_similarity == pytest.approx(cos, rel=1e-6, abs=1e-9)
    members = {i for s in st.set_indices if len(s) > 1 for i in s}
    assert set(u.top_keys["member"]) == members


def test_step_uncertainty_refuses_pruned_traces(model) -> None:
    pruned = tl.generate(
        model,
        PROMPT,
        selection_threshold=0.05,
        max_steps=5,
        prune=tl.PruningConfig(rule=tl.RelativeRule(ratio=0.9)),
    )
    assert any(p is not None for p in pruned.state.pruned_at)
    with pytest.raises(ValueError, match="without pruning"):
        step_uncertainty(model, pruned)


def test_uncertainty_experiment_correlations_are_spearman(tmp_path) -> None:
    args = ["--tiny", "--quick", "-q", "--selection-threshold", "0.05"]
    assert uncertainty.main([*args, "--output-dir", str(tmp_path)]) == 0
    steps = pd.read_csv(tmp_path / "steps.csv")
    corr = pd.read_csv(tmp_path / "correlations.csv")
    n_rows = 1 + 2 + 2 * 4  # model, layers, heads of the tiny model
    assert (corr.groupby(["prompt_id", "measure"]).size() == n_rows).all()
    for pid, g in steps.groupby("prompt_id"):
        row = corr[(corr["prompt_id"] == pid) & (corr["layer"] == -1)]
        rho = row.set_index("measure")["rho"]
        want = spearmanr(g["next_entropy"], g["attention_entropy_norm"]).statistic
        assert rho["next_entropy"] == pytest.approx(want, abs=1e-9)
    pairs = pd.read_csv(tmp_path / "pairs.csv")
    sib = pd.read_csv(tmp_path / "sibling_correlation.csv")
    for r in sib.itertuples():
        g = pairs[pairs["prompt_id"] == r.prompt_id]
        assert r.rho == pytest.approx(spearmanr(g["cos_similarity"], g["jsd_bits"]).statistic)
    summ = pd.read_csv(tmp_path / "correlations_summary.csv")
    assert {"rho", "ci_low", "ci_high", "p_bh", "significant"} <= set(summ.columns)
    assert (tmp_path / "uncertainty.png").stat().st_size > 0
    assert "similar alternatives attend to similar context" in (tmp_path / "report.txt").read_text()


def test_uncertainty_rejects_bad_top_k(tmp_path, capsys) -> None:
    assert uncertainty.main(["--tiny", "--top-k", "0", "--output-dir", str(tmp_path)]) == 2
    assert "top_k" in capsys.readouterr().err


def test_poorest_step_and_alternatives(model, trace) -> None:
    top = [max(c.probability for c in rec.candidates) for rec in trace.steps]
    s = poorest_step(trace)
    assert top[s] == min(top)
    multi = [k for k, rec in enumerate(trace.steps) if len(rec.candidates) >= 2]
    assert poorest_step(trace, min_candidates=2) == min(multi, key=lambda k: top[k])
    with pytest.raises(ValueError, match="100 or more"):
        poorest_step(trace, min_candidates=100)
    alts = step_alternatives(trace, s)
    rec = trace.steps[s]
    assert alts["token_id"].tolist() == [c.token_id for c in rec.candidates]
    appended = alts[alts["appended"]]
    assert [trace.state.token_ids[i] for i in appended["index"]] == appended["token_id"].tolist()
    assert alts["clean"].sum() == 1
    with pytest.raises(ValueError, match="outside"):
        step_alternatives(trace, 99)


def test_replay_alternatives_against_a_plain_forward(model, trace) -> None:
    s = max(range(len(trace.steps)), key=lambda k: len(trace.steps[k].candidates))
    alts = replay_alternatives(model, trace, s, horizon=2)
    prefix = PROMPT + trace.clean_ids()[:s]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([prefix]))[0, -1].double(), -1)
    want = [-float(logp[t]) for t in alts["token_id"]]
    assert alts["member_nll"].tolist() == pytest.approx(want, rel=1e-5)
    for r in alts.itertuples():  # greedy continuation, plain model
        seq = [*prefix, r.token_id]
        nll = [r.member_nll]
        with torch.no_grad():
            for _ in range(2):
                lp = torch.log_softmax(model(torch.tensor([seq]))[0, -1].double(), -1)
                seq.append(int(lp.argmax()))
                nll.append(-float(lp.max()))
        assert r.continuation == " ".join(f"<{t}>" for t in seq[-2:])
        assert r.path_nll == pytest.approx(np.mean(nll), rel=1e-5)


def test_a_prompt_answered_with_eos_at_once_gives_no_rows(monkeypatch) -> None:
    """A prompt whose first selected token is EOS has no step: no rows, no crash.

    (Regression: the 48-prompt run stopped at such a prompt, "need a state with steps".)
    """
    from tempo_lens.generation import loop
    from tempo_lens.prompts import Prompt
    from tempo_lens.runner import Unit

    tiny = tl.make_tiny_model()
    prompt = [3, 14, 15, 9]
    first = int(tiny(torch.tensor([prompt]))[0, -1].argmax())
    monkeypatch.setattr(loop, "eos_token_id", lambda model: first)
    cfg = uncertainty.Config(tiny=True)
    got = uncertainty.run_unit(cfg, tiny, Unit(Prompt(id="p", text="3 14 15 9"), {}))
    assert got == {"steps": [], "correlations": [], "pairs": [], "top_keys": []}
