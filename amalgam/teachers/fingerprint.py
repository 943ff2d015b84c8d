"""What a teacher's answers depend on beyond its recipe block: its weight files' bytes and its code.

A recipe dump cannot see a checkpoint retrained in place under the same name, so the teacher cache
keys its stores by these and ``--resume`` refuses a run whose teachers changed since it started:
its student would otherwise be trained by two versions of a teacher, half a run each.

Code: a python factory's module and every module of the recipe's folder it imports, directly or
through another (found by reading their ``import`` statements); an installed factory module or a
library model source (timm, torchvision, smp) by its installed version, and a factory module
imported from anywhere else (an editable install, ``PYTHONPATH``) by its package's source as well;
a task plugin's code the same way (its ``convert_output`` shapes the answers the cache stores).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Iterator, Optional

from amalgam.config.schema import Recipe
from amalgam.errors import AmalgamError
from amalgam.io import file_digest
from amalgam.teachers.factories import distribution_version, local_origin, module_version, split_factory
from amalgam.teachers.model_sources import file_kwargs

#: the installed distribution whose version a library model source's networks depend on
SOURCE_LIBRARIES = {"timm": "timm", "torchvision": "torchvision", "smp": "segmentation-models-pytorch"}


def weight_digests(recipe: Recipe, name: str) -> dict[str, str]:
    """``{path as written in the recipe: sha256}`` of teacher ``name``'s checkpoint and of every file
    its model args name (a TorchScript ``path``; ``weights: w.pt`` or timm's ``checkpoint_path``,
    which the factory loads itself: a file retrained in place kept its stale cached answers)."""
    digests = {}
    for path in named_files(recipe, name):
        if (full := recipe.resolve(Path(path))).is_file():
            stat = full.stat()
            digests[path] = _digest(full, stat.st_size, stat.st_mtime_ns)
    return digests


def named_files(recipe: Recipe, name: str) -> list[str]:
    """The files teacher ``name``'s recipe entry names (its checkpoint, its model args' files), as written."""
    cfg = recipe.teachers[name]
    named = [value for value, _ in file_kwargs(cfg.model.kwargs(), recipe.base_dir).values()]
    return [str(path) for path in (cfg.checkpoint, *named) if path is not None]


@functools.lru_cache(maxsize=64)
def _digest(path: Path, size: int, mtime_ns: int) -> str:
    """A file's sha256, read once per process while its size and mtime stay: the cache key, the
    checkpoint's fingerprint and ``--resume``'s check all ask (checkpoints run to hundreds of MB)."""
    return file_digest(path)


def model_code(recipe: Recipe, name: str) -> dict:
    """The code behind a teacher's network: a python factory's source (the recipe folder's modules it
    imports included) or installed version; a library source's version; nothing for TorchScript."""
    model = recipe.teachers[name].model
    if model.source != "python":
        library = _library_version(SOURCE_LIBRARIES.get(model.source))
        return {"package": library} if library else {}
    factory = model.kwargs().get("factory")
    source = local_code_digest(factory, recipe.base_dir)
    if source:
        return {"factory_source": source}
    try:
        module = split_factory(factory)[0]
    except AmalgamError:
        return {"package": None}
    return {"package": module_version(factory), **_unversioned_source(module)}


def task_code(task: str) -> dict:
    """The code of a task plugin (``{}`` for amalgam's own tasks, which amalgam's version covers)."""
    from amalgam.task import TASKS

    if task not in TASKS:
        return {}
    module = getattr(TASKS.get(task), "__module__", "") or ""
    if module.split(".")[0] in BUILT_IN_MODULES:
        return {}
    return {"package": distribution_version(module), **_unversioned_source(module)}


#: top-level modules of amalgam's own distribution
BUILT_IN_MODULES = ("amalgam", "amalgam_tasks")
#: folders of regularly installed packages: code there changes with a reinstall, which its version says
INSTALLED = ("site-packages", "dist-packages")


def _unversioned_source(module: str) -> dict:
    """``{"module_source": sha256}`` of ``module``'s file and of the modules of its own top-level package
    it imports, directly or not (their packages' ``__init__`` too), when it is not a regular install
    (an editable one, a folder on ``PYTHONPATH``, a script: edited in place, its version stays); else
    ``{}``. Other modules of that package (its tests, other plugins) are not part of it."""
    first = _module_file(module)
    if first is None or any(part in INSTALLED for part in first.parts):
        return {}
    files = module_closure(module)
    h = hashlib.sha256()
    for name, path in files:
        try:
            stat = path.stat()
            h.update(name.encode() + b"\0" + _digest(path, stat.st_size, stat.st_mtime_ns).encode())
        except OSError:  # gone, or unreadable: its absence is part of the code as found
            h.update(name.encode() + b"\0-")
    return {"module_source": h.hexdigest()}


def module_closure(module: str) -> list[tuple[str, Path]]:
    """``(module name, file)`` of ``module``, of its parent packages' ``__init__`` and of every module of
    its top-level package it imports, directly or through another (absolute or relative imports)."""
    top = module.split(".")[0]
    found: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop(0)
        if name in found:
            continue
        path = _module_file(name)
        if path is None:
            continue
        found[name] = path
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        todo += parents + [n for n in imported_names(path, package) if n.split(".")[0] == top]
    return sorted(found.items())


def _module_file(name: str) -> Optional[Path]:
    """The ``.py`` file of an imported (or importable) module, or None (a builtin, a namespace, a C extension)."""
    path = getattr(sys.modules.get(name), "__file__", None)
    if path is None:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError, AttributeError):
            return None
        path = spec.origin if spec is not None else None
    return Path(path).resolve() if isinstance(path, str) and path.endswith(".py") else None


def _library_version(distribution: Optional[str]) -> Optional[str]:
    try:
        return f"{distribution}=={version(distribution)}" if distribution else None
    except PackageNotFoundError:
        return None


def local_code_digest(factory: object, base: Path) -> Optional[str]:
    """SHA-256 of the factory module's source and of every recipe-folder module it imports, directly
    or not (a package counts whole); None when the factory's module is not in the recipe folder."""
    try:
        first = split_factory(factory)[0]
    except AmalgamError:
        return None
    origins = list(_local_closure(first, base))
    if not origins:
        return None
    h = hashlib.sha256()
    for origin in origins:  # the factory's own module first: one importing nothing local keeps its old digest
        for path in _module_files(origin):
            h.update(str(path.relative_to(origin.parent)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _local_closure(module: str, base: Path) -> Iterator[Path]:
    """The origins (file or package folder) of ``module`` and of the recipe-folder modules it imports."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop(0)
        origin = local_origin(name, base)
        if origin is None or origin in seen or (name != module and _namespace(origin)):
            continue
        seen.add(origin)
        yield origin
        for path in _module_files(origin):
            todo.extend(imported_names(path))


def _namespace(origin: Path) -> bool:
    """A folder without ``__init__.py`` (``data/``, say): an import of its name reaches an installed
    package first, so it is not followed (nor walked) as the teacher's code."""
    return origin.is_dir() and not (origin / "__init__.py").is_file()


def _module_files(origin: Path) -> list[Path]:
    """A module's file, or a package's ``.py`` files: not hidden ones (an editor's ``.#x.py`` lock, a
    dangling link), which no import reaches."""
    if not origin.is_dir():
        return [origin]
    return sorted(p for p in origin.rglob("*.py") if p.is_file() and not p.name.startswith("."))


def imported_names(path: Path, package: Optional[str] = None) -> list[str]:
    """The absolute module names ``path``'s import statements name (relative ones stay inside its package,
    which is hashed whole); none when it does not parse (its bytes are hashed all the same).

    With ``package`` (the module's own package, for :func:`module_closure`), relative imports are
    resolved too, and each name imported from a module is listed as a possible submodule of it (a name
    that is no module is skipped later).
    """
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return []
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and package is None:
            names += [node.module] if node.level == 0 and node.module else []
        elif isinstance(node, ast.ImportFrom):
            source = _resolved(node, package)
            names += [source] + [f"{source}.{alias.name}" for alias in node.names if alias.name != "*"]
    return [n for n in names if n]


def _resolved(node: ast.ImportFrom, package: str) -> str:
    """The absolute module a ``from`` import names, a relative one resolved against ``package``."""
    if not node.level:
        return node.module or ""
    parts = package.split(".") if package else []
    base = ".".join(parts[: len(parts) - node.level + 1]) if node.level - 1 <= len(parts) else ""
    return ".".join(p for p in (base, node.module or "") if p)


def teacher_fingerprints(recipe: Recipe) -> dict[str, dict]:
    """``{teacher: {"files": weight_digests, "code": model_code, "task": task_code}}`` for every
    teacher of ``recipe``."""
    return {
        name: {"files": weight_digests(recipe, name), "code": model_code(recipe, name), "task": task_code(cfg.task)}
        for name, cfg in recipe.teachers.items()
    }


def fingerprint_changes(stored: dict, recipe: Recipe) -> list[str]:
    """``"<teacher>: <what> changed"`` for each teacher whose files or code differ from ``stored``
    (a :func:`teacher_fingerprints` taken when the run started)."""
    changes = []
    for name, now in teacher_fingerprints(recipe).items():
        then = stored.get(name)
        if then is None:
            continue  # a teacher new to the recipe is a recipe change, said by recipe_changes
        # a file only now recorded: weights a factory loads from a model argument, recorded since
        # 2026-12-03 (a run of before resumes); a path the recipe no longer names is said by recipe_changes
        named = named_files(recipe, name)
        for path in sorted(p for p in then["files"] if p in named):
            if path not in now["files"]:
                changes.append(f"{name}: {path} missing")
            elif then["files"][path] != now["files"][path]:
                changes.append(f"{name}: {path} changed")
        if (change := _code_change(then["code"], now["code"])) is not None:
            changes.append(f"{name}: {change}")
        if "task" in then and then["task"] != now["task"]:  # recorded since 2026-12-04
            changes.append(f"{name}: its task plugin's code changed")
    return changes


def _code_change(then: dict, now: dict) -> Optional[str]:
    """What changed in a teacher's code, None if nothing did (or a run from before library versions
    were recorded, whose checkpoint holds no code for a library teacher)."""
    if "module_source" not in then:  # recorded since 2026-12-04: a run of before resumes
        now = {k: v for k, v in now.items() if k != "module_source"}
    if then == now or (not then and set(now) == {"package"}):
        return None
    if "factory_source" in then or "factory_source" in now or then.get("module_source") != now.get("module_source"):
        return "its factory's code changed"
    return f"its code changed ({then.get('package')} -> {now.get('package')})"
