"""Issue 28: the architecture matrix — every rotary family the bridge loads is exact or refused.

Each family's tiny random model (:mod:`tempo_lens.models.zoo`, built offline from its
``transformers`` config class, loaded with ``tl.load_model(hf_model, tokenizer=...)`` and
the word-level tokenizer fixture) goes through :func:`tempo_lens.verify`: exact means every
check of the battery within max |Δp| <= 1e-5 of the model's own Hugging Face forward;
refused means an up-front ``UnsupportedAttentionError`` with the reason below.
``docs/models.md``'s architecture matrix is written from the same function
(``tools/model_matrix.py``) and checked against this table here.
"""

from __future__ import annotations

import importlib.metadata
import pathlib
import re

import pytest

from tempo_lens.analysis.verify import verify_family
from tempo_lens.models.zoo import ARCHITECTURES
from tests.tokenizer_fixtures import word_tokenizer

pytestmark = [
    pytest.mark.bridge,
    pytest.mark.skipif(
        int(importlib.metadata.version("transformer-lens").split(".")[0]) < 4,
        reason="the matrix is measured on the TransformerLens 4.x bridge (docs/models.md)",
    ),
]

TOLERANCE = 1e-5
REFUSED = {
    "phi3": "never fires",  # TL 4.3's joint-QKV attention bypasses hook_rot_q/k
    "gpt-neox": "never fires",
    "gpt-j": "never fires",
    "codegen": "forward fails",  # TL 4.3's CodeGen attention: no embed_positions
    "llama4": "no_rope_layers",
    "deepseek-v3": "latent attention",
    "gpt2": "rotary",  # NotRotaryError: learned positions
    "bloom": "rotary",  # NotRotaryError: ALiBi
}
EXACT = sorted(set(ARCHITECTURES) - set(REFUSED))


def test_at_least_ten_exact_families() -> None:
    assert len(EXACT) >= 10 and len(ARCHITECTURES) >= 20


@pytest.mark.parametrize("family", sorted(ARCHITECTURES))
def test_family_is_exact_or_refused(family: str) -> None:
    result = verify_family(family, tokenizer=word_tokenizer(), tolerance=TOLERANCE)
    if family in REFUSED:
        assert result.status == "refused" and REFUSED[family] in result.reason, result
        return
    assert result.status == "exact", result.report.lines() if result.report else result
    assert all(r.parallel_sets > 0 for r in result.report.results)


def test_docs_matrix_lists_every_family_with_its_status() -> None:
    text = (pathlib.Path(__file__).parents[2] / "docs" / "models.md").read_text()
    block = text.split("<!-- arch-matrix:begin -->")[1].split("<!-- arch-matrix:end -->")[0]
    rows = {
        m.group(1): m.group(2) for m in re.finditer(r"^\| `([^`]+)` \|[^|]*\| (\w+)", block, re.M)
    }
    assert rows == {f: ("refused" if f in REFUSED else "exact") for f in ARCHITECTURES}
