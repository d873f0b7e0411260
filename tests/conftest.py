"""Shared fixtures. Tiers: tests/unit (no model), tests/model (tiny random model),
tests/slow (the real default model; skip locally with ``-m "not slow"``)."""

from __future__ import annotations

import pathlib

import pytest
import torch

SLOW_DIR = pathlib.Path(__file__).parent / "slow"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_DIR in pathlib.Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)
