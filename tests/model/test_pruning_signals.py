"""The pruning_signals experiment (R2): votes, held-out outcome and AUCs against direct
recomputations on the tiny model, the verdict levels, and the run end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

import tempo_lens as tl
from tempo_lens.analysis.stats import within_group_auc
from tempo_lens.cli import main as cli_main
from tempo_lens.experiments import pruning_signals as ps

N_LAYERS = 6


@pytest.fixture(scope="module")
def run():
    """A trace with several scored sets and its member rows (windows 1..6)."""
    model = tl.make_tiny_model(n_layers=N_LAYERS)
    cfg = ps.Config(tiny=True, max_steps=12, windows=(1, 2, 3, 4, 5, 6))
    trace = tl.generate(model, [3, 14, 15, 9, 26], cfg.tempo_config())
    members = ps.member_votes(cfg, model, trace)
    assert members["set_step"].nunique() >= 3
    return model, trace, members


def test_votes_equal_hook_pattern_of_a_plain_run_with_cache(run) -> None:
    """Vote = mean of ``blocks.l.attn.hook_pattern[h, q, member]`` over the band's layers,
    every head and every query of the ``w`` steps after the set, from one ``run_with_cache``
    of the final state under the TEMPO hooks (written out here, not via the module)."""
    model, trace, members = run
    st = trace.to_state()
    with torch.no_grad(), tl.attach(model, st):
        _, cache = model.run_with_cache(st.tokens_tensor())
    pattern = torch.stack([cache[f"blocks.{la}.attn.hook_pattern"][0] for la in range(N_LAYERS)])
    pattern = pattern.double().numpy()  # layer head query key
    a, b = N_LAYERS // 3, 2 * N_LAYERS // 3
    bands = {"early": range(0, a), "middle": range(a, b), "late": range(b, N_LAYERS)}
    bands["all"] = range(N_LAYERS)
    step_of = np.asarray(st.steps)
    for r in members.itertuples():
        s, w = int(r.set_step), int(r.window)
        queries = np.nonzero((step_of > s) & (step_of <= s + w))[0]
        assert len(queries) >= w  # every later set has >= 1 member
        want = pattern[list(bands[r.band])][:, :, queries, int(r.index)].mean()
        assert r.vote == pytest.approx(want, rel=1e-5, abs=1e-7), (s, r.index, r.band, w)
    assert len(members) == members.groupby("set_step")["set_size"].first().sum() * 4 * 6


def test_heldout_loglik_equals_plain_forwards(run) -> None:
    """``heldout_loglik`` = log p(c_4 c_5 c_6 | prompt, clean[:s], member, c_1 c_2 c_3) by one
    plain forward (no TEMPO hooks) of the whole sequence; ``supported`` = its argmax."""
    model, trace, members = run
    st, clean = trace.state, trace.clean_ids()
    prompt = st.token_ids[: st.prompt_length]
    one = members[(members["band"] == "all") & (members["window"] == 1)]
    for r in one.itertuples():
        s = int(r.set_step)
        seq = prompt + clean[:s] + [st.token_ids[int(r.index)]] + clean[s + 1 : s + 7]
        with torch.no_grad():
            x = torch.tensor([seq])
            logits = model(x, attention_mask=torch.ones_like(x))[0]
        lp = torch.log_softmax(logits.double(), -1)
        want = sum(float(lp[t - 1, seq[t]]) for t in range(len(seq) - 3, len(seq)))
        assert r.heldout_loglik == pytest.approx(want, rel=1e-5, abs=1e-5), (s, r.index)
    for _, g in one.groupby("set_step"):
        assert g["supported"].sum() == 1
        assert bool(g.loc[g["heldout_loglik"].idxmax(), "supported"])
    # every row of a member carries the same outcome, whatever the band and window
    assert (members.groupby("index")["heldout_loglik"].nunique() == 1).all()


def test_only_sets_with_six_later_steps_and_two_members_are_scored(run) -> None:
    _, trace, members = run
    n = trace.state.n_steps
    want = [s for s, m in enumerate(trace.state.set_indices) if len(m) > 1 and s + 6 < n]
    assert sorted(members["set_step"].unique()) == want


def test_within_set_auc_by_hand() -> None:
    """Set 0: supported 0.2 vs 0.1 (win) and 0.3 (loss); set 1: supported 0.5 vs 0.5 (tie,
    1/2) -> 1.5 / 3 pairs. Probability: set 0 supported 0.5 beats 0.3, 0.2; set 1
    supported 0.4 loses to 0.6 -> 2 / 3."""
    members = pd.DataFrame(
        {
            "set_step": [0, 0, 0, 1, 1],
            "supported": [True, False, False, False, True],
            "vote": [0.2, 0.1, 0.3, 0.5, 0.5],
            "probability": [0.5, 0.3, 0.2, 0.6, 0.4],
            "band": "all",
            "window": 1,
        }
    )
    cfg = ps.Config(tiny=True, windows=(1,))
    rows = {r["band"]: r for r in ps.prompt_aucs(cfg, members)}
    assert rows["all"]["auc_vote"] == pytest.approx(1.5 / 3)
    assert rows["all"]["auc_probability"] == pytest.approx(2 / 3)
    assert (rows["all"]["n_sets"], rows["all"]["n_pairs"]) == (2, 3)
    assert math.isnan(rows["early"]["auc_vote"]) and rows["early"]["n_pairs"] == 0
    # pooled over pairs, not the mean of the sets' AUCs: 2 of 2 and 0 of 1 -> 2/3, not 1/2
    assert within_group_auc([3, 1, 2, 0, 9], [1, 0, 0, 1, 0], [0, 0, 0, 1, 1]) == (2 / 3, 3)
    # a non-finite score drops its pairs only: 1 of 1 and 0 of 1
    assert within_group_auc([3, np.nan, 2, 0, 9], [1, 0, 0, 1, 0], [0, 0, 0, 1, 1]) == (0.5, 2)


def test_verdicts_use_the_preregistered_levels_and_words() -> None:
    """3.1 at 95 %, 3.2 at 1 - 0.05/3, 3.3 at 1 - 0.05/2; constructed per-prompt AUCs whose
    signs are unmistakable give the rule's words."""
    rng = np.random.default_rng(0)
    rows = []
    for p in range(12):
        base = {"early": 0.3, "middle": 0.5, "late": 0.8, "all": 0.7}
        for band, v in base.items():
            for w in (1, 3, 5):
                shift = {1: 0.0, 3: 0.1, 5: -0.2}[w] if band == "all" else 0.0
                auc = v + shift + rng.normal(0, 0.02)
                rows.append(
                    {
                        "prompt_id": f"p{p}",
                        "band": band,
                        "window": w,
                        "auc_vote": auc,
                        "auc_probability": 0.6 + rng.normal(0, 0.02),
                    }
                )
    pp = pd.DataFrame(rows)
    got = {r["id"]: r for r in ps.verdicts(ps.Config(tiny=True), pp)}
    assert got["3.1"]["verdict"] == "predicts" and got["3.1"]["level"] == 0.95
    assert got["3.1.vs_probability"]["verdict"] == "above"
    assert got["3.2.early"]["verdict"] == "anti-predicts"
    assert got["3.2.middle"]["verdict"] == "inconclusive"
    assert got["3.2.late"]["verdict"] == "predicts"
    assert got["3.2.late_minus_early"]["verdict"] == "supported"
    assert {got[f"3.2.{b}"]["level"] for b in ("early", "middle", "late", "late_minus_early")} == {
        1 - 0.05 / 3
    }
    assert got["3.3.w3"]["verdict"] == "helps" and got["3.3.w5"]["verdict"] == "hurts"
    assert got["3.3.w3"]["level"] == got["3.3.w5"]["level"] == 1 - 0.05 / 2
    assert got["3.3.w3"]["n"] == 12 and got["3.3.w3"]["null"] == 0.0
    only1 = {r["id"]: r for r in ps.verdicts(ps.Config(tiny=True, windows=(1,)), pp)}
    assert only1["3.3.w3"]["verdict"].startswith("not run")


def test_quick_run_end_to_end(tmp_path) -> None:
    out = tmp_path / "ps"
    assert cli_main(["experiment", "pruning_signals", "--tiny", "--quick", "-q",
                     "--output-dir", str(out)]) == 0  # fmt: skip
    members = pd.read_csv(out / "members.csv")
    pp = pd.read_csv(out / "per_prompt.csv")
    assert list(members.columns)[-len(ps.MEMBER_COLUMNS) :] == ps.MEMBER_COLUMNS
    assert len(members) and set(members["band"]) == set(ps.BANDS)
    assert set(members["window"]) == {1, 3, 5}
    assert members["vote"].between(0, 1).all()
    assert len(pp) == ps.SPEC.quick_prompts * len(ps.BANDS) * 3
    summary = json.loads((out / "summary.json").read_text())
    ids = [r["id"] for r in summary["verdicts"]]
    assert ids == ["3.1", "3.1.vs_probability", "3.2.early", "3.2.middle", "3.2.late",
                   "3.2.late_minus_early", "3.3.w3", "3.3.w5"]  # fmt: skip
    assert summary["n_pairs"] == int(
        pp[(pp["band"] == "all") & (pp["window"] == 1)]["n_pairs"].sum()
    )
    report = (out / "report.txt").read_text()
    assert "3.2.late_minus_early" in report and "98.3%" in report and "97.5%" in report


@pytest.mark.parametrize(
    "argv", [["--windows", "0"], ["--windows", "7"], ["--prune", "relative:0.5"]]
)
def test_bad_settings_are_usage_errors(argv, tmp_path, capsys) -> None:
    out = tmp_path / "bad"
    assert cli_main(["experiment", "pruning_signals", "--tiny", *argv, "--output-dir",
                     str(out)]) == 2  # fmt: skip
    assert "must be" in capsys.readouterr().err
    assert not out.exists()


def test_two_layer_model_is_refused() -> None:
    with pytest.raises(ValueError, match="early"):
        ps.band_layers(2)
