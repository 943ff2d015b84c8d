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
