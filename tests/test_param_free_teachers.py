"""Teachers without parameters (fixed filters, oracles): shares of their size are 'n/a', never a crash."""

from __future__ import annotations

from amalgam.config.schema import BudgetConfig
from amalgam.inspection import _share
from amalgam.students.budget import budget_warning, resolve_budget


def test_share_of_parameter_free_teachers_is_not_a_division_by_zero():
    assert _share(10, 40) == "25%"
    assert _share(10, 0).startswith("n/a")


def test_default_budget_limits_nothing_when_teachers_have_no_parameters():
    budget = resolve_budget(BudgetConfig(), teacher_params=0)
    assert budget.params is None
    assert budget_warning(budget, params=1_000_000) is None
    assert resolve_budget(BudgetConfig(), teacher_params=1000).params == 500


def test_a_build_from_parameter_free_teachers_alone_runs(fresh_world, tmp_path):
    # the build log's share of the teachers' parameters divided by zero (the plugin docs' Sobel teacher, alone)
    import yaml
    from world import TINY_BUILD

    from amalgam.cli import main

    (fresh_world.parent / "free.py").write_text(
        "from torch import nn\n\n\ndef colours():\n    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())\n"
    )
    raw = yaml.safe_load(fresh_world.read_text())
    raw["teachers"] = {
        "colours": {
            "task": "classification",
            "model": {"from": "python", "factory": "free:colours"},
            "labels": ["red", "green", "blue"],
        }
    }
    raw["data"]["eval"] = {}
    fresh_world.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["build", str(fresh_world), "--output", str(tmp_path / "run"), *TINY_BUILD]) == 0
