"""The pre-registered samples are the stated slices of the packaged suite (docs/preregistration.md)."""

from __future__ import annotations

from collections import defaultdict

import pytest

from tempo_lens.prompts import packaged_prompts


def _by_category_rank() -> dict[tuple[str, int], str]:
    seen: dict[str, int] = defaultdict(int)
    out = {}
    for p in packaged_prompts("suite.csv"):
        out[(p.category, seen[p.category])] = p.id
        seen[p.category] += 1
    return out


@pytest.mark.parametrize(
    ("name", "ranks"), [("research_48.csv", range(4)), ("confirm_48.csv", range(4, 8))]
)
def test_sample_is_the_stated_slice_of_the_suite(name: str, ranks: range) -> None:
    suite = {p.id: p for p in packaged_prompts("suite.csv")}
    sample = packaged_prompts(name)
    rank = _by_category_rank()
    assert len(sample) == 48
    cats = dict.fromkeys(p.category for p in suite.values())
    expected = [rank[(c, r)] for c in cats for r in ranks]
    assert [p.id for p in sample] == expected
    for p in sample:  # same text and category as the suite's prompt of that id
        assert (p.text, p.category) == (suite[p.id].text, suite[p.id].category)


def test_samples_are_disjoint() -> None:
    a = {p.id for p in packaged_prompts("research_48.csv")}
    b = {p.id for p in packaged_prompts("confirm_48.csv")}
    assert not a & b
