"""What a teacher's answers depend on beyond its recipe block: its weight files' bytes and its code.

A recipe dump cannot see a checkpoint retrained in place under the same name, so the teacher cache
keys its stores by these and ``--resume`` refuses a run whose teachers changed since it started:
its student would otherwise be trained by two versions of a teacher, half a run each.
"""

from __future__ import annotations

import functools
from pathlib import Path

from amalgam.config.schema import Recipe
from amalgam.io import file_digest
from amalgam.teachers.factories import factory_digest, module_version


def weight_digests(recipe: Recipe, name: str) -> dict[str, str]:
    """``{path as written in the recipe: sha256}`` of teacher ``name``'s checkpoint and TorchScript file."""
    cfg = recipe.teachers[name]
    digests = {}
    for path in (cfg.checkpoint, cfg.model.kwargs().get("path")):
        if path is not None and (full := recipe.resolve(Path(path))).is_file():
            stat = full.stat()
            digests[str(path)] = _digest(full, stat.st_size, stat.st_mtime_ns)
    return digests


@functools.lru_cache(maxsize=64)
def _digest(path: Path, size: int, mtime_ns: int) -> str:
    """A file's sha256, read once per process while its size and mtime stay: the cache key, the
    checkpoint's fingerprint and ``--resume``'s check all ask (checkpoints run to hundreds of MB)."""
    return file_digest(path)


def model_code(recipe: Recipe, name: str) -> dict:
    """The code behind a teacher's network: a python factory's source (or installed version)."""
    model = recipe.teachers[name].model
    if model.source != "python":
        return {}
    factory = model.kwargs().get("factory")
    source = factory_digest(factory, recipe.base_dir)
    return {"factory_source": source} if source else {"package": module_version(factory)}


def teacher_fingerprints(recipe: Recipe) -> dict[str, dict]:
    """``{teacher: {"files": weight_digests, "code": model_code}}`` for every teacher of ``recipe``."""
    return {name: {"files": weight_digests(recipe, name), "code": model_code(recipe, name)} for name in recipe.teachers}


def fingerprint_changes(stored: dict, recipe: Recipe) -> list[str]:
    """``"<teacher>: <what> changed"`` for each teacher whose files or code differ from ``stored``
    (a :func:`teacher_fingerprints` taken when the run started)."""
    changes = []
    for name, now in teacher_fingerprints(recipe).items():
        then = stored.get(name)
        if then is None:
            continue  # a teacher new to the recipe is a recipe change, said by recipe_changes
        for path in sorted(set(then["files"]) | set(now["files"])):
            if then["files"].get(path) != now["files"].get(path):
                changes.append(f"{name}: {path} changed")
        if then["code"] != now["code"]:
            changes.append(f"{name}: its factory's code changed")
    return changes
