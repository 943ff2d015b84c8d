"""amalgam: merge several task-specific teachers into one customised multi-task student.

The Python API (see :mod:`amalgam.api`)::

    import amalgam

    run = amalgam.build("recipe.yaml", overrides={"train.epochs": 1})
    student, spaces = amalgam.load_student(run.paths["student"])
"""

from __future__ import annotations

import importlib
from typing import Any

from amalgam.errors import AmalgamError, RecipeError

__version__ = "0.1.0"

# Loaded on first use, so `import amalgam` (and the console script's first lines) do not load torch:
# a Ctrl-C while torch loads can then end as one line.
_LAZY = {
    "Run": "amalgam.api",
    "build": "amalgam.api",
    "evaluate": "amalgam.api",
    "inspect": "amalgam.api",
    "load_recipe": "amalgam.api",
    "load_student": "amalgam.api",
    "render_report": "amalgam.api",
    "search": "amalgam.api",
    "Inspection": "amalgam.inspection",
}

__all__ = ["AmalgamError", "RecipeError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'amalgam' has no attribute '{name}'")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
