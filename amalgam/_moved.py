"""Old module paths kept importable after the 0.2 layout, with a DeprecationWarning."""

from __future__ import annotations

import importlib
import sys
import warnings


def alias(old: str, new: str) -> None:
    """Makes module ``old`` the module ``new`` (``import old`` then yields ``new``) and warns once."""
    warnings.warn(f"{old} moved to {new}; import it from there", DeprecationWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(new)
