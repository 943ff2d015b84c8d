"""amalgam: merge several task-specific teachers into one customised multi-task student.

The Python API (see :mod:`amalgam.api`)::

    import amalgam

    run = amalgam.build("recipe.yaml", overrides={"train.epochs": 1})
    student, spaces = amalgam.load_student(run.paths["student"])
"""

from amalgam.api import Run, build, evaluate, inspect, load_recipe, load_student, render_report, search
from amalgam.errors import AmalgamError, RecipeError
from amalgam.inspection import Inspection

__version__ = "0.1.0"
__all__ = [
    "AmalgamError",
    "Inspection",
    "RecipeError",
    "Run",
    "__version__",
    "build",
    "evaluate",
    "inspect",
    "load_recipe",
    "load_student",
    "render_report",
    "search",
]
