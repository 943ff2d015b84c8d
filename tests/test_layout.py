"""The 0.2 layout: old module paths still import (with a DeprecationWarning) and name the same objects."""

from __future__ import annotations

import importlib
import sys

import pytest


@pytest.mark.parametrize(
    "old, new, name",
    [
        ("amalgam.serialize", "amalgam.students.serialize", "load_student"),
        ("amalgam.subteachers", "amalgam.teachers.subteachers", "SUBTEACHERS"),
    ],
)
def test_old_module_paths_warn_and_alias(old, new, name):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=new):
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)
