"""Python model factories: which modules a recipe may run, importing them, and hashing their code.

A recipe that names ``model: {from: python, factory: module:function}`` runs that function, so a
recipe with a factory is code. What it may name is limited to:

* modules inside the recipe's folder (``models.py`` beside ``recipe.yaml``, or a package there);
* the modules of installed amalgam plugins (packages with ``amalgam.tasks`` or
  ``amalgam.models`` entry points): installing a package already trusts its code;
* top-level modules listed in the ``AMALGAM_ALLOW_MODULES`` environment variable (comma
  separated), which a recipe cannot set for itself.

Anything else (``os:system``, ``subprocess:run``, ``builtins:eval``) is refused before it is
imported. Modules from the recipe's folder are imported afresh on every build, so an edited
factory is the one that runs, and ``teachers/fingerprint.py`` puts their source (and that of
the recipe-folder modules they import) into the teacher cache's key.
"""

from __future__ import annotations

import functools
import importlib
import importlib.machinery
import importlib.util
import inspect
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Callable

from torch import nn

from amalgam.errors import AmalgamError, a_type, error_line

#: entry-point groups whose packages are trusted factory modules
PLUGIN_GROUPS = ("amalgam.tasks", "amalgam.models")
ALLOW_ENV = "AMALGAM_ALLOW_MODULES"


def split_factory(factory: object) -> tuple[str, str]:
    """``'pkg.module:function'`` -> ``('pkg.module', 'function')``; raises on any other shape."""
    if not isinstance(factory, str) or factory.count(":") != 1 or not all(factory.split(":")):
        raise AmalgamError(f"factory: expected 'package.module:function', got {factory!r}")
    module, fn = factory.split(":")
    return module, fn


def local_origin(module: str, base: Path) -> Path | None:
    """The file or package folder of ``module``'s top level inside ``base``, or None if it is not there."""
    top = module.split(".")[0]
    spec = importlib.machinery.PathFinder.find_spec(top, [str(base)])
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))).resolve()
    return Path(spec.origin).resolve() if spec.origin else None


def plugin_modules() -> set[str]:
    """Top-level modules of installed packages that declare amalgam entry points."""
    found = set()
    for group in PLUGIN_GROUPS:
        for ep in entry_points(group=group):
            found.add(ep.value.split(":")[0].split(".")[0])
    return found


def allowed_modules() -> set[str]:
    """Top-level modules the user allowed through ``AMALGAM_ALLOW_MODULES``."""
    return {m.strip() for m in os.environ.get(ALLOW_ENV, "").split(",") if m.strip()}


def check_allowed(module: str, base: Path) -> str:
    """Where ``module`` is trusted from (``"recipe folder"``, ``"plugin"``, ``"allowed"``); raises otherwise."""
    top = module.split(".")[0]
    if local_origin(module, base) is not None:
        return "recipe folder"
    if top in plugin_modules():
        return "plugin"
    if top in allowed_modules():
        return "allowed"
    if importlib.util.find_spec(top) is None:  # top-level lookup: nothing is executed
        raise AmalgamError(f"factory: cannot import module '{module}': not in the recipe's folder {base} nor installed")
    raise AmalgamError(
        f"factory: module '{module}' is not in the recipe's folder {base}: a recipe naming a factory runs it, so "
        f"only modules beside the recipe, installed amalgam plugins ({', '.join(sorted(plugin_modules())) or 'none'})"
        f" or modules listed in {ALLOW_ENV} may be used"
    )


def _forget(top: str) -> dict[str, ModuleType]:
    """Drops ``top`` and its submodules from ``sys.modules`` so the next import reads the files again;
    returns what it dropped (:func:`_give_back` puts it back)."""
    dropped = {n: m for n, m in sys.modules.items() if n == top or n.startswith(top + ".")}
    for name in dropped:
        del sys.modules[name]
    return dropped


def _give_back(top: str, dropped: dict[str, ModuleType]) -> None:
    """The caller's own import of ``top`` back in ``sys.modules`` where it had one: replaced by the
    recipe's copy, the models it had built no longer pickled (``torch.save(model)``) nor matched its
    classes by ``isinstance``. Where it had none, the recipe's copy stays."""
    if dropped:
        _forget(top)
        sys.modules.update(dropped)


def import_factory(factory: str, base: Path) -> Callable[..., nn.Module]:
    """The factory function a recipe names, after checking the module may be run (see module doc)."""
    module_name, fn_name = split_factory(factory)
    where = check_allowed(module_name, base)
    dropped: dict[str, ModuleType] = {}
    if where == "recipe folder":
        # another recipe's module of the same name, or this one before an edit, may be cached
        dropped = _forget(module_name.split(".")[0])
        sys.path.insert(0, str(base))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AmalgamError(f"factory: cannot import module '{module_name}': {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the module's own code failing as it loads (--debug shows where)
        raise AmalgamError(
            f"factory: importing module '{module_name}' raised {type(exc).__name__}: {error_line(exc)}"
        ) from exc
    finally:
        if where == "recipe folder":
            sys.path.remove(str(base))
            _give_back(module_name.split(".")[0], dropped)
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise AmalgamError(f"factory: module '{module_name}' has no function '{fn_name}'")
    return fn


def _signature_of(function: Callable) -> inspect.Signature:
    """``function``'s signature, or one taking anything where Python cannot read it (a builtin)."""
    try:
        return inspect.signature(function)
    except (TypeError, ValueError):
        return inspect.signature(lambda *args, **kwargs: None)


def build_from_factory(kwargs: dict, base: Path) -> nn.Module:
    """Calls the named factory with the other keys; its result must be a ``torch.nn.Module``."""
    kwargs = dict(kwargs)
    factory = kwargs.pop("factory")
    function = import_factory(factory, base)
    _signature_of(function).bind(**kwargs)  # a TypeError here is the recipe's arguments (model_sources.build_model)
    try:
        model = function(**kwargs)
    except Exception as exc:  # noqa: BLE001 - the user's code failing: its own error (--debug shows where)
        raise AmalgamError(f"factory: '{factory}' raised {type(exc).__name__}: {error_line(exc)}") from exc
    if not isinstance(model, nn.Module):
        raise AmalgamError(f"factory: '{factory}' returned {a_type(model)}, not a torch.nn.Module")
    return model


@functools.lru_cache(maxsize=None)
def _distributions() -> dict[str, list[str]]:
    from importlib.metadata import packages_distributions

    return packages_distributions()  # reads every installed package's file list: once per process


def module_version(factory: object) -> str | None:
    """The installed distribution version of an installed factory module, if any."""
    try:
        return distribution_version(split_factory(factory)[0])
    except AmalgamError:
        return None


def distribution_version(module: str) -> str | None:
    """``dist==version`` of the installed distribution holding ``module``'s top level, if any."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in _distributions().get(module.split(".")[0], []):
        try:
            return f"{dist}=={version(dist)}"
        except PackageNotFoundError:
            continue
    return None
