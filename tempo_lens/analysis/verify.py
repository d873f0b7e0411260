"""``tl.verify(model)``: TEMPO on this model, step by step, against the model's own Hugging Face code.

A fixed battery of TEMPO generations (:data:`CHECKS`) runs on the model with the TEMPO hooks;
every distribution each step selected from is recorded and compared with the same
distribution recomputed by the plain Hugging Face model given explicit ``position_ids`` and
per-layer 4-D masks (:func:`tempo_lens.models.hf_reference.reference_distributions`). The
Hugging Face model is the one a ``TransformerBridge`` wraps (an unwrapped copy), or for a
``HookedTransformer`` one built from the same weights
(:func:`tempo_lens.models.hf_export.hf_causal_lm`).

Before anything runs, the backend's check refuses architectures the hooks cannot express
exactly (:class:`~tempo_lens.NotRotaryError`, :class:`~tempo_lens.UnsupportedAttentionError`,
with the reason).

Examples:
    >>> import tempo_lens as tl
    >>> report = tl.verify(tl.make_tiny_model(n_layers=1), checks=["isolated"], max_steps=2)
    >>> report.ok, report.results[0].name
    (True, 'isolated')
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from tempo_lens.backends import TempoModel, backend_of, check_rotary, model_name
from tempo_lens.config import TempoConfig
from tempo_lens.generation import generate_batch
from tempo_lens.positions import PositionScheme
from tempo_lens.pruning import PruningConfig, RelativeRule
from tempo_lens.trace import Trace

__all__ = [
    "CHECKS",
    "DEFAULT_TOLERANCE",
    "CheckResult",
    "FamilyResult",
    "VerifyReport",
    "verify",
    "verify_family",
]

DEFAULT_TOLERANCE = 1e-4
"""Largest accepted max |Δp| (probability units) between TEMPO and Hugging Face, float32."""

CHECKS: dict[str, str] = {
    "isolated": "isolated sets, shared positions, mixture readout, KV cache",
    "visible": "visible sets (siblings see earlier siblings), last-member readout",
    "fractional": "fractional member offsets (member r at L + s + 0.37 r)",
    "soft-prune": "retroactive soft pruning (relative rule, ratio 0.9)",
    "hard-prune": "retroactive hard pruning (KV cache rebuilt without the pruned tokens)",
    "no-cache": "isolated sets without the KV cache (full forward each step)",
    "ragged-batch": "generate_batch over prompts of different lengths, soft pruning",
}
"""The battery: check name -> what it exercises (every check uses parallel sets of 3)."""


@dataclass
class CheckResult:
    """One check of :func:`verify`.

    Attributes:
        name: A key of :data:`CHECKS`.
        max_abs_dp: Max over steps, rows and vocabulary of |p_TEMPO - p_HF|.
        steps: Distributions compared (all rows).
        parallel_sets: Sets with more than one member.
        pruned: Tokens pruned during the check's generations.
        ok: ``max_abs_dp <= tolerance``.
        seconds: Wall time of the check.
    """

    name: str
    max_abs_dp: float
    steps: int
    parallel_sets: int
    pruned: int
    ok: bool
    seconds: float

    def line(self) -> str:
        """One line: name, max |Δp|, counts, verdict."""
        verdict = "ok" if self.ok else "MISMATCH"
        return (
            f"{self.name:<13} max|dp| {self.max_abs_dp:.2e}  {self.steps:>3} steps  "
            f"{self.parallel_sets:>2} parallel sets  {self.pruned:>2} pruned  {verdict}"
        )


@dataclass
class VerifyReport:
    """What :func:`verify` measured.

    Attributes:
        model: The model's name.
        backend: ``"hooked"`` or ``"bridge"``.
        reference: What the Hugging Face reference is (class, how it was obtained).
        tolerance: The accepted max |Δp|.
        results: One :class:`CheckResult` per check, in battery order.
        versions: ``torch``, ``transformers``, ``transformer-lens``, ``tempo-lens`` versions.
    """

    model: str
    backend: str
    reference: str
    tolerance: float
    results: list[CheckResult] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every check within tolerance."""
        return all(r.ok for r in self.results)

    @property
    def max_abs_dp(self) -> float:
        """The largest max |Δp| over the checks."""
        return max((r.max_abs_dp for r in self.results), default=0.0)

    def lines(self) -> list[str]:
        """A header, one line per check, and the overall verdict."""
        head = (
            f"verify {self.model} ({self.backend}) against {self.reference}; "
            f"tolerance max|dp| <= {self.tolerance:g}"
        )
        tail = "all checks ok" if self.ok else "MISMATCH: TEMPO differs from Hugging Face"
        return [head, *(r.line() for r in self.results), tail]


class _Recorder:
    """A step observer that keeps every distribution a step selected from."""

    def __init__(self) -> None:
        self.dists: list[Tensor] = []

    def fwd_hooks(self, model: TempoModel) -> list[Any]:
        return []

    def begin_step(self, step: int, query_indices: list[int], state: Any) -> None:
        pass

    def end_step(self) -> None:
        pass

    def distribution(self, step: int, dist: Tensor) -> None:
        assert step == len(self.dists)
        self.dists.append(dist.detach().to(torch.float64).cpu())


def _config(name: str, max_steps: int) -> TempoConfig:
    base: dict[str, Any] = dict(
        selection_threshold=1e-9,  # every set is the top 3 (max_parallel), on any model
        max_parallel=3,
        max_steps=max_steps,
        stop_at_eos=False,
        readout="mixture",
    )
    soft = PruningConfig(rule=RelativeRule(ratio=0.9), lookahead=1)
    extra: dict[str, dict[str, Any]] = {
        "isolated": {},
        "visible": dict(isolate=False, readout="last"),
        "fractional": dict(positions=PositionScheme(member_offset=0.37), readout="top"),
        "soft-prune": dict(prune=soft),
        "hard-prune": dict(prune=PruningConfig(rule=RelativeRule(ratio=0.9), mode="hard")),
        "no-cache": dict(use_kv_cache=False),
        "ragged-batch": dict(prune=soft),
    }
    return TempoConfig(**{**base, **extra[name]})


def _default_prompts(model: TempoModel) -> list[Any]:
    if getattr(model, "tokenizer", None) is not None:
        return ["The cat sat on the", "Once upon a time, a small robot"]
    vocab = int(model.cfg.d_vocab)
    return [[(7 * i + 3) % vocab for i in range(5)], [(11 * i + 5) % vocab for i in range(9)]]


def _run_check(
    model: TempoModel, hf: Any, name: str, prompts: list[Any], max_steps: int, tol: float
) -> CheckResult:
    from tempo_lens.models.hf_reference import reference_distributions

    start = time.perf_counter()
    config = _config(name, max_steps)
    rows = prompts if name == "ragged-batch" else prompts[:1]
    recorders = [_Recorder() for _ in rows]
    traces: list[Trace] = generate_batch(model, rows, config, observers=[[r] for r in recorders])
    worst, steps, parallel, pruned = 0.0, 0, 0, 0
    for trace, rec in zip(traces, recorders, strict=True):
        probs = [s.probabilities for s in trace.steps]
        ref = reference_distributions(hf, trace.state, probs, config.readout, len(rec.dists))
        for got, want in zip(rec.dists, ref, strict=True):
            worst = max(worst, float((got - want).abs().max()))
        steps += len(rec.dists)
        parallel += sum(len(s.indices) > 1 for s in trace.steps)
        pruned += sum(p is not None for p in trace.state.pruned_at)
    return CheckResult(
        name=name,
        max_abs_dp=worst,
        steps=steps,
        parallel_sets=parallel,
        pruned=pruned,
        ok=worst <= tol,
        seconds=time.perf_counter() - start,
    )


def verify(
    model: TempoModel,
    *,
    checks: Sequence[str] | None = None,
    prompts: Sequence[Any] | None = None,
    max_steps: int = 6,
    tolerance: float = DEFAULT_TOLERANCE,
    hf_model: Any = None,
) -> VerifyReport:
    """Run the TEMPO battery on ``model`` and compare every step with Hugging Face.

    Args:
        model: A ``HookedTransformer`` or ``TransformerBridge`` (as :func:`tempo_lens.load_model`
            returns), with a tokenizer or taking token ids.
        checks: Names from :data:`CHECKS` (default: all, in order).
        prompts: Two or more prompts (text, or token ids); the first is used by the
            single-row checks, all of them by ``ragged-batch`` (give different lengths).
            Default: two English prompts, or two id lists of lengths 5 and 9.
        max_steps: Steps per generation (each adds a set of 3 tokens).
        tolerance: Largest accepted max |Δp| (probability units).
        hf_model: The Hugging Face reference (default: :func:`tempo_lens.models.hf_export.hf_causal_lm`
            of ``model``; pass one for a ``HookedTransformer`` without an export).

    Returns:
        The :class:`VerifyReport` (``report.ok``, ``report.lines()``).

    Raises:
        NotRotaryError: The model does not use RoPE (or its RoPE depends on the length).
        UnsupportedAttentionError: An attention variant the TEMPO hooks cannot reproduce
            exactly (the message names it). Both are raised before anything runs.
        ValueError: An unknown check, fewer than two prompts for ``ragged-batch``, a bad
            ``max_steps``/``tolerance``, or a ``HookedTransformer`` without a Hugging Face
            export (pass ``hf_model``).
    """
    check_rotary(model)
    names = list(CHECKS) if checks is None else list(checks)
    unknown = [c for c in names if c not in CHECKS]
    if unknown:
        raise ValueError(f"unknown checks {unknown}: choose from {list(CHECKS)}")
    if int(max_steps) < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    rows = list(prompts) if prompts is not None else _default_prompts(model)
    if "ragged-batch" in names and len(rows) < 2:
        raise ValueError("ragged-batch needs at least two prompts")
    if not rows:
        raise ValueError("verify needs at least one prompt")
    from tempo_lens.models.gguf_loader import library_versions

    if hf_model is None:
        from tempo_lens.models.hf_export import hf_causal_lm

        hf_model = hf_causal_lm(model)
        how = (
            "the model the bridge wraps"
            if backend_of(model).name == "bridge"
            else "built from the same weights"
        )
    else:
        how = "given"
    report = VerifyReport(
        model=model_name(model),
        backend=backend_of(model).name,
        reference=f"Hugging Face {type(hf_model).__name__} ({how})",
        tolerance=float(tolerance),
        versions=library_versions(),
    )
    for name in names:
        report.results.append(_run_check(model, hf_model, name, rows, int(max_steps), tolerance))
    return report


@dataclass
class FamilyResult:
    """One row of the architecture matrix (:func:`verify_family`).

    Attributes:
        family: A key of :data:`tempo_lens.models.zoo.ARCHITECTURES`.
        description: What the family's tiny model exercises.
        status: ``"exact"`` (every check within tolerance), ``"mismatch"`` or ``"refused"``.
        reason: The refusal's message (empty otherwise).
        report: The :class:`VerifyReport` (``None`` when refused).
    """

    family: str
    description: str
    status: str
    reason: str = ""
    report: VerifyReport | None = None


def verify_family(
    family: str, *, tokenizer: Any = None, max_steps: int = 3, tolerance: float = 1e-5
) -> FamilyResult:
    """:func:`verify` on the tiny random model of ``family`` behind a ``TransformerBridge``.

    Built with :func:`tempo_lens.models.zoo.tiny_architecture` and loaded with
    ``load_model(hf_model, tokenizer=tokenizer)``; a tokenizer must know the words
    ``t0`` .. ``t63`` (prompts are ``"t3 t10 ..."``), without one prompts are token ids.

    Raises:
        ValueError: an unknown family.
    """
    from tempo_lens.backends import NotRotaryError, UnsupportedAttentionError
    from tempo_lens.models import load_model
    from tempo_lens.models.zoo import ARCHITECTURES, tiny_architecture

    if family not in ARCHITECTURES:
        raise ValueError(f"unknown family {family!r}: choose from {sorted(ARCHITECTURES)}")
    description = ARCHITECTURES[family][0]
    ids = [[(7 * i + 3) % 64 for i in range(5)], [(11 * i + 5) % 64 for i in range(9)]]
    prompts: list[Any] = ids
    if tokenizer is not None:
        prompts = [" ".join(f"t{t}" for t in row) for row in ids]
    try:
        model = load_model(tiny_architecture(family), tokenizer=tokenizer)
        report = verify(model, prompts=prompts, max_steps=max_steps, tolerance=tolerance)
    except (NotRotaryError, UnsupportedAttentionError) as exc:
        return FamilyResult(family, description, "refused", reason=str(exc))
    return FamilyResult(family, description, "exact" if report.ok else "mismatch", report=report)
