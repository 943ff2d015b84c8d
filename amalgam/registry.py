"""A minimal name -> object registry, plus discovery of task plugins through entry points."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Callable, Generic, Iterator, Optional, TypeVar

from amalgam.errors import AmalgamError, error_line

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects; lookups of unknown names list the valid ones.

    Args:
        kind: what the registry holds, used in error messages (e.g. "model source").
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._origins: dict[str, str] = {}
        #: entry points that failed to import: name -> the error, raised only where the name is asked for
        self._broken: dict[str, str] = {}
        self.loaded_groups: set[str] = set()

    def register(self, name: str, origin: Optional[str] = None) -> Callable[[T], T]:
        """Decorator that registers an object under ``name``; a duplicate name raises."""

        def add(obj: T) -> T:
            self.add(name, obj, origin)
            return obj

        return add

    def add(self, name: str, obj: T, origin: Optional[str] = None) -> None:
        """Registers ``obj`` under ``name``; a duplicate name raises. ``origin`` (default: amalgam for
        amalgam's own objects, else the object's ``module:qualname``) is what ``amalgam tasks`` lists."""
        if name in self._items:
            raise AmalgamError(f"{self.kind} '{name}' is already registered by {self._origins[name]}")
        self._items[name] = obj
        self._origins[name] = origin or _origin_of(obj)

    def remove(self, name: str) -> T:
        """Unregisters ``name`` and returns its object (a test's registration, a plugin replacing one)."""
        obj = self.get(name)
        del self._items[name], self._origins[name]
        return obj

    def get(self, name: str) -> T:
        """Returns the object registered under ``name`` or raises naming the valid options (or, for a
        plugin that failed to import, its error)."""
        if name in self._broken and name not in self._items:
            raise AmalgamError(self._broken[name])
        if name not in self._items:
            raise AmalgamError(f"unknown {self.kind} '{name}' (expected one of: {', '.join(self.names())})")
        return self._items[name]

    def origin(self, name: str) -> str:
        """Where ``name`` came from (a package or entry point)."""
        return self._origins[name]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def broken(self) -> dict[str, str]:
        """Plugins of this registry that failed to import: name -> the error line."""
        return dict(self._broken)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


#: top-level packages of amalgam's own objects: a failure inside them is amalgam's, an origin there "amalgam"
BUILT_IN_PACKAGES = ("amalgam", "amalgam_tasks")


def _origin_of(obj: object) -> str:
    """Where an object registered from code came from: amalgam, or its ``module:qualname`` (a user's
    class added without an origin was listed as amalgam's own)."""
    module = getattr(obj, "__module__", None) or ""
    if module.split(".")[0] in BUILT_IN_PACKAGES:
        return "amalgam"
    return f"{module}:{getattr(obj, '__qualname__', type(obj).__qualname__)}" if module else "amalgam"


def load_entry_points(registry: Registry, group: str) -> None:
    """Adds every entry point of ``group`` to ``registry`` (classes are instantiated by the caller).

    An entry point that fails to import is kept as broken, with the plugin's name and error: asking
    the registry for it raises that error (a broken third-party plugin must not look like an amalgam
    bug), while recipes that do not use it still run (one broken package stopped every command). A
    name that two installed packages register is kept as broken too, naming both: which one came
    first on ``sys.path`` decided silently (a plugin named ``classification`` replaced the built-in).
    """
    if group in registry.loaded_groups:
        return
    registry.loaded_groups.add(group)
    found: dict[str, list] = {}
    for ep in entry_points(group=group):
        found.setdefault(ep.name, []).append(ep)
    for name, eps in found.items():
        if name in registry:
            continue
        if len({ep.value for ep in eps}) > 1:
            registry._broken[name] = _collision(group, name, eps)
            continue
        ep = eps[0]
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001 - any import failure of a plugin is the plugin's
            registry._broken[name] = f"{group} plugin '{name}' ({ep.value}) failed to load: {error_line(exc)}"
            continue
        registry.add(name, obj, origin=f"{_package(ep)} ({ep.value})")


def _package(ep) -> str:
    dist = getattr(ep, "dist", None)
    return dist.name if dist else "entry point"


def _collision(group: str, name: str, eps: list) -> str:
    packages = ", ".join(f"{_package(ep)} ({ep.value})" for ep in eps)
    return f"{group} plugin '{name}' is registered by {len(eps)} packages: {packages}; uninstall or rename all but one"
