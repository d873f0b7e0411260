"""Statistics, the repetition filter, and the step/pruning tables on hand-built inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tempo_lens.analysis import (
    analyze_runs,
    bootstrap_ci,
    paired_tests,
    parallel_widths,
    pruning_analysis,
    received_attention,
    repetition_score,
    run_summary,
)
from tempo_lens.state import SequenceState
from tempo_lens.trace import Candidate, PruneDecision, StepRecord, Trace
from tests.unit.test_analysis_attention import make_data


def test_paired_tests_known_values() -> None:
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    t = paired_tests(a, np.zeros(5))
    assert t.cohens_dz == pytest.approx(3.0 / np.std(a, ddof=1))
    assert t.rank_biserial == 1.0
    assert t.wilcoxon_p == pytest.approx(2 / 32)  # exact: both extreme sign patterns
    assert t.mean_difference == 3.0
    mixed = paired_tests(np.array([1.0, -2.0, 3.0]), np.zeros(3))
    assert mixed.rank_biserial == pytest.approx((1 + 3 - 2) / 6)
    same = paired_tests(np.ones(4), np.ones(4))
    assert math.isnan(same.wilcoxon_p) and math.isnan(same.cohens_dz)


def test_bootstrap_ci_seeded() -> None:
    x = np.array([0.5, 0.7, 0.9, 1.1, 0.6])
    assert bootstrap_ci(x, seed=1) == bootstrap_ci(x, seed=1)
    lo, hi = bootstrap_ci(x)
    assert lo < x.mean() < hi
    assert bootstrap_ci(np.full(5, 0.3)) == pytest.approx((0.3, 0.3))
    assert all(math.isnan(v) for v in bootstrap_ci([1.0]))


def test_repetition_score() -> None:
    assert repetition_score([1, 2, 3, 1, 2, 3, 1, 2, 3]) == pytest.approx(1 - 3 / 7)
    assert repetition_score([1, 2, 3, 4, 5]) == 0.0
    assert repetition_score([1, 2]) == 0.0


def _write_run(root, name, parallel, non, clean) -> None:
    d = root / name
    d.mkdir()
    received = {
        "parallel_mean": parallel,
        "non_parallel_mean": non,
        "non_parallel_generated_mean": non,
        "ratio": parallel / non,
        "ratio_generated": parallel / non,
        "set_ratio": 1.0,
        "n_parallel": 3,
    }
    (d / "summary.json").write_text(
        json.dumps({"prompt": name, "received": received, "clean_ids": clean})
    )


def test_analyze_runs_verdict_from_numbers(tmp_path) -> None:
    for i in range(6):
        _write_run(tmp_path, f"r{i}", 0.05 + 0.001 * i, 0.1 + 0.002 * i, list(range(10)))
    _write_run(tmp_path, "loop", 0.5, 0.1, [1, 2, 3] * 4)
    rep = analyze_runs(tmp_path)
    assert (rep.n_runs, rep.n_used, rep.n_degenerate) == (7, 6, 1)
    assert rep.ratio_mean == pytest.approx(0.5, abs=0.01)
    assert rep.ratio_ci[1] < 1
    assert rep.tests.wilcoxon_p == pytest.approx(2 / 64)
    assert rep.verdict.startswith("parallel tokens receive LESS")
    json.dumps(rep.to_dict(), allow_nan=False)
    few = analyze_runs(tmp_path, min_samples=10)
    assert few.verdict.startswith("insufficient data") and not few.sufficient
    with pytest.raises(FileNotFoundError):
        analyze_runs(tmp_path / "missing")


def test_analyze_runs_no_difference(tmp_path) -> None:
    for i, (p, n) in enumerate([(1, 2), (2, 1), (1, 1.5), (1.5, 1), (1, 1.2), (1.2, 1)]):
        _write_run(tmp_path, f"r{i}", p, n, list(range(10)))
    assert analyze_runs(tmp_path).verdict.startswith("no significant difference")


def _trace() -> Trace:
    state = SequenceState.from_sets([7, 8], [[10, 11], [12], [13]])
    state.prune(3, at_step=1)
    decisions = [
        PruneDecision(2, 10, "x", 0, 0.4, 0.4, False, "relative:0.5"),
        PruneDecision(3, 11, "y", 0, 0.1, 0.4, True, "relative:0.5"),
    ]
    recs = [
        StepRecord(
            0, 0.1, "mixture", [Candidate(10, "x", 0.5, True)], [2, 3], probabilities=[0.5, 0.5]
        ),
        StepRecord(1, 0.1, "mixture", [], [4], pruning=decisions, probabilities=[0.5]),
        StepRecord(2, 0.1, "mixture", [], [5], probabilities=[0.5]),
    ]
    return Trace(
        prompt=[7, 8],
        model="hand",
        method="tempo",
        config={},
        state=state,
        texts=["a", "b", "x", "y", "z", "w"],
        steps=recs,
    )


def test_widths_summary_and_pruning() -> None:
    tr = _trace()
    w = parallel_widths(tr)
    assert list(w["width"]) == [2, 1, 1] and list(w["pruned_later"]) == [1, 0, 0]
    s = run_summary(tr)
    assert (s["total_steps"], s["parallel_steps"], s["max_parallel_width"]) == (3, 1, 2)
    assert s["average_parallel_width"] == pytest.approx(4 / 3)
    assert (s["parallel_tokens"], s["pruned_parallel_tokens"], s["pruning_rate"]) == (2, 1, 0.5)
    rows = [
        [1.0],
        [0.5, 0.5],
        [0.2, 0.3, 0.5, 0.0],
        [0.1, 0.1, 0.0, 0.8],
        [0.1, 0.2, 0.3, 0.1, 0.3],
        [0.3, 0.1, 0.2, 0.0, 0.2, 0.2],
    ]
    pa = pruning_analysis(tr, received_attention(make_data(rows, prune=3)))
    assert pa.n_decisions == 2
    assert list(pa.decisions["relative_score"]) == pytest.approx([1.0, 0.25])
    assert pa.rates.to_dict("records") == [
        {"judged_at": 1, "n_judged": 2, "n_pruned": 1, "rate": 0.5}
    ]
    assert list(pa.pruned["index"]) == [3]
    surv = pa.survival.set_index("index")
    assert surv.at[3, "pruned"] and not surv.at[2, "pruned"]
    assert surv.at[3, "received"] == pytest.approx(0.1)
    assert surv.at[2, "received"] == pytest.approx(0.25)
