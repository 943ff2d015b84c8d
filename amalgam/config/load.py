"""Reading a recipe: YAML without duplicate keys or alias bombs, ``base:`` recipes, ``--set`` overrides, validation.

Errors name the key path and what was expected, e.g.
``teachers.seg-a.model.arch: unknown smp architecture 'Unett' (expected one of: ...)``.
Relative paths resolve against the recipe file's folder.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from amalgam.config.checks import check_recipe
from amalgam.config.schema import Recipe, expand_path
from amalgam.config.yaml_bounds import BoundedLoaderMixin
from amalgam.errors import RecipeError
from amalgam.textfile import read_text


class UniqueKeyLoader(BoundedLoaderMixin, yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (YAML silently keeps the last one) and alias bombs."""


def _construct_mapping(loader: UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == MERGE_TAG:  # `<<: *base`: its keys are the ones a mapping may set again
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise RecipeError("", f"duplicate key '{key}' at line {key_node.start_mark.line + 1}")
        seen.add(key)
    return loader.construct_mapping(node, deep)


def unshared(value: Any) -> Any:
    """``value`` with every mapping and list its own copy: an anchor's mappings (``<<: *seg``, ``*seg``) are one
    object wherever YAML puts them, which an override of one place would change in all (deepcopy keeps that)."""
    if isinstance(value, dict):
        return {k: unshared(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unshared(v) for v in value]
    return value


class UniqueKeyDumper(yaml.SafeDumper):
    """SafeDumper that quotes the strings :class:`UniqueKeyLoader` would read as numbers (``'5e-4'``)."""


MERGE_TAG = "tag:yaml.org,2002:merge"
UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# YAML 1.2's floats: PyYAML (YAML 1.1) reads 1e-2, without a dot, as a string, which a number field took
# and a model's or part's argument (sigma: 1e-2, drop_path_rate: 1e-2) did not
for _side in (UniqueKeyLoader, UniqueKeyDumper):
    _side.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )


def apply_override(raw: dict, assignment: str) -> None:
    """Applies one ``key.path=value`` override (the value is parsed as YAML) to a raw recipe.

    A mapping laid over a mapping merges key by key, by the rule of a ``base:`` variant
    (:func:`merge_recipes`): ``train={epochs: 2}`` changes the epochs and keeps every other
    ``train`` key, ``student.encoder_args={}`` clears, and a model or typed part naming another
    ``from``/``type`` replaces the one there. Any other value replaces, and so does ``{}``: typed
    on a command line it means "empty" (``amalgamation.task_weights={}``, ``data.eval={}``), where
    an empty section of a variant file is only a heading.
    """
    if "=" not in assignment:
        raise RecipeError("--set", f"expected key.path=value, got '{assignment}'")
    key, value = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise RecipeError(".".join(parts[: i + 1]), "is not a mapping, cannot set a key inside it")
        node = child
    try:
        parsed = unshared(yaml.load(value, Loader=UniqueKeyLoader))  # merge keys share their mappings
    except yaml.YAMLError as exc:  # a value typed on a command line: the key, not a traceback
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(key.strip(), f"the value '{value}' is not YAML ({problem})") from None
    key = parts[-1]
    if parsed is None and tuple(parts[:-1]) in DROPPED_WHEN_NULL:
        node.pop(key, None)
        return
    node[key] = parsed if parsed == {} else merge_recipes(node, {key: parsed}, tuple(parts[:-1]))[key]
    if parts == ["data", "eval"] and parsed == {}:  # no eval set: nothing for a teacher (or the peers) to name
        for holder in [*(raw.get("teachers") or {}).values(), raw.get("peers")]:
            if isinstance(holder, dict):
                holder["eval"] = None


def format_validation_error(err: dict, hint: str = "") -> RecipeError:
    """Turns one pydantic error into a :class:`RecipeError` naming the dotted key path (``hint``: appended to a
    missing key's message)."""
    path = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return RecipeError(path, "unknown key" + _did_you_mean(err["loc"]))
    if err["type"] == "missing":
        return RecipeError(path, "required key is missing" + hint)
    got = err.get("input")
    if "[key]" in err["loc"] and isinstance(got, (bool, int, float)):  # `no:` as a source's name read False
        section = ".".join(str(p) for p in err["loc"][: err["loc"].index("[key]") - 1])
        return RecipeError(
            section,
            f"a name YAML reads as {type(got).__name__} {got!r} (no/yes/on/off/null and numbers are read so):"
            " quote it, e.g. 'no':",
        )
    message = err["msg"].removeprefix("Value error, ")
    said = isinstance(got, (dict, list)) or ", got " in message  # a validator of ours names the value itself
    return RecipeError(path, message + ("" if said else f", got {got!r}"))


def _did_you_mean(loc: tuple) -> str:
    """`` (did you mean 'epochs'?)`` when a known key at that place is close to the unknown one."""
    close = difflib.get_close_matches(str(loc[-1]), _keys_at(loc[:-1]), n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _keys_at(loc: tuple) -> list[str]:
    """The keys the recipe schema knows inside the section at ``loc`` (none where it cannot tell)."""
    model = _model_in(_annotation_at(loc))
    return [] if model is None else [f.alias or n for n, f in model.model_fields.items() if n != "base_dir"]


def _annotation_at(loc: tuple) -> Any:
    """The schema's type of the key at ``loc`` (None where it cannot tell)."""
    node: Any = Recipe
    for part in loc:
        model = _model_in(node)
        if model is not None:
            field = model.model_fields.get(str(part)) or _by_alias(model, str(part))
            node = field.annotation if field is not None else None
        elif typing.get_origin(node) is dict:
            node = typing.get_args(node)[1]  # a named entry (a teacher, a source): its value's type
        else:
            return None
    return node


def _kind_changes(path: tuple, base: dict, derived: dict) -> bool:
    """Whether ``derived`` names another kind of part than ``base`` at ``path``: a part whose
    other keys are its kind's arguments (a teacher's ``model`` ``from``, a ``wrap`` or an
    ``ensemble`` ``type``), so that the base's arguments would not fit the new kind."""
    model = _model_in(_annotation_at(path))
    if model is None or model.model_config.get("extra") != "allow":
        return False
    for name, field in model.model_fields.items():
        keys = [k for k in (field.alias, name) if k]
        new = next((derived[k] for k in keys if k in derived), None)
        old = next((base[k] for k in keys if k in base), None)
        if new is not None and new != old:
            return True
    return False


def _model_in(annotation: Any) -> Any:
    """The pydantic model an annotation holds (``Optional[Model]``, ``Union[..., Model]``), or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return next((m for a in typing.get_args(annotation) if (m := _model_in(a)) is not None), None)
    return None


def _by_alias(model: type[BaseModel], key: str):
    return next((f for f in model.model_fields.values() if f.alias == key), None)


def parse_recipe(raw: Any, base_dir: Path = Path(".")) -> Recipe:
    """Validates a raw (already YAML-parsed) recipe.

    Args:
        raw: the mapping read from YAML.
        base_dir: folder that relative paths resolve against.

    Raises:
        RecipeError: naming the first offending key path.
    """
    if not isinstance(raw, dict):
        raise RecipeError("", "a recipe must be a YAML mapping")
    try:
        recipe = Recipe.model_validate({**raw, "base_dir": base_dir})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise format_validation_error(err, _entry_hint(raw, err)) from None
    check_recipe(recipe)
    return recipe


def _entry_hint(raw: dict, err: dict) -> str:
    """`` (did you mean 'seg-a'? ...)`` for a required key missing from a named entry (a teacher, a source) whose
    name is close to another's: a variant's or --set's typo named a new entry instead of changing one."""
    loc = err["loc"]
    if err["type"] != "missing" or len(loc) < 3:
        return ""
    section = raw.get(loc[0]) if len(loc) == 3 else (raw.get(loc[0]) or {}).get(loc[1])
    name = loc[-2]
    if not isinstance(section, dict):
        return ""
    close = difflib.get_close_matches(str(name), [str(k) for k in section if k != name], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'? '{name}' names a new entry, which needs it)" if close else ""


#: mappings that are one value (arguments), not a section: an empty one in a variant clears the base's
CLEARED_WHEN_EMPTY = (("student", "encoder_args"), ("student", "task_decoder_channels"))
#: mappings of named entries: an entry set to null in a variant (or --set) is dropped from the base's
DROPPED_WHEN_NULL = (("teachers",), ("data", "sources"), ("data", "eval"))


def merge_recipes(base: dict, derived: dict, _path: tuple[str, ...] = ()) -> dict:
    """``derived`` laid over ``base``: mappings merge key by key, any other value replaces.

    The rule of a ``base:`` variant and of a ``--set`` mapping alike. An empty mapping at a
    :data:`CLEARED_WHEN_EMPTY` path replaces too: it is how a variant undoes its base's arguments
    (e.g. ``student.encoder_args`` the variant's encoder does not take). A null entry of a
    :data:`DROPPED_WHEN_NULL` mapping (``teachers: {depth: null}``) drops the base's entry. An empty section
    (``train: {}``) still changes nothing. A model or typed part naming another ``from``/``type``
    (``teachers.x.model``, ``teachers.x.wrap``, ``amalgamation.ensemble``) replaces: the base's
    arguments are another kind's.
    """
    merged = dict(base)
    for key, value in derived.items():
        path = (*_path, key)
        if value is None and _path in DROPPED_WHEN_NULL:  # a variant without one of its base's teachers
            merged.pop(key, None)
            continue
        old = base.get(key)
        both_mappings = isinstance(value, dict) and isinstance(old, dict)
        replaced = both_mappings and ((value == {} and path in CLEARED_WHEN_EMPTY) or _kind_changes(path, old, value))
        merged[key] = merge_recipes(old, value, path) if both_mappings and not replaced else value
    return merged


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """``line 3, column 1: found character '\\t' that cannot start any token (indent with spaces)``."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    hint = " (indent with spaces, not tabs)" if "\\t" in problem or "\t" in problem else ""
    return f"{where}{problem}{hint}"


def read_recipe_file(path: str | Path, _chain: tuple[Path, ...] = ()) -> Any:
    """The raw mapping of a recipe file, laid over the recipe its ``base`` key names (recursively).

    ``base`` is a path relative to the file that names it. Relative paths inside a base recipe
    still resolve against the folder of the recipe being built (see :func:`load_recipe`).
    """
    path = Path(path)
    if not path.is_file():
        named_by = f" (the base of {_chain[-1]})" if _chain else ""
        raise RecipeError("base" if _chain else "", f"recipe file not found: {path}{named_by}")
    try:
        # a merge key (`<<: *seg`) shares the anchor's nested mappings: copied, so that an override of one
        # teacher does not change the other
        raw = unshared(yaml.load(read_text(path), Loader=UniqueKeyLoader))
    except yaml.YAMLError as exc:
        raise RecipeError("", f"{path} is not valid YAML: {_yaml_problem(exc)}") from None
    if not isinstance(raw, dict) or "base" not in raw:
        return raw
    base = raw.pop("base")
    if not isinstance(base, str):
        raise RecipeError("base", f"expected the path of a recipe file, got {base!r} in {path}")
    chain = (*_chain, path.resolve())
    # the folder of the file itself, a link followed: where every other path of the recipe resolves too
    base_path = (path.resolve().parent / expand_path(base, path.resolve().parent)).resolve()
    if base_path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, base_path))
        raise RecipeError("base", f"recipes name each other as base: {cycle}")
    parent = read_recipe_file(base_path, chain)
    if not isinstance(parent, dict):
        raise RecipeError("base", f"{base_path} is not a recipe mapping")
    return merge_recipes(parent, raw)


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Reads, overrides and validates a recipe file.

    Args:
        path: the YAML file; its ``base`` recipe, if it names one, is merged under it.
        overrides: ``key.path=value`` strings applied before validation.
    """
    path = Path(path)
    raw = read_recipe_file(path)
    if isinstance(raw, dict):
        for assignment in overrides:
            apply_override(raw, assignment)
    return parse_recipe(raw, base_dir=path.resolve().parent)
