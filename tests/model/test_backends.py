"""Which backend tempo_lens uses with the installed TransformerLens (3.x or 4.x).

Runs in both CI environments (marked ``bridge``): on 3.x ``HookedTransformer`` exists and
is the default; on 4.x it does not, ``import tempo_lens`` still works, the offline
models load as a ``TransformerBridge`` and the HookedTransformer-only entry points say so.
"""

from __future__ import annotations

import importlib.metadata

import pytest
import torch

import tempo_lens as tl
from tempo_lens import backends as _tl

pytestmark = pytest.mark.bridge

TL_MAJOR = int(importlib.metadata.version("transformer-lens").split(".")[0])


def test_hooked_transformer_presence_follows_the_version() -> None:
    assert (TL_MAJOR < 4) == _tl.HAS_HOOKED_TRANSFORMER


@pytest.mark.skipif(TL_MAJOR < 4, reason="TransformerLens 4.x behaviour")
def test_hooked_only_entry_points_refuse_clearly() -> None:
    with pytest.raises(ValueError, match="backend='hooked' needs a HookedTransformer"):
        tl.make_tiny_model(backend="hooked")
    with pytest.raises(ValueError, match="backend='hooked' needs a HookedTransformer"):
        tl.load_model(backend="hooked")


def test_tiny_model_default_backend_follows_the_version() -> None:
    """make_tiny_model() works on both lines: a HookedTransformer on 3.x, a bridge on 4.x."""
    model = tl.make_tiny_model()
    assert _tl.backend_of(model).name == ("hooked" if TL_MAJOR < 4 else "bridge")
    assert model.tokenizer is None


def test_tiny_bridge_is_seeded_and_runs_tempo() -> None:
    a, b = tl.make_tiny_model(backend="bridge"), tl.make_tiny_model(backend="bridge")
    assert _tl.backend_of(a).name == "bridge"
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    other = tl.make_tiny_model(backend="bridge", seed=1)
    assert not all(
        torch.equal(pa, pc) for pa, pc in zip(a.parameters(), other.parameters(), strict=True)
    )
    trace = tl.generate(a, [3, 14, 15], tl.TempoConfig(selection_threshold=0.05, max_steps=4))
    assert trace.steps and trace.prompt == [3, 14, 15]
    with pytest.raises(ValueError, match="window_size need backend='hooked'"):
        tl.make_tiny_model(backend="bridge", window_size=4)


def test_non_models_are_refused() -> None:
    with pytest.raises(TypeError, match="a HookedTransformer or a TransformerBridge, got object"):
        tl.load_model(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="HookedTransformer or TransformerBridge"):
        tl.generate(object(), [1, 2, 3])  # type: ignore[arg-type]
