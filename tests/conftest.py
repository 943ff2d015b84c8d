"""Shared fixtures: a tiny world (tests/world.py) and one finished build of it, both per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from world import TINY_BUILD, make_world  # noqa: E402

# Tensors in tests are tiny: one intra-op thread is fastest, and on a busy 2-core machine
# OpenMP threads spinning against each other made single forward passes 10-50x slower.
torch.set_num_threads(1)

# The suite trains in fp32 on every host (train.precision: auto picks bf16 on CPUs with AMX), so its
# tolerances mean the same everywhere; tests/test_precision.py sets the units it tests.
from amalgam.training import runtime  # noqa: E402


def _fp32_everywhere() -> str:
    return ""


_fp32_everywhere.host = runtime.cpu_bf16_units  # the real detection, for its own test
runtime.cpu_bf16_units = _fp32_everywhere


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Path:
    """recipe.yaml of a tiny world shared by the session: treat it as read-only."""
    return make_world(tmp_path_factory.mktemp("world"))


@pytest.fixture
def fresh_world(tmp_path) -> Path:
    """recipe.yaml of a tiny world of this test's own (free to edit)."""
    return make_world(tmp_path)


@pytest.fixture(scope="session")
def built_run(world, tmp_path_factory) -> Path:
    """Run folder of one `amalgam build` of the session world (1 epoch, 8 images)."""
    from amalgam.cli import main

    out = tmp_path_factory.mktemp("built") / "run"
    assert main(["build", str(world), "--output", str(out), *TINY_BUILD]) == 0
    return out


@pytest.fixture(scope="session")
def world_plan(world):
    """The prepared plan (teachers loaded, data scanned) of the session world."""
    from amalgam.config.recipe import load_recipe
    from amalgam.distill.plan import build_plan

    return build_plan(load_recipe(world), log=lambda msg: None)
