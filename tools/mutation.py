"""Mutation testing with mutmut, in a scratch copy of the tree (docs/mutation.md).

The configuration lives in ``pyproject.toml`` (``[tool.mutmut]``: the mechanism, batching,
runner and statistics modules, the fast test tiers). This script copies the tracked and
untracked-but-not-ignored files into a scratch directory (mutmut writes ``mutants/`` next
to the sources and runs pytest there; the shared working tree stays untouched), optionally
narrows the modules and the tests, runs ``mutmut run`` and prints ``mutmut results``.

Usage:
    python tools/mutation.py                        # the configured modules and tests
    python tools/mutation.py --modules tempo_lens/runner/units.py \
        --tests tests/unit/test_runner_bookkeeping.py --max-children 2
    python tools/mutation.py --keep DIR             # keep the scratch copy in DIR

A narrowed run replaces ``only_mutate`` and the test selection in the copy's
``pyproject.toml`` only. Exit status: mutmut's.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [f for f in out.splitlines() if (ROOT / f).is_file()]


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{x}"' for x in items) + "]"


def narrow(pyproject: Path, modules: list[str], tests: list[str], marks: str | None) -> None:
    """Replace ``only_mutate`` / the test selection of ``[tool.mutmut]`` in ``pyproject``."""
    text = pyproject.read_text(encoding="utf-8")
    head, sep, rest = text.partition("[tool.mutmut]")
    if not sep:
        raise SystemExit(f"{pyproject}: no [tool.mutmut] section")
    body, nxt, tail = rest.partition("\n[")
    if modules:
        body = re.sub(
            r"only_mutate = \[.*?\]", f"only_mutate = {_toml_list(modules)}", body, flags=re.S
        )
    if tests or marks:
        args = tests or re.findall(r'"(tests/[^"]+)"', body)
        args = [*args, "-m", marks or "not slow and not browser"]
        body = re.sub(
            r"pytest_add_cli_args_test_selection = \[.*?\]",
            f"pytest_add_cli_args_test_selection = {_toml_list(args)}",
            body,
            flags=re.S,
        )
    pyproject.write_text(head + sep + body + nxt + tail, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Copy the tree, narrow the configuration if asked, run mutmut, print the results."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--modules", nargs="+", default=[], help="only_mutate patterns")
    p.add_argument("--tests", nargs="+", default=[], help="test files/dirs to run")
    p.add_argument("--marks", default=None, help='pytest -m (default "not slow and not browser")')
    p.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    p.add_argument("--keep", type=Path, default=None, help="scratch directory to use and keep")
    args = p.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="tempo-mutmut-"))
    work.mkdir(parents=True, exist_ok=True)
    for f in _files():
        dst = work / f
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dst)
    narrow(work / "pyproject.toml", args.modules, args.tests, args.marks)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    mutmut = [sys.executable, "-m", "mutmut"]
    rc = subprocess.call(
        [*mutmut, "run", "--max-children", str(args.max_children)], cwd=work, env=env
    )
    subprocess.call([*mutmut, "results", "--all", "true"], cwd=work, env=env)
    print(f"scratch copy: {work}", file=sys.stderr)
    if args.keep is None and rc == 0:
        shutil.rmtree(work, ignore_errors=True)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
