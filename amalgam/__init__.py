"""amalgam: merge several task-specific teachers into one customised multi-task student.

The Python API (see :mod:`amalgam.api`)::

    import amalgam

    run = amalgam.build("recipe.yaml", overrides={"train.epochs": 1})
    student, spaces = amalgam.load_student(run.paths["student"])
"""

from __future__ import annotations

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from amalgam.errors import AmalgamError, RecipeError

if _TYPE_CHECKING:  # what type checkers and IDEs read; at run time these load on first use (below)
    from amalgam.api import Run, build, evaluate, export, inspect, load_recipe, load_student, render_report, search
    from amalgam.inspection import Inspection

__version__ = "0.2.0"

# Loaded on first use, so `import amalgam` (and the console script's first lines) do not load torch:
# a Ctrl-C while torch loads can then end as one line.
_LAZY = {
    "Run": "amalgam.api",
    "build": "amalgam.api",
    "evaluate": "amalgam.api",
    "export": "amalgam.api",
    "inspect": "amalgam.api",
    "load_recipe": "amalgam.api",
    "load_student": "amalgam.api",
    "render_report": "amalgam.api",
    "search": "amalgam.api",
    "Inspection": "amalgam.inspection",
}

__all__ = [  # literal, so that linters see the names imported for type checkers above
    "AmalgamError",
    "Inspection",
    "RecipeError",
    "Run",
    "__version__",
    "build",
    "evaluate",
    "export",
    "inspect",
    "load_recipe",
    "load_student",
    "render_report",
    "search",
]


def __getattr__(name: str) -> _Any:
    """The API's names, and the subpackages (``amalgam.kd``, ``amalgam.task``), on first use: `import amalgam`
    used to load them all, and code reaching ``amalgam.task.TASKS`` after it alone keeps working."""
    if name in _LAZY:
        value = getattr(_importlib.import_module(_LAZY[name]), name)
    elif not name.startswith("__"):
        try:
            value = _importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":  # the module exists and lacks one of its own imports
                raise
            raise AttributeError(f"module 'amalgam' has no attribute '{name}'") from None
    else:
        raise AttributeError(f"module 'amalgam' has no attribute '{name}'")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({n for n in globals() if not n.startswith("_") or n == "__version__"} | set(_LAZY))
