"""The pre-registered decision rules of the findings experiment (``docs/findings.md``).

Pure functions from a CI (or a check) to a verdict: ``"supported"``, ``"refuted"``,
``"inconclusive"``, or ``"insufficient"`` when fewer than :data:`MIN_PROMPTS` prompts entered
(shown in the tables since issue 23; it was folded into "inconclusive" before). They were written, with the rules table of ``docs/findings.md``, before
any number of the default model existed; ``findings.summarize`` applies them and nothing
else decides a verdict.

Examples:
    >>> interval((0.45, 0.55), 0.4, 0.6)
    'supported'
    >>> direction((-0.3, -0.1), sign=-1, margin=0.05)
    'supported'
    >>> direction((-0.01, 0.02), sign=-1, margin=0.05)
    'refuted'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

__all__ = [
    "MIN_PROMPTS",
    "Verdict",
    "combined",
    "composite",
    "direction",
    "exact",
    "head_range",
    "interval",
    "roles",
    "specialised",
]

Verdict = Literal["supported", "refuted", "inconclusive", "insufficient"]
MIN_PROMPTS = 10
"""Fewer prompts than this entering an estimate -> ``insufficient``."""


def _bad(ci: Sequence[float], n: int | None) -> Verdict | None:
    """``insufficient`` (too few prompts) or ``inconclusive`` (no finite CI), else None."""
    if n is not None and n < MIN_PROMPTS:
        return "insufficient"
    return None if all(math.isfinite(x) for x in ci) else "inconclusive"


def interval(ci: Sequence[float], a: float, b: float, n: int | None = None) -> Verdict:
    """Supported if the CI lies inside ``[a, b]``; refuted if it lies entirely outside."""
    if a > b:
        raise ValueError(f"interval bounds must satisfy a <= b, got [{a}, {b}]")
    if bad := _bad(ci, n):
        return bad
    lo, hi = ci
    if a <= lo and hi <= b:
        return "supported"
    if hi < a or lo > b:
        return "refuted"
    return "inconclusive"


def direction(ci: Sequence[float], *, sign: int, margin: float, n: int | None = None) -> Verdict:
    """The verdict on a directional claim from a confidence interval.

    Supported if the CI lies on the claimed side of 0 (``sign`` -1: below, +1: above);
    refuted if it lies on the other side or inside ``[-margin, margin]`` (negligible; this
    wins over "supported").
    """
    if sign not in (-1, 1):
        raise ValueError(f"sign must be -1 or +1, got {sign}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if bad := _bad(ci, n):
        return bad
    if -margin <= ci[0] and ci[1] <= margin:
        return "refuted"  # negligible, even if it excludes 0
    lo, hi = sorted((ci[0] * sign, ci[1] * sign))  # the claimed side is now "> 0"
    if lo > 0:
        return "supported"
    return "refuted" if hi < 0 else "inconclusive"


def exact(n_ok: int, n_checked: int) -> Verdict:
    """Supported if every checked unit passed; refuted if any failed (none: inconclusive)."""
    if n_checked == 0:
        return "inconclusive"
    return "supported" if n_ok == n_checked else "refuted"


def composite(parts: Sequence[Verdict]) -> Verdict:
    """Supported if every part is; refuted if any part is; else insufficient or inconclusive.

    Insufficient when a part is (too few prompts), otherwise inconclusive.
    """
    if any(p == "refuted" for p in parts):
        return "refuted"
    if parts and all(p == "supported" for p in parts):
        return "supported"
    return "insufficient" if "insufficient" in parts else "inconclusive"


def head_range(min_ci: Sequence[float], max_ci: Sequence[float], n: int | None = None) -> Verdict:
    """Claim 3.h: min's CI in [0.30, 0.50] and max's CI in [0.91, 1.51] (seed 0.40-1.21)."""
    a, b = interval(min_ci, 0.30, 0.50, n), interval(max_ci, 0.91, 1.51, n)
    return composite([a, b])


def roles(cis: Sequence[Sequence[float]], n: int | None = None, floor: float = 0.05) -> Verdict:
    """Claim 4: every role's CI low > ``floor`` -> supported; any CI high < floor -> refuted."""
    if not cis:
        return "inconclusive"
    for ci in cis:
        if bad := _bad(ci, n):
            return bad
    if any(ci[1] < floor for ci in cis):
        return "refuted"
    if all(ci[0] > floor for ci in cis):
        return "supported"
    return "inconclusive"


def specialised(n_special: int, n_heads: int, share: float = 0.05) -> Verdict:
    """Claim 4.par: >= ``share`` of heads specialised -> supported; none -> refuted."""
    if n_heads <= 0:
        return "inconclusive"
    if n_special == 0:
        return "refuted"
    return "supported" if n_special / n_heads >= share else "inconclusive"


def combined(verdicts: dict[str, str]) -> str:
    """The combined verdict of one claim across model families (issue 23's amendment).

    ``verdicts`` maps a model's name to its verdict. Supported (refuted) on every model ->
    ``"supported (both families)"`` (``"refuted (...)"``); supported on one and refuted on
    another -> ``"model-specific"``; decided on some and undecided (inconclusive or
    insufficient) on the others -> ``"<verdict> on <models> only (not replicated)"``;
    decided on none -> ``"inconclusive"``. Written before the two-family run.

    Examples:
        >>> combined({"a": "supported", "b": "supported"})
        'supported (both families)'
        >>> combined({"a": "supported", "b": "refuted"})
        'model-specific'
        >>> combined({"a": "refuted", "b": "insufficient"})
        'refuted on a only (not replicated)'
        >>> combined({"a": "inconclusive", "b": "insufficient"})
        'inconclusive'
    """
    if len(verdicts) < 2:
        raise ValueError(f"a combined verdict needs >= 2 models, got {sorted(verdicts)}")
    decided = {m: v for m, v in verdicts.items() if v in ("supported", "refuted")}
    kinds = set(decided.values())
    if not decided:
        return "inconclusive"
    if len(kinds) > 1:
        return "model-specific"
    (kind,) = kinds
    if len(decided) == len(verdicts):
        return f"{kind} (both families)" if len(verdicts) == 2 else f"{kind} (all families)"
    return f"{kind} on {', '.join(decided)} only (not replicated)"
