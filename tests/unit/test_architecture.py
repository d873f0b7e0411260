"""The house plan (docs/architecture.md): wings, layering, no cycles, a stable surface.

The layering itself is the ``import-linter`` contract in ``pyproject.toml`` (``lint-imports``
in the README's test command); these tests pin what that tool does not: no import cycles
(function-level imports counted), the ground floor's contents, the public surface, and
one script per experiment.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

import tempo_lens

ROOT = Path(tempo_lens.__file__).resolve().parent.parent

VOCABULARY = {
    "_numbers",
    "config",
    "io",
    "isolation",
    "layout",
    "masks",
    "positions",
    "prompts",
    "pruning",
    "rope",
    "schedules",
    "selection",
    "state",
    "trace",
}
WINGS = {
    "analysis",
    "backends",
    "cli",
    "display",
    "experiments",
    "generation",
    "hooks",
    "models",
    "runner",
}

PUBLIC = [
    "verify",
    "VerifyReport",
    "AbsoluteRule",
    "AttentionCapture",
    "AttentionData",
    "AttentionRecorder",
    "DEFAULT_MODEL",
    "HookConflictError",
    "NotRotaryError",
    "PositionScheme",
    "ProbabilityRatioRule",
    "PruningConfig",
    "RelativeRule",
    "Selection",
    "SequenceState",
    "StateMismatchError",
    "StepObserver",
    "TempoConfig",
    "TempoHooks",
    "ThresholdSchedule",
    "TokenInfo",
    "Trace",
    "UnsupportedAttentionError",
    "__version__",
    "attach",
    "beam_search",
    "tree_beam_search",
    "tree_speculative",
    "TreeBeamResult",
    "TreeSpecResult",
    "disable_fast_path",
    "enable_fast_path",
    "fast_path_status",
    "fast_weights",
    "generate",
    "generate_batch",
    "greedy",
    "load_model",
    "logical_positions",
    "make_tiny_model",
    "sample",
    "select",
    "tempo_fwd_hooks",
]

# Module paths the docs, README and notebooks use (each must import, with these names).
DOCUMENTED = {
    "tempo_lens.analysis": ["estimate", "paired_tests", "received_attention"],
    "tempo_lens.analysis.run": ["analyze_prompt", "analyze_data"],
    "tempo_lens.analysis.stats": [],
    "tempo_lens.analysis.steps": [],
    "tempo_lens.analysis.paths": [],
    "tempo_lens.analysis.teacher_forced": [],
    "tempo_lens.display": ["render_run", "token_labels"],
    "tempo_lens.display.figures": ["png_bytes"],
    "tempo_lens.display.tree": [],
    "tempo_lens.display.report": [],
    "tempo_lens.display.cv": [],
    "tempo_lens.display.ascii": [],
    "tempo_lens.experiments": ["available", "spec"],
    "tempo_lens.runner": ["run_experiment", "run_cli", "ExperimentSpec", "summarize_only"],
    "tempo_lens.backends": ["backend_of", "forward", "make_kv_cache", "hook_name"],
    "tempo_lens.hooks.capture": ["AttentionCapture"],
    "tempo_lens.hooks.interventions": ["path_patching"],
    "tempo_lens.models.gguf_loader": ["load_hf_model"],
    "tempo_lens.models.hf_export": ["hf_llama_from_hooked"],
    "tempo_lens.backends.fast": ["fast_weights"],
    "tempo_lens.prompts": ["packaged_prompts", "read_prompts"],
    "tempo_lens.io": ["atomic_write_json", "jsonable"],
}


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph("tempo_lens", exclude_type_checking_imports=True)


def _strongly_connected(graph: grimp.ImportGraph) -> list[set[str]]:
    """Tarjan's algorithm over the module graph; components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return out


def test_no_import_cycles_counting_function_level_imports() -> None:
    graph = _graph()
    assert len(graph.modules) > 100
    assert _strongly_connected(graph) == []


def test_a_planted_cycle_is_found() -> None:
    """The cycle finder itself: an edge back from the vocabulary closes a cycle."""
    graph = _graph()
    graph.add_import(importer="tempo_lens.positions", imported="tempo_lens.state")
    comps = _strongly_connected(graph)
    assert any({"tempo_lens.positions", "tempo_lens.state"} <= c for c in comps)


def test_ground_floor_holds_the_vocabulary_and_the_wings_are_packages() -> None:
    pkg = ROOT / "tempo_lens"
    modules = {p.stem for p in pkg.glob("*.py")} - {"__init__"}
    packages = {p.name for p in pkg.iterdir() if (p / "__init__.py").is_file()}
    assert modules == VOCABULARY - {"prompts"}
    assert packages == WINGS | {"prompts"}


@pytest.mark.parametrize("module", sorted(VOCABULARY))
def test_vocabulary_imports_no_model_library(module: str) -> None:
    code = (
        f"import sys, tempo_lens.{module}; "
        "bad = [m for m in ('transformer_lens', 'transformers') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_public_surface_is_pinned() -> None:
    assert sorted(tempo_lens.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert getattr(tempo_lens, name) is not None
    assert set(dir(tempo_lens)) >= set(PUBLIC)
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        tempo_lens.nonexistent  # noqa: B018


@pytest.mark.parametrize("module", sorted(DOCUMENTED))
def test_documented_import_paths(module: str) -> None:
    mod = importlib.import_module(module)
    for name in DOCUMENTED[module]:
        assert hasattr(mod, name), f"{module}.{name}"


def test_one_script_per_experiment() -> None:
    from tempo_lens.experiments import available

    scripts = {p.stem for p in (ROOT / "experiments").glob("*.py")}
    tools = {"run_attention_analysis", "statistical_confidence_analysis"}  # CLI wrappers
    assert scripts - tools == set(available())


def test_module_size_budget_needs_a_reason() -> None:
    """A soft budget: a module past ~500 lines says why in its docstring ("Size:")."""
    for path in (ROOT / "tempo_lens").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > 500:
            doc = text.split('"""')[1] if text.startswith('"""') else ""
            assert "Size:" in doc, f"{path} is over 500 lines without a reason in its docstring"


def test_architecture_doc_graph_is_current() -> None:
    res = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "make_architecture.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr
