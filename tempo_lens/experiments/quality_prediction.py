r"""RQ 9.2, pre-registered: do attention features predict quality beyond selection features?

The analysis of ``docs/preregistration.md`` (R7), computed from a committed findings
directory of record (``docs/results/findings/{smollm2,gemma3}``: ``per_prompt.csv.gz``,
``judge.csv.gz``, read through :func:`tempo_lens.runner.store.read_record_tables`, which
checks the manifest's SHA-256 of each). Not a runner experiment: no model runs.

* **Units**: prompt × condition (readout, mode, τ) of the per-prompt table, 8 per prompt.
  A unit enters when every feature below is finite (an EOS-at-once unit has no
  ``parallel_steps / steps``; a unit without a parallel set has no attention features);
  the dropped units are counted in the summary.
* **Outcomes**: ``degenerate`` (binary): the issue-23 judge rule,
  :func:`tempo_lens.experiments.findings_judge.degenerate` (judge NLL > the prompt's
  greedy text's + 1 nat, or looping); ``cost`` (continuous): ``judge_nll −
  greedy_judge_nll`` of the record's judge table (a unit without both is left out of this
  outcome only).
* **Features**: the baseline (selection only) has ``mean_width``, ``max_width``,
  ``parallel_fraction`` (= ``parallel_steps / steps``), ``steps`` and the condition as
  indicators (:func:`condition_indicators`: per factor mode, τ, readout, one 0/1 column per
  level other than the factor's first in table order, the primary arm); the attention model
  adds ``ratio``, ``set_ratio``, ``entropy_early``, ``entropy_middle``, ``entropy_late``,
  ``head_entropy_min``, ``head_entropy_max``, ``max_sibling_attention``.
* **Model**: features standardised with the training fold's mean and standard deviation
  (:func:`standardise`), L2-regularised logistic (``degenerate``, :func:`fit_logistic`) and
  ridge (``cost``, :func:`fit_ridge`) regression with penalty λ = 1.0 (the mapping to
  statsmodels' ``alpha`` is in :func:`fit_logistic`), intercept unpenalised; 8 folds grouped
  by prompt (:func:`prompt_folds`: contiguous blocks of the record's prompts in table order,
  fixed), out-of-fold predictions (:func:`out_of_fold`).
* **Primary measures**, per prompt: the mean out-of-fold log-loss of the baseline minus that
  of the attention model over the prompt's units (positive = attention helps), and the same
  with squared error for ``cost``. Each is estimated with
  :func:`tempo_lens.analysis.stats.estimate` (seed 0, bootstrap-t). Two primary comparisons
  answer the one question, so by the pre-registration's common design (Bonferroni,
  1 − 0.05/k) each CI is at :data:`LEVEL` = 97.5 %. Rule: CI above 0 → *supported*
  (attention features predict quality beyond selection probabilities); below 0 →
  *refuted* (the attention model predicts worse); else *inconclusive*; under 10 prompts
  *insufficient*.
* **Descriptive**: pooled out-of-fold AUC (:func:`tempo_lens.analysis.stats.auc`) of both
  logistic models and pooled out-of-fold R² (``1 − SSE / SST``, SST about the mean of the
  outcome's units) of both ridge models.

Outputs (:func:`write_quality_prediction`): ``units.csv`` (one row per unit that entered:
fold, outcomes, out-of-fold predictions and losses), ``per_prompt.csv`` (``prompt_id``, the
per-prompt means and differences), ``summary.json``.

Example::

    tempo-lens quality-prediction --record docs/results/findings/smollm2 \
        --output-dir docs/results/quality_prediction/smollm2
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tempo_lens.analysis.stats import auc, estimate
from tempo_lens.experiments.findings_judge import degenerate
from tempo_lens.io import atomic_write_json, atomic_write_text
from tempo_lens.runner.store import read_record_tables

__all__ = [
    "ATTENTION_FEATURES",
    "BASELINE_FEATURES",
    "CONDITION_COLUMNS",
    "LEVEL",
    "N_FOLDS",
    "PENALTY",
    "condition_indicators",
    "fit_logistic",
    "fit_ridge",
    "load_record",
    "out_of_fold",
    "per_prompt_table",
    "predict_quality",
    "prompt_folds",
    "standardise",
    "summary_of",
    "unit_table",
    "write_quality_prediction",
]

BASELINE_FEATURES = ("mean_width", "max_width", "parallel_fraction", "steps")
"""Selection-only features (the condition indicators are added to them)."""
CONDITION_COLUMNS = ("mode", "tau", "readout")
"""The condition's factors, each coded as indicators."""
ATTENTION_FEATURES = ("ratio", "set_ratio", "entropy_early", "entropy_middle", "entropy_late",
                      "head_entropy_min", "head_entropy_max", "max_sibling_attention")  # fmt: skip
"""The features the attention model adds to the baseline."""
N_FOLDS = 8
PENALTY = 1.0
"""λ: the L2 penalty's weight (see :func:`fit_logistic` for its scale)."""
LEVEL = 1 - 0.05 / 2
"""CI level of each of the two primary comparisons (Bonferroni, k = 2)."""
SEED = 0
UNIT_KEYS = ("prompt_id", "readout", "mode", "tau")
VERDICT = {"above": "supported", "below": "refuted"}
"""The verdict word of a direction (the others are their own)."""
CONCLUSION = {
    "above": "attention features predict quality beyond selection probabilities",
    "below": "the attention model predicts quality worse than selection alone",
    "inconclusive": "no difference shown between the attention and the baseline model",
    "insufficient": "fewer than 10 prompts",
}


# ------------------------------------------------------------------------------ the data
def load_record(record_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """``(per_prompt, judge, manifest)`` of a findings directory of record.

    Raises:
        FileNotFoundError: no ``manifest.json`` in ``record_dir``.
        ValueError: the manifest is not a findings directory of record, a table is
            missing, or a table's SHA-256 differs from the manifest's
            (:func:`~tempo_lens.runner.store.read_record_tables`).
    """
    out = Path(record_dir)
    path = out / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{out} has no manifest.json: not a findings directory of record")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    record = manifest.get("record")
    if manifest.get("experiment") != "findings" or not (record or {}).get("tables"):
        raise ValueError(f"{out} is not a findings directory of record (manifest record.tables)")
    tables = read_record_tables(out, record)
    for name in ("per_prompt", "judge"):
        if name not in tables:
            raise ValueError(f"{out} has no {name}.csv.gz (the judge: tempo-lens findings-judge)")
    return tables["per_prompt"], tables["judge"], manifest


def unit_table(pp: pd.DataFrame, judge: pd.DataFrame) -> pd.DataFrame:
    """One row per unit of ``pp``: keys, features, ``degenerate``, ``cost``, ``complete``.

    ``degenerate`` is the issue-23 rule; ``cost`` = ``judge_nll − greedy_judge_nll``
    (NaN without both); ``complete``: every baseline and attention feature is finite.
    """
    keys = [k for k in UNIT_KEYS if k in pp]
    j = pp[keys].merge(
        judge[[*keys, "judge_nll", "greedy_judge_nll"]], on=keys, how="left", validate="one_to_one"
    )
    units = pp[keys].reset_index(drop=True)
    steps = pp["steps"].to_numpy(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        parallel_fraction = pp["parallel_steps"].to_numpy(np.float64) / steps
    units["parallel_fraction"] = np.where(steps > 0, parallel_fraction, np.nan)
    for col in (*BASELINE_FEATURES, *ATTENTION_FEATURES):
        if col != "parallel_fraction":
            units[col] = pp[col].to_numpy(np.float64)
    units["degenerate"] = degenerate(pp, judge).to_numpy(bool)
    units["cost"] = (j["judge_nll"].astype(float) - j["greedy_judge_nll"].astype(float)).to_numpy()
    feats = units[[*BASELINE_FEATURES, *ATTENTION_FEATURES]].to_numpy(np.float64)
    units["complete"] = np.isfinite(feats).all(axis=1)
    return units


def condition_indicators(units: pd.DataFrame) -> pd.DataFrame:
    """0/1 columns ``factor=level`` for each level but the first (table order) of each factor.

    The factors are :data:`CONDITION_COLUMNS` present in ``units``; the first level of each
    (the primary arm in a findings table: isolated, τ first, mixture) is the reference.
    """
    cols = {}
    for factor in CONDITION_COLUMNS:
        if factor not in units:
            continue
        values = units[factor].astype(str)
        for level in list(dict.fromkeys(values))[1:]:
            cols[f"{factor}={level}"] = (values == level).astype(np.float64).to_numpy()
    return pd.DataFrame(cols, index=units.index)


def prompt_folds(prompt_ids: Iterable[Any], n_folds: int = N_FOLDS) -> np.ndarray:
    """The fold (0 .. n_folds − 1) of each unit: folds are contiguous blocks of prompts.

    The distinct prompts in order of first appearance are split into ``n_folds``
    consecutive blocks whose sizes differ by at most one, the first blocks the larger
    (``numpy.array_split``); every unit of a prompt is in its prompt's fold.

    Raises:
        ValueError: fewer prompts than folds.
    """
    ids = list(prompt_ids)
    order = list(dict.fromkeys(ids))
    if len(order) < n_folds:
        raise ValueError(f"{len(order)} prompts cannot make {n_folds} folds")
    fold_of = {}
    for k, block in enumerate(np.array_split(np.arange(len(order)), n_folds)):
        for i in block:
            fold_of[order[i]] = k
    return np.array([fold_of[p] for p in ids], dtype=np.int64)


# ----------------------------------------------------------------------------- the models
def standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` centred and scaled by the **training** rows' mean and SD (ddof 0).

    The test rows never enter the statistics. A column constant in the training rows is
    0 in both (it carries no information the intercept lacks).
    """
    train = np.asarray(train, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    mean, sd = train.mean(axis=0), train.std(axis=0)
    constant = ~(sd > 0)
    scale = np.where(constant, 1.0, sd)
    z_train, z_test = (train - mean) / scale, (test - mean) / scale
    z_train[:, constant] = 0.0
    z_test[:, constant] = 0.0
    return z_train, z_test


def _alpha(n: int, k: int, penalty: float) -> np.ndarray:
    """The per-parameter statsmodels ``alpha``: 0 for the intercept, ``penalty / n`` else."""
    return np.r_[0.0, np.full(k, penalty / n)]


def _strict(fit: Callable[[], Any]) -> np.ndarray:
    """``fit().params``; a statsmodels convergence warning becomes a RuntimeError."""
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        try:
            result = fit()
        except ConvergenceWarning as e:
            raise RuntimeError(f"the regularised fit did not converge: {e}") from e
    return np.asarray(result.params, dtype=np.float64)


def fit_logistic(x: np.ndarray, y: np.ndarray, penalty: float = PENALTY) -> np.ndarray:
    """L2-regularised logistic regression; ``[intercept, coefficients...]``.

    Minimises ``Σ_i logloss_i + (λ/2) ‖β‖²`` over the ``n`` rows (λ = ``penalty``, β the
    coefficients, the intercept unpenalised): scikit-learn's
    ``LogisticRegression(C=1/λ)``. Through statsmodels, ``GLM(y, [1, x],
    Binomial()).fit_regularized(alpha=a, L1_wt=0, opt_method="newton-cg")``, whose objective
    is ``−loglike/n + Σ_j a_j β_j² / 2``; so ``a = 0`` for the intercept and ``a = λ / n``
    for every coefficient (the objective above divided by ``n``). Penalty 1.0 of the
    pre-registration is λ = 1.0 on this scale (the summed loss), ``n`` the training fold's
    units.
    """
    import statsmodels.api as sm

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    exog = np.column_stack([np.ones(len(y)), x])
    alpha = _alpha(len(y), x.shape[1], penalty)
    model = sm.GLM(y, exog, family=sm.families.Binomial())
    return _strict(lambda: model.fit_regularized(alpha=alpha, L1_wt=0.0, opt_method="newton-cg"))


def fit_ridge(x: np.ndarray, y: np.ndarray, penalty: float = PENALTY) -> np.ndarray:
    """Ridge regression; ``[intercept, coefficients...]``.

    Minimises ``Σ_i (y_i − ŷ_i)² + λ ‖β‖²`` (λ = ``penalty``, the intercept unpenalised):
    scikit-learn's ``Ridge(alpha=λ)``. Through statsmodels, ``OLS(y, [1,
    x]).fit_regularized(alpha=a, L1_wt=0)`` (its closed form), whose objective is
    ``RSS / (2n) + Σ_j a_j β_j² / 2``; so ``a = 0`` for the intercept and ``a = λ / n`` for
    every coefficient, the same mapping as :func:`fit_logistic` (the Gaussian negative
    log-likelihood at unit scale is ``RSS / 2``). Not ``GLM(..., Gaussian())``: its ``L1_wt
    = 0`` path evaluates the likelihood at an estimated scale, so it does not minimise this
    objective.
    """
    import statsmodels.api as sm

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    exog = np.column_stack([np.ones(len(y)), x])
    alpha = _alpha(len(y), x.shape[1], penalty)
    return _strict(lambda: sm.OLS(y, exog).fit_regularized(alpha=alpha, L1_wt=0.0))


def out_of_fold(
    x: np.ndarray,
    y: np.ndarray,
    folds: np.ndarray,
    fit: Callable[[np.ndarray, np.ndarray, float], np.ndarray],
    penalty: float = PENALTY,
) -> np.ndarray:
    """Each row's linear predictor from the model fitted on the other folds.

    Per fold: standardise with the other folds' statistics (:func:`standardise`), fit
    ``fit(z_train, y_train, penalty)``, predict ``intercept + z_test · β`` (for the
    logistic model the log-odds).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    folds = np.asarray(folds)
    pred = np.full(len(y), np.nan)
    for k in np.unique(folds):
        test = folds == k
        z_train, z_test = standardise(x[~test], x[test])
        params = fit(z_train, y[~test], penalty)
        pred[test] = params[0] + z_test @ params[1:]
    return pred


def _log_loss(logit: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``−[y ln p + (1 − y) ln(1 − p)]`` with ``p = sigmoid(logit)``, computed stably."""
    return np.logaddexp(0.0, logit) - y * logit


def _r2(pred: np.ndarray, y: np.ndarray) -> float:
    sst = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - pred) ** 2).sum()) / sst if sst > 0 else math.nan


# ---------------------------------------------------------------------------- the analysis
def predict_quality(
    pp: pd.DataFrame, judge: pd.DataFrame, *, penalty: float = PENALTY, n_folds: int = N_FOLDS
) -> pd.DataFrame:
    """The units that enter with their folds, outcomes and out-of-fold predictions.

    Columns: the unit keys, ``fold``, ``degenerate`` (0/1), ``cost``; per model ``m`` in
    (``baseline``, ``attention``): ``logit_m``, ``p_m``, ``log_loss_m`` and ``cost_m``,
    ``squared_error_m`` (NaN for a unit without ``cost``).
    """
    units = unit_table(pp, judge)
    units["fold"] = prompt_folds(units["prompt_id"], n_folds)  # the record's prompts, fixed
    units = units[units["complete"]].reset_index(drop=True)
    ind = condition_indicators(units)
    base = np.column_stack([units[list(BASELINE_FEATURES)].to_numpy(np.float64), ind.to_numpy()])
    full = np.column_stack([base, units[list(ATTENTION_FEATURES)].to_numpy(np.float64)])
    folds = units["fold"].to_numpy()
    y = units["degenerate"].to_numpy(np.float64)
    cost = units["cost"].to_numpy(np.float64)
    has_cost = np.isfinite(cost)
    out = units[[k for k in UNIT_KEYS if k in units] + ["fold"]].copy()
    out["degenerate"] = y.astype(np.int64)
    out["cost"] = cost
    for name, x in (("baseline", base), ("attention", full)):
        logit = out_of_fold(x, y, folds, fit_logistic, penalty)
        out[f"logit_{name}"] = logit
        out[f"p_{name}"] = 1.0 / (1.0 + np.exp(-logit))
        out[f"log_loss_{name}"] = _log_loss(logit, y)
        pred = np.full(len(cost), np.nan)
        pred[has_cost] = out_of_fold(
            x[has_cost], cost[has_cost], folds[has_cost], fit_ridge, penalty
        )
        out[f"cost_{name}"] = pred
        out[f"squared_error_{name}"] = (cost - pred) ** 2
    return out


def per_prompt_table(units: pd.DataFrame) -> pd.DataFrame:
    """Per prompt (first-appearance order): mean losses of both models and their differences.

    Columns: ``prompt_id``, ``n_units``, ``log_loss_baseline``, ``log_loss_attention``,
    ``log_loss_difference`` (baseline − attention: positive = attention helps),
    ``n_units_cost``, ``squared_error_baseline``, ``squared_error_attention``,
    ``squared_error_difference``.
    """
    rows = []
    for pid, g in units.groupby("prompt_id", sort=False):
        c = g.dropna(subset=["cost"])
        ll_b, ll_a = float(g["log_loss_baseline"].mean()), float(g["log_loss_attention"].mean())
        se_b = float(c["squared_error_baseline"].mean()) if len(c) else math.nan
        se_a = float(c["squared_error_attention"].mean()) if len(c) else math.nan
        rows.append(
            {
                "prompt_id": pid,
                "n_units": len(g),
                "log_loss_baseline": ll_b,
                "log_loss_attention": ll_a,
                "log_loss_difference": ll_b - ll_a,
                "n_units_cost": len(c),
                "squared_error_baseline": se_b,
                "squared_error_attention": se_a,
                "squared_error_difference": se_b - se_a,
            }
        )
    return pd.DataFrame(rows)


def _primary(values: pd.Series, measure: str) -> dict[str, Any]:
    e = estimate(values.to_numpy(np.float64), level=LEVEL, seed=SEED)
    return {
        "measure": measure,
        "mean": e.mean,
        "ci": list(e.ci),
        "level": e.level,
        "n": e.n,
        "direction": e.direction,
        "verdict": VERDICT.get(e.direction, e.direction),
        "conclusion": CONCLUSION[e.direction],
    }


def summary_of(
    units: pd.DataFrame, per_prompt: pd.DataFrame, n_units_total: int, n_prompts_total: int
) -> dict[str, Any]:
    """The primary estimates with verdicts and the descriptive AUC and R² (summary.json)."""
    y = units["degenerate"].to_numpy(np.float64)
    c = units.dropna(subset=["cost"])
    cost = c["cost"].to_numpy(np.float64)
    folds = []
    for k, g in units.groupby("fold"):
        ids = list(dict.fromkeys(g["prompt_id"]))
        folds.append({"fold": int(k), "n_prompts": len(ids), "n_units": len(g),
                      "first_prompt": ids[0], "last_prompt": ids[-1]})  # fmt: skip
    return {
        "units": {
            "total": n_units_total,
            "used": len(units),
            "missing_features": n_units_total - len(units),
            "prompts_total": n_prompts_total,
            "prompts_used": int(units["prompt_id"].nunique()),
        },
        "folds": folds,
        "degenerate": {
            "outcome": "degenerate (issue-23 judge rule, findings_judge.degenerate)",
            "units": len(units),
            "positives": int(y.sum()),
            "primary": _primary(
                per_prompt["log_loss_difference"],
                "per-prompt mean out-of-fold log-loss, baseline − attention",
            ),
            "log_loss": {
                m: float(units[f"log_loss_{m}"].mean()) for m in ("baseline", "attention")
            },
            "auc": {m: auc(units[f"p_{m}"].to_numpy(), y) for m in ("baseline", "attention")},
        },
        "cost": {
            "outcome": "judge_nll − greedy_judge_nll (nats per judge token)",
            "units": len(c),
            "mean": float(cost.mean()) if len(c) else math.nan,
            "primary": _primary(
                per_prompt["squared_error_difference"],
                "per-prompt mean out-of-fold squared error, baseline − attention",
            ),
            "squared_error": {
                m: float(c[f"squared_error_{m}"].mean()) for m in ("baseline", "attention")
            },
            "r2": {
                m: _r2(c[f"cost_{m}"].to_numpy(np.float64), cost) for m in ("baseline", "attention")
            },
        },
    }


def _design(names: Sequence[str]) -> dict[str, Any]:
    return {
        "baseline_features": list(BASELINE_FEATURES),
        "condition_indicators": list(names),
        "attention_features": list(ATTENTION_FEATURES),
        "standardisation": "training-fold mean and SD (ddof 0), per fold",
        "penalty": PENALTY,
        "penalty_scale": "sum of unit losses + (penalty/2)|beta|^2 (logistic; sklearn C = "
        "1/penalty), RSS + penalty |beta|^2 (ridge; sklearn Ridge alpha = penalty); "
        "statsmodels alpha = penalty / n_train, intercept 0",
        "n_folds": N_FOLDS,
        "folds": "contiguous blocks of the record's prompts in table order (numpy.array_split)",
        "level": LEVEL,
        "seed": SEED,
        "n_boot": 10_000,
    }


def write_quality_prediction(record_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Run the analysis on a directory of record; return the summary.

    Writes ``units.csv``, ``per_prompt.csv`` and ``summary.json`` under ``out_dir``, each
    atomically.

    Raises:
        FileNotFoundError, ValueError: see :func:`load_record`; nothing is written.
        ValueError: ``out_dir`` holds a run or a directory of record (a ``manifest.json``):
            its own tables and summary would be overwritten.
    """
    record = Path(record_dir)
    if (man := Path(out_dir) / "manifest.json").is_file():
        what = json.loads(man.read_text(encoding="utf-8")).get("experiment", "a run")
        raise ValueError(
            f"--output-dir {out_dir} holds a run or record of {what!r}: choose another directory"
        )
    pp, judge, manifest = load_record(record)
    units = predict_quality(pp, judge)
    per_prompt = per_prompt_table(units)
    hashes = manifest["record"]["tables"]
    summary = {
        "analysis": "quality_prediction (RQ 9.2, docs/preregistration.md R7)",
        "record": record.as_posix(),
        "model": manifest.get("config", {}).get("model"),
        "judge": sorted(map(str, judge["judge"].dropna().unique())) if "judge" in judge else [],
        "tables": {k: hashes[k] for k in ("per_prompt.csv.gz", "judge.csv.gz") if k in hashes},
        "design": _design(list(condition_indicators(units).columns)),
        **summary_of(units, per_prompt, len(pp), int(pp["prompt_id"].nunique())),
    }
    out = Path(out_dir)
    atomic_write_text(out / "units.csv", units.to_csv(index=False))
    atomic_write_text(out / "per_prompt.csv", per_prompt.to_csv(index=False))
    atomic_write_json(out / "summary.json", summary)
    return summary
