from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def default_model():
    from tempo_lens import load_model

    return load_model()


@pytest.fixture(scope="session")
def hf_default():
    from tempo_lens.models.gguf_loader import load_hf_model

    hf, _ = load_hf_model()
    return hf


@pytest.fixture(scope="session")
def gemma_hf():
    from tempo_lens.models.gguf_loader import load_hf_model

    hf, _ = load_hf_model("gemma-3-270m")
    return hf
