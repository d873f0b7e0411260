"""Regenerate the import graph of docs/architecture.md (between its graph markers).

    python docs/make_architecture.py          # rewrite the section in place
    python docs/make_architecture.py --check  # exit 1 if the committed section is stale

The graph is read by grimp (import-linter's own graph builder), counting imports inside
functions and leaving out ``if TYPE_CHECKING:`` imports, and summarised per wing: which
wing imports which, with the number of module-level import edges.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import grimp

DOC = Path(__file__).with_name("architecture.md")
BEGIN, END = "<!-- graph:begin -->", "<!-- graph:end -->"
ORDER = [
    "cli",
    "experiments",
    "runner",
    "display",
    "analysis",
    "generation",
    "hooks",
    "models",
    "backends",
    "vocabulary",
]
WINGS = set(ORDER) - {"vocabulary"}


def wing(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "(root)"
    return parts[1] if parts[1] in WINGS else "vocabulary"


def section() -> str:
    graph = grimp.build_graph("tempo_lens", exclude_type_checking_imports=True)
    edges: Counter[tuple[str, str]] = Counter()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            a, b = wing(module), wing(imported)
            if a != b and "(root)" not in (a, b):
                edges[a, b] += 1
    lines = [
        f"{len(graph.modules)} modules; an arrow is 'imports', with the number of",
        "module-to-module import edges (function-level imports included).",
        "",
        "```text",
    ]
    for a in ORDER:
        targets = [f"{b} ({edges[a, b]})" for b in ORDER if edges[a, b]]
        lines.append(f"{a:<12} -> " + (", ".join(targets) if targets else "(nothing)"))
    lines.append("```")
    upward = [
        (a, b) for (a, b) in edges if ORDER.index(a) > ORDER.index(b)
    ]  # a lower wing importing a higher one
    lines += ["", f"Imports that run upward: {len(upward)}."]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    text = DOC.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{section()}\n{END}{tail}"
    if "--check" in argv:
        if new != text:
            print("docs/architecture.md: the import graph is stale; run docs/make_architecture.py")
            return 1
        return 0
    DOC.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
