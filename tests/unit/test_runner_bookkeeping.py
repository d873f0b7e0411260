"""The runner's bookkeeping without a model: unit seeds and resume (issue 27).

A toy experiment whose units record the random numbers they draw: every unit of a sweep
must get its own seed (derived from the sweep's seed and the unit's key), and a resumed
sweep must re-run exactly the units whose result file is missing, also when one unit's key
is a prefix of another's (``tau=0.1`` and ``tau=0.15``).
"""

from __future__ import annotations

import hashlib
import itertools
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tempo_lens.prompts import prompts_from_texts
from tempo_lens.runner import ExperimentSpec, RunConfig, Unit, run_experiment, unit_seed
from tempo_lens.runner.store import summarize_only

TAUS = (0.1, 0.15, 0.2)  # keys p000__tau=0.1 and p000__tau=0.15: one a prefix of the other
RAN: list[str] = []  # keys of the units run in this process, in order


@dataclass(frozen=True, kw_only=True)
class Config(RunConfig):
    taus: tuple[float, ...] = TAUS


def _run_unit(cfg: Config, model: object, unit: Unit) -> dict[str, list[dict[str, object]]]:
    RAN.append(unit.key)
    draws = {
        "torch": float(torch.rand(1)),
        "numpy": float(np.random.rand()),
        "random": random.random(),
    }
    return {"runs": [{"tau_run": unit.condition["tau"], **draws}]}


def _summarize(cfg: Config, tables: dict[str, pd.DataFrame], out: Path) -> str:
    return f"{len(tables.get('runs', []))} rows"


SPEC = ExperimentSpec(
    name="toy_bookkeeping",
    config=Config,
    run_unit=_run_unit,
    summarize=_summarize,
    description="toy",
    conditions=lambda cfg: [{"tau": t} for t in cfg.taus],
    module=__name__,
)
PROMPTS = prompts_from_texts(["1 2 3", "4 5 6"])


def _run(out: Path, **kw):
    RAN.clear()
    kw = {"model": object(), "progress": False, "prompts": PROMPTS, **kw}
    return run_experiment(SPEC, Config(), out, **kw)


# ---------------------------------------------------------------------------- seeds
def test_unit_seeds_are_pairwise_distinct_and_depend_on_the_key() -> None:
    keys = [f"p{p:03d}__tau={t}" for p in range(3) for t in TAUS]
    seeds = {(s, k): unit_seed(s, k) for s in (0, 1, 7) for k in keys}
    assert len(set(seeds.values())) == len(seeds)  # every pair, not only neighbours
    for s in (0, 1, 7):  # the key alone changes the seed
        assert len({unit_seed(s, k) for k in keys}) == len(keys)
    # the documented formula, as an independent reference
    want = int.from_bytes(hashlib.sha256(b"0:p000__tau=0.1").digest()[:4], "big") >> 1
    assert unit_seed(0, "p000__tau=0.1") == want
    assert unit_seed(0, "p000__tau=0.1") == unit_seed(0, "p000__tau=0.1")


def test_every_unit_of_a_sweep_draws_its_own_random_numbers(tmp_path) -> None:
    res = _run(tmp_path)
    runs = res.tables["runs"]
    assert len(runs) == len(PROMPTS) * len(TAUS)
    for lib in ("torch", "numpy", "random"):
        assert runs[lib].nunique() == len(runs), f"{lib}: units share a seed"
    # each unit's draws are those of its own seed (recorded in its unit file)
    for unit in SPEC.units(Config(), PROMPTS):
        row = runs[(runs["prompt_id"] == unit.prompt.id) & (runs["tau"] == unit.condition["tau"])]
        random.seed(unit_seed(0, unit.key))
        assert row["random"].item() == random.random()


# ---------------------------------------------------------------------------- resume
@pytest.mark.parametrize("missing", ["p000__tau=0.1", "p001__tau=0.1", "p000__tau=0.15"])
def test_resume_reruns_a_unit_whose_key_prefixes_a_finished_ones(tmp_path, missing) -> None:
    full = _run(tmp_path)
    assert sorted(RAN) == sorted(u.key for u in SPEC.units(Config(), PROMPTS))
    (tmp_path / "units" / f"{missing}.json").unlink()
    partial = summarize_only(SPEC, tmp_path)
    assert partial.n_skipped == len(RAN) - 1  # finished units counted: not the missing one
    assert len(partial.tables["runs"]) == len(RAN) - 1
    again = _run(tmp_path)
    assert [missing] == RAN  # exactly the missing unit re-ran
    assert again.n_skipped == again.n_units - 1
    assert (tmp_path / "units" / f"{missing}.json").is_file()
    pd.testing.assert_frame_equal(again.tables["runs"], full.tables["runs"])


def test_a_limited_run_resumes_the_prefix_keyed_units(tmp_path) -> None:
    """Only ``tau=0.15`` finished (a sweep over 0.15 alone would write the same file)."""
    cfg15 = Config(taus=(0.15,))
    first = run_experiment(
        SPEC, cfg15, tmp_path / "a", model=object(), progress=False, prompts=PROMPTS
    )
    assert first.n_units == 2
    # copy the finished 0.15 units into a sweep over 0.1 and 0.15 (same seeds: same keys)
    out = tmp_path / "b"
    (out / "units").mkdir(parents=True)
    for p in (tmp_path / "a" / "units").iterdir():
        (out / "units" / p.name).write_bytes(p.read_bytes())
    RAN.clear()
    res = run_experiment(
        SPEC, Config(taus=(0.1, 0.15)), out, model=object(), progress=False, prompts=PROMPTS
    )
    assert sorted(RAN) == ["p000__tau=0.1", "p001__tau=0.1"]
    assert res.n_skipped == 2 and len(res.tables["runs"]) == 4


def test_the_toy_keys_are_prefixes() -> None:
    keys = [u.key for u in SPEC.units(Config(), PROMPTS)]
    assert any(a != b and b.startswith(a) for a, b in itertools.permutations(keys, 2))
