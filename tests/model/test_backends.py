"""Which backend tempo_lens uses with the installed TransformerLens (3.x or 4.x).

Runs in both CI environments (marked ``bridge``): on 3.x ``HookedTransformer`` exists and
is the default; on 4.x it does not, ``import tempo_lens`` still works, the offline
models load as a ``TransformerBridge`` and the HookedTransformer-only entry points say so.
"""

from __future__ import annotations

import importlib.metadata

import pytest

import tempo_lens as tl
from tempo_lens import backends as _tl

pytestmark = pytest.mark.bridge

TL_MAJOR = int(importlib.metadata.version("transformer-lens").split(".")[0])


def test_hooked_transformer_presence_follows_the_version() -> None:
    assert (TL_MAJOR < 4) == _tl.HAS_HOOKED_TRANSFORMER


@pytest.mark.skipif(TL_MAJOR < 4, reason="TransformerLens 4.x behaviour")
def test_hooked_only_entry_points_refuse_clearly() -> None:
    with pytest.raises(ImportError, match="TransformerLens 4.x removed"):
        tl.make_tiny_model()
    with pytest.raises(ValueError, match="backend='hooked' needs a HookedTransformer"):
        tl.load_model(backend="hooked")


def test_non_models_are_refused() -> None:
    with pytest.raises(TypeError, match="a HookedTransformer or a TransformerBridge, got object"):
        tl.load_model(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="HookedTransformer or TransformerBridge"):
        tl.generate(object(), [1, 2, 3])  # type: ignore[arg-type]
