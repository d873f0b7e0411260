r"""Findings of several model families side by side, with the combined verdict per claim.

Reads each family's ``claims.csv`` (a findings run or a directory of record) and lays the
claims out per row: estimate [95% CI], n and verdict per model, then the combined verdict
(:func:`tempo_lens.experiments.findings_rules.combined`, pre-registered in
``docs/findings.md``). ``docs/findings.md`` embeds the table between the markers
``<!-- families:start -->`` and ``<!-- families:end -->``; a test rebuilds it from the
committed ``claims.csv`` files.

Example::

    tempo-lens findings-families --run SmolLM2-135M-Instruct=docs/results/findings/smollm2 \
        --run "Gemma 3 270M=docs/results/findings/gemma3" --update docs/findings.md
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from tempo_lens.experiments.findings_rules import combined
from tempo_lens.io import atomic_write_text

__all__ = ["END", "START", "families_markdown", "families_table", "main", "update_doc"]

START, END = "<!-- families:start -->", "<!-- families:end -->"
SETTINGS_OF_THE_MODEL = ("model", "tiny", "device", "max_rows")
"""Config fields that may differ between the runs compared (everything else must match)."""


def _num(x: object, digits: int = 3) -> str:
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""
    return f"{v:.{digits}g}" if math.isfinite(v) else ""


def families_table(runs: Mapping[str, str | Path]) -> pd.DataFrame:
    """One row per claim: ``claim, statement``, per model ``<name>: cell`` and ``verdict``.

    Claims are in the first model's order; a claim a model lacks is ``"not run"`` there.

    Raises:
        ValueError: fewer than two runs, two names for one directory, or two runs whose
            manifests differ in a setting other than the model's
            (:data:`SETTINGS_OF_THE_MODEL`).
        FileNotFoundError: a run has no ``claims.csv``.
    """
    if len(runs) < 2:
        raise ValueError(f"need >= 2 runs, got {list(runs)}")
    dirs = [Path(d).resolve() for d in runs.values()]
    if len(set(dirs)) < len(dirs):
        raise ValueError(f"the runs must be different directories, got {list(runs.values())}")
    claims, configs = {}, {}
    for name, d in runs.items():
        path = Path(d) / "claims.csv"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist (model {name!r})")
        claims[name] = pd.read_csv(path, dtype={"claim": str}).set_index("claim")
        man = Path(d) / "manifest.json"
        if man.is_file():
            cfg = json.loads(man.read_text(encoding="utf-8")).get("config", {})
            configs[name] = {k: v for k, v in cfg.items() if k not in SETTINGS_OF_THE_MODEL}
    if len(configs) > 1:
        first, *rest = configs.items()
        for name, cfg in rest:
            diff = sorted(k for k in set(cfg) | set(first[1]) if cfg.get(k) != first[1].get(k))
            if diff:
                raise ValueError(
                    f"runs {first[0]!r} and {name!r} differ in {', '.join(diff)}: their claims "
                    "measure different things"
                )
    order = list(dict.fromkeys(c for df in claims.values() for c in df.index))
    rows = []
    for claim in order:
        row: dict[str, str] = {"claim": claim}
        verdicts = {}
        for name, df in claims.items():
            if claim not in df.index:
                row[name], verdicts[name] = "not run", "insufficient"
                continue
            r = df.loc[claim]
            row.setdefault("statement", str(r["statement"]))
            est, lo, hi = _num(r["estimate"]), _num(r["ci_low"]), _num(r["ci_high"])
            ci = f" [{lo}, {hi}]" if lo or hi else ""
            n = _num(r["n_prompts"], 6)
            row[name] = (
                f"{est}{ci} (n {n}) **{r['verdict']}**" if est else f"(n {n}) **{r['verdict']}**"
            )
            verdicts[name] = str(r["verdict"])
        row["combined"] = combined(verdicts)
        rows.append(row)
    return pd.DataFrame(rows, columns=["claim", "statement", *claims, "combined"])


def families_markdown(table: pd.DataFrame) -> str:
    """The table as Markdown (claim | statement | each model | combined verdict)."""
    models = [c for c in table.columns if c not in ("claim", "statement", "combined")]
    lines = [
        "| id | statement | " + " | ".join(models) + " | combined verdict |",
        "|---|---|" + "---|" * len(models) + "---|",
    ]
    for _, r in table.iterrows():
        cells = " | ".join(str(r[m]) for m in models)
        lines.append(f"| {r['claim']} | {r['statement']} | {cells} | **{r['combined']}** |")
    return "\n".join(lines)


def update_doc(doc: str | Path, markdown: str) -> bool:
    """Replace the text between :data:`START` and :data:`END` in ``doc``; True if it changed.

    Raises:
        ValueError: ``doc`` lacks the markers.
    """
    path = Path(doc)
    text = path.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise ValueError(f"{path} has no {START} ... {END} block")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{markdown}\n{END}{tail}"
    if new != text:
        atomic_write_text(path, new)
    return new != text


def main(argv: Sequence[str] | None = None) -> int:
    """``tempo-lens findings-families``: the side-by-side table; 0 on success."""
    p = argparse.ArgumentParser(
        prog="tempo-lens findings-families",
        description="Findings of several models side by side with the combined verdict.",
    )
    p.add_argument(
        "--run",
        action="append",
        required=True,
        metavar="NAME=DIR",
        help="a model's name and its findings directory (give two or more)",
    )
    p.add_argument("--update", metavar="DOC", help="write the table into DOC between the markers")
    args = p.parse_args(argv)
    runs = {}
    for item in args.run:
        name, sep, d = item.partition("=")
        if not sep or not name or not d:
            p.error(f"--run must be NAME=DIR, got {item!r}")
        if name in runs:
            p.error(f"--run names must differ, got {name!r} twice")
        if "|" in name:
            p.error(f"--run NAME must not contain '|' (a Markdown table cell), got {name!r}")
        runs[name] = d
    try:
        md = families_markdown(families_table(runs))
        if args.update:
            update_doc(args.update, md)
    except (ValueError, FileNotFoundError) as e:
        p.error(str(e))
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
