from __future__ import annotations

import pytest

from tempo_lens import make_tiny_model

TINY_VARIANTS = {
    "mha": {},
    "gqa": {"n_key_value_heads": 2},
    "partial_rotary": {"rotary_dim": 8},
    "adjacent_pairs": {"rotary_adjacent_pairs": True},
    "gqa_partial_adjacent": {
        "n_key_value_heads": 2,
        "rotary_dim": 8,
        "rotary_adjacent_pairs": True,
    },
}


@pytest.fixture(params=sorted(TINY_VARIANTS))
def tiny_variant(request: pytest.FixtureRequest):
    return make_tiny_model(**TINY_VARIANTS[request.param])


@pytest.fixture(scope="module")
def tiny():
    return make_tiny_model()
