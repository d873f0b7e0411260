"""RQ 9.2 quality prediction (docs/preregistration.md R7): folds, standardisation, the
regularised fits against references, the per-prompt differences, the committed results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tempo_lens.experiments import quality_prediction as qp

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results" / "quality_prediction"
RECORDS = {"smollm2": ROOT / "docs/results/findings/smollm2",
           "gemma3": ROOT / "docs/results/findings/gemma3"}  # fmt: skip


def _findings_like(n_prompts: int = 24, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A findings-shaped per-prompt table and judge table, rows in condition-major order
    (a prompt's units are not adjacent), one EOS-at-once unit (steps 0)."""
    rng = np.random.default_rng(seed)
    rows, judge = [], []
    for readout in ("mixture", "last"):
        for mode in ("isolated", "visible"):
            for tau in (0.1, 0.15):
                for i in range(n_prompts):
                    ratio = rng.normal(1.0, 0.3)
                    gap = 1.5 * (ratio - 1.0) / 0.3 + rng.normal(0, 1.0)
                    key = {"prompt_id": f"p{i:02d}", "readout": readout, "mode": mode,
                           "tau": tau}  # fmt: skip
                    rows.append({**key, "steps": 16, "parallel_steps": int(rng.integers(1, 16)),
                                 "mean_width": 1 + rng.random(), "max_width": int(rng.integers(2, 8)),
                                 "ratio": ratio, "set_ratio": 2 * ratio + rng.normal(0, 0.1),
                                 **{f: rng.random() for f in qp.ATTENTION_FEATURES[2:]},
                                 "distinct_2": 1.0, "repetition": 0.0})  # fmt: skip
                    judge.append({**key, "judge": "j", "judge_nll": 3.0 + gap,
                                  "greedy_judge_nll": 3.0})  # fmt: skip
    pp = pd.DataFrame(rows)
    pp.loc[len(pp) - 1, ["steps", "parallel_steps"]] = 0  # EOS at once: no parallel_fraction
    return pp, pd.DataFrame(judge)


# ------------------------------------------------------------------------------ folds
def test_folds_group_by_prompt_in_prompt_order() -> None:
    ids = [f"p{i:02d}" for _ in range(3) for i in range(20)]  # condition-major: interleaved
    folds = qp.prompt_folds(ids)
    by_prompt = pd.Series(folds).groupby(pd.Series(ids)).nunique()
    assert (by_prompt == 1).all()  # no prompt in two folds
    first = [int(folds[ids.index(f"p{i:02d}")]) for i in range(20)]
    assert first == sorted(first)  # contiguous blocks in prompt order
    assert np.bincount(first).tolist() == [3, 3, 3, 3, 2, 2, 2, 2]
    with pytest.raises(ValueError, match="3 prompts cannot make 8 folds"):
        qp.prompt_folds(["a", "b", "c", "a"])
    units = qp.predict_quality(*_findings_like())
    assert (units.groupby("prompt_id")["fold"].nunique() == 1).all()
    assert units["fold"].nunique() == qp.N_FOLDS == 8


# -------------------------------------------------------------------- standardisation
def test_standardise_uses_training_fold_statistics_only() -> None:
    rng = np.random.default_rng(1)
    train = rng.normal(size=(30, 3)) * [1.0, 5.0, 0.0] + [0.0, 10.0, 2.0]  # column 3 constant
    test = rng.normal(size=(6, 3)) * 100.0
    z_train, z_test = qp.standardise(train, test)
    mean, sd = train[:, :2].mean(0), train[:, :2].std(0)
    np.testing.assert_allclose(z_train[:, :2], (train[:, :2] - mean) / sd, rtol=1e-12)
    np.testing.assert_allclose(z_test[:, :2], (test[:, :2] - mean) / sd, rtol=1e-12)
    assert (z_train[:, 2] == 0).all() and (z_test[:, 2] == 0).all()
    # a wild extra test row changes neither the training rows nor the other test rows
    z_train2, z_test2 = qp.standardise(train, np.vstack([test, np.full((1, 3), 1e6)]))
    np.testing.assert_array_equal(z_train2, z_train)
    np.testing.assert_array_equal(z_test2[:6], z_test)


@pytest.mark.parametrize("fit", [qp.fit_ridge, qp.fit_logistic])
def test_out_of_fold_predictions_never_see_test_fold_statistics(fit) -> None:
    """Moving one test-fold unit's features far away leaves every other unit of that fold
    predicted exactly as before (fold statistics that included the test fold would move
    them), while the other folds, which train on that unit, do change."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 4))
    y = (x[:, 0] + rng.normal(size=64) > 0).astype(np.float64)
    folds = qp.prompt_folds(np.repeat(np.arange(16), 4))
    pred = qp.out_of_fold(x, y, folds, fit)
    moved = x.copy()
    moved[1] = [40.0, -30.0, 25.0, 60.0]  # unit 1 is in fold 0
    again = qp.out_of_fold(moved, y, folds, fit)
    same = (folds == 0) & (np.arange(64) != 1)
    np.testing.assert_allclose(again[same], pred[same], rtol=1e-9, atol=1e-12)
    assert not np.allclose(again[folds != 0], pred[folds != 0])


# ------------------------------------------------------------------ regularised fits
@pytest.mark.parametrize("penalty", [1.0, 4.0])
def test_regularised_fits_match_closed_form_and_sklearn(penalty: float) -> None:
    from sklearn.linear_model import LogisticRegression, Ridge

    rng = np.random.default_rng(3)
    x = qp.standardise(rng.normal(size=(80, 5)), np.zeros((1, 5)))[0]
    beta = np.array([1.5, -1.0, 0.0, 0.5, 2.0])
    y_cont = 7.0 + x @ beta + rng.normal(size=80)  # a large intercept: unpenalised
    got = qp.fit_ridge(x, y_cont, penalty)
    design = np.column_stack([np.ones(80), x])
    closed = np.linalg.solve(
        design.T @ design + penalty * np.diag([0.0, *np.ones(5)]), design.T @ y_cont
    )
    np.testing.assert_allclose(got, closed, rtol=1e-10, atol=1e-12)
    sk = Ridge(alpha=penalty).fit(x, y_cont)
    np.testing.assert_allclose(got, np.r_[sk.intercept_, sk.coef_], rtol=1e-8, atol=1e-10)
    assert got[0] == pytest.approx(y_cont.mean())  # standardised x: the intercept is the mean

    y_bin = (x @ beta + rng.logistic(size=80) > -1.0).astype(np.float64)
    got = qp.fit_logistic(x, y_bin, penalty)
    lr = LogisticRegression(C=1.0 / penalty, tol=1e-12, max_iter=10_000).fit(x, y_bin)
    np.testing.assert_allclose(got, np.r_[lr.intercept_, lr.coef_[0]], atol=1e-5)
    # the optimum of sum(log-loss) + penalty/2 |beta|^2: its gradient vanishes
    p = 1.0 / (1.0 + np.exp(-(design @ got)))
    grad = design.T @ (p - y_bin) + penalty * np.r_[0.0, got[1:]]
    assert np.abs(grad).max() < 1e-4


# -------------------------------------------------------------------- the per-prompt table
def test_per_prompt_differences_recomputed_from_the_units() -> None:
    pp, judge = _findings_like()
    units = qp.predict_quality(pp, judge)
    assert len(units) == len(pp) - 1  # the EOS-at-once unit has no parallel_fraction
    table = qp.per_prompt_table(units)
    assert table["prompt_id"].tolist() == [f"p{i:02d}" for i in range(24)]
    for _, row in table.iterrows():
        g = units[units["prompt_id"] == row["prompt_id"]]
        y = g["degenerate"].to_numpy(float)
        for m in ("baseline", "attention"):
            p = g[f"p_{m}"].to_numpy(float)
            ll = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
            assert row[f"log_loss_{m}"] == pytest.approx(ll, rel=1e-9)
            se = np.mean((g["cost"] - g[f"cost_{m}"]) ** 2)
            assert row[f"squared_error_{m}"] == pytest.approx(se, rel=1e-12)
        assert row["log_loss_difference"] == pytest.approx(
            row["log_loss_baseline"] - row["log_loss_attention"], abs=1e-15
        )
        assert row["squared_error_difference"] == pytest.approx(
            row["squared_error_baseline"] - row["squared_error_attention"], abs=1e-15
        )
    # the cost is the judge gap, the flag the issue-23 rule (gap > 1 nat)
    merged = units.merge(judge, on=["prompt_id", "readout", "mode", "tau"])
    np.testing.assert_allclose(merged["cost"], merged["judge_nll"] - merged["greedy_judge_nll"])
    assert (merged["degenerate"] == (merged["cost"] > 1.0)).all()
    # the synthetic gap depends on ratio: the attention model must predict it better
    s = qp.summary_of(units, table, len(pp), 24)
    assert s["cost"]["primary"]["direction"] == "above"
    assert s["cost"]["r2"]["attention"] > s["cost"]["r2"]["baseline"]
    assert s["degenerate"]["auc"]["attention"] > s["degenerate"]["auc"]["baseline"]
    assert s["degenerate"]["primary"]["level"] == 0.975


# ------------------------------------------------------------------ the committed results
@pytest.mark.parametrize("family", sorted(RECORDS))
def test_committed_results_recompute_from_the_record(family: str, tmp_path) -> None:
    """docs/results/quality_prediction/<family>: a fresh run of the command on the record
    gives the same tables and summary; per_prompt.csv follows from units.csv and the
    primary estimates from per_prompt.csv."""
    from tempo_lens.analysis.stats import estimate
    from tempo_lens.cli import main as cli_main

    out = tmp_path / family
    record = RECORDS[family].relative_to(ROOT).as_posix()
    import os

    cwd = os.getcwd()
    try:
        os.chdir(ROOT)
        assert cli_main(["quality-prediction", "--record", record, "--output-dir", str(out)]) == 0
    finally:
        os.chdir(cwd)
    committed = RESULTS / family
    for name in ("units.csv", "per_prompt.csv"):
        pd.testing.assert_frame_equal(
            pd.read_csv(out / name), pd.read_csv(committed / name), rtol=1e-9, atol=1e-12
        )
    want = json.loads((committed / "summary.json").read_text(encoding="utf-8"))
    got = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert got.keys() == want.keys() and got["units"] == want["units"]
    for outcome in ("degenerate", "cost"):
        g, w = got[outcome]["primary"], want[outcome]["primary"]
        assert (g["verdict"], g["n"]) == (w["verdict"], w["n"])
        assert g["ci"] == pytest.approx(w["ci"], rel=1e-9)
    units = pd.read_csv(committed / "units.csv")
    table = pd.read_csv(committed / "per_prompt.csv")
    pd.testing.assert_frame_equal(qp.per_prompt_table(units), table, rtol=1e-12)
    assert (units.groupby("prompt_id")["fold"].nunique() == 1).all()
    for outcome, col in (("degenerate", "log_loss_difference"),
                         ("cost", "squared_error_difference")):  # fmt: skip
        e = estimate(table[col].to_numpy(float), level=0.975, seed=0)
        w = want[outcome]["primary"]
        assert (e.mean, list(e.ci), e.n) == (w["mean"], w["ci"], w["n"])


def test_cli_refuses_a_missing_or_edited_record(tmp_path, capsys) -> None:
    import shutil

    from tempo_lens.cli import main as cli_main

    argv = ["quality-prediction", "--output-dir", str(tmp_path / "out"), "--record"]
    assert cli_main([*argv, str(tmp_path / "nothing")]) == 2
    assert "no manifest.json" in capsys.readouterr().err
    copy = tmp_path / "rec"
    shutil.copytree(RECORDS["smollm2"], copy, ignore=shutil.ignore_patterns("figures"))
    with open(copy / "judge.csv.gz", "ab") as f:
        f.write(b"x")
    assert cli_main([*argv, str(copy)]) == 2
    assert "judge.csv.gz differs from the SHA-256" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_refuses_to_write_into_a_directory_of_record(tmp_path, capsys) -> None:
    import shutil

    from tempo_lens.cli import main as cli_main

    copy = tmp_path / "rec"
    shutil.copytree(RECORDS["smollm2"], copy, ignore=shutil.ignore_patterns("figures"))
    before = sorted(p.name for p in copy.iterdir())
    argv = ["quality-prediction", "--record", str(copy), "--output-dir", str(copy)]
    assert cli_main(argv) == 2
    assert f"--output-dir {copy} holds a run or record of 'findings'" in capsys.readouterr().err
    assert sorted(p.name for p in copy.iterdir()) == before
