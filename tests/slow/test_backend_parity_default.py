"""The experiments on the real default model agree between the two backends.

SmolLM2-135M-Instruct as a ``HookedTransformer`` and as a ``TransformerBridge`` (both on
TransformerLens 3.9), each experiment's ``--quick`` sweep on its first prompt: tables
within 1e-4 (absolute or relative), tokens, decisions and verdicts exactly
(:func:`tests.model.test_backend_parity.assert_tables_agree`). The experiments chosen
cover the backend-specific paths: ``head_ablation`` (``Replay``: a forward from a layer,
the unembedding, ``hook_z`` ablation) and ``findings`` (capture with extra hooks, the
final residual, ``continuation_support``'s ragged KV cache, replays).
"""

from __future__ import annotations

import pytest

from tempo_lens import load_model
from tempo_lens.backends import HAS_HOOKED_TRANSFORMER
from tempo_lens.experiments import spec
from tempo_lens.runner import run_experiment
from tests.model.test_backend_parity import assert_tables_agree

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not HAS_HOOKED_TRANSFORMER, reason="needs TransformerLens 3.x"),
]


@pytest.fixture(scope="module")
def bridge_default():
    return load_model(backend="bridge")


@pytest.mark.parametrize("name", ["head_ablation", "findings"])
def test_quick_tables_agree_on_the_default_model(
    name, default_model, bridge_default, tmp_path
) -> None:
    s = spec(name)
    cfg = s.config(**dict(s.quick))
    prompts = s.prompts(cfg)[:1]
    runs = {}
    for backend, model in (("hooked", default_model), ("bridge", bridge_default)):
        runs[backend] = run_experiment(
            s, cfg, tmp_path / backend, prompts=prompts, model=model, progress=False
        )
    assert all(len(t) for t in runs["hooked"].tables.values())
    assert_tables_agree(runs["hooked"].tables, runs["bridge"].tables)
