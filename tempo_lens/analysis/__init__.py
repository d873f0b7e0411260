"""Analyses of captured TEMPO attention: data in, dataclasses and DataFrames out.

* :mod:`~tempo_lens.analysis.received` — attention received by parallel vs non-parallel
  tokens (per token, per set, per layer and head);
* :mod:`~tempo_lens.analysis.patterns` — sibling (cross-parallel) attention and the
  isolation check, top-k context, sibling Jensen–Shannon divergence, entropy, head
  specialisation;
* :mod:`~tempo_lens.analysis.steps` — parallel width, run summary, pruning decisions and
  their counterfactual re-judging (:func:`rejudge`);
* :mod:`~tempo_lens.analysis.position_effects` — how a set's attention depends on its size
  and on shared / offset / distinct positions;
* :mod:`~tempo_lens.analysis.export` — seed-compatible JSON, compact tensors, loader;
* :mod:`~tempo_lens.analysis.stats` — statistics over many runs;
* :mod:`~tempo_lens.analysis.run` — generate + capture + analyse + export, end to end.

See ``docs/analysis.md``.
"""

from tempo_lens.analysis.export import export_seed_json, load_attention, save_attention, seed_json
from tempo_lens.analysis.patterns import (
    EntropyResult,
    IsolationCheck,
    SiblingMatrix,
    attention_entropy,
    entropy,
    head_specialisation,
    isolation_check,
    jensen_shannon,
    sibling_attention,
    sibling_divergence,
    top_context,
)
from tempo_lens.analysis.position_effects import position_effects
from tempo_lens.analysis.received import ReceivedAttention, received_attention
from tempo_lens.analysis.run_stats import StatsReport, analyze_runs
from tempo_lens.analysis.stats import (
    Estimate,
    LogisticFit,
    PairedTests,
    auc,
    bootstrap_ci,
    bootstrap_t_ci,
    cohens_kappa,
    conditional_logit,
    estimate,
    logistic_regression,
    paired_tests,
    rank_correlation,
    repetition_score,
    within_group_auc,
)
from tempo_lens.analysis.steps import (
    PruningAnalysis,
    parallel_widths,
    pruning_analysis,
    rejudge,
    run_summary,
)

__all__ = [
    "EntropyResult",
    "Estimate",
    "IsolationCheck",
    "LogisticFit",
    "PairedTests",
    "PruningAnalysis",
    "ReceivedAttention",
    "SiblingMatrix",
    "StatsReport",
    "analyze_runs",
    "attention_entropy",
    "auc",
    "bootstrap_ci",
    "bootstrap_t_ci",
    "cohens_kappa",
    "estimate",
    "entropy",
    "export_seed_json",
    "head_specialisation",
    "isolation_check",
    "jensen_shannon",
    "load_attention",
    "conditional_logit",
    "logistic_regression",
    "paired_tests",
    "rank_correlation",
    "parallel_widths",
    "position_effects",
    "pruning_analysis",
    "received_attention",
    "rejudge",
    "repetition_score",
    "run_summary",
    "save_attention",
    "seed_json",
    "sibling_attention",
    "sibling_divergence",
    "top_context",
    "within_group_auc",
]
