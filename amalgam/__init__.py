"""amalgam: merge several task-specific teachers into one customised multi-task student."""

from amalgam.errors import AmalgamError, RecipeError

__version__ = "0.1.0"
__all__ = ["AmalgamError", "RecipeError", "__version__"]
