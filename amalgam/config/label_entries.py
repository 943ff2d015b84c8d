"""A teacher's ``labels`` as the recipe writes them, and the class-name files recipes point to.

An entry of ``teachers.<n>.labels`` is a name, or a one-key mapping that says which unified
classes that label stands for::

    labels: [background, {tvmonitor: tv}, {vehicle: [car, bus, truck]}, person]

``tvmonitor`` is this teacher's name for the unified class ``tv``; ``vehicle`` covers three
unified classes. ``labels_file`` gives plain names, one a line (1000-class teachers).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional, Sequence

from amalgam.errors import AmalgamError
from amalgam.labels import IGNORE, LabelSpace
from amalgam.labels.names import nfc
from amalgam.textfile import read_text

ENTRY_FORMS = "a name, {name: unified_class} or {name: [unified_class, ...]}"


def parse_entry(entry: Any, index: int) -> tuple[str, tuple[str, ...]]:
    """One ``labels`` entry -> (the teacher's label name, the unified classes it stands for)."""
    named = next(iter(entry), None) if isinstance(entry, dict) and len(entry) == 1 else entry
    if isinstance(named, str) and not named.strip():  # '' matched no class, and was said as an empty name
        raise AmalgamError(f"{index}: an empty label name: name every output (its name in the teacher's own labels)")
    if isinstance(entry, str):
        return nfc(entry), (nfc(entry),)
    if isinstance(entry, dict) and len(entry) == 1:
        ((name, value),) = ((_composed(k), _composed(v)) for k, v in entry.items())
        if any(isinstance(v, str) and not v.strip() for v in (value if isinstance(value, list) else [value])):
            raise AmalgamError(f"{index}: '{name}' stands for an empty class name: name the unified class it is")
        if isinstance(value, str):
            return str(name), (value,)
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            if len(set(value)) != len(value):
                raise AmalgamError(f"{index}: '{name}' lists a class twice: {value}")
            return str(name), tuple(value)
    quote = ""
    if isinstance(entry, bool):  # YAML's yes/no/on/off
        quote = " (YAML read it as true/false: quote names such as 'no')"
    elif isinstance(entry, (int, float)) or entry is None:
        quote = " (YAML read it as a number or null: quote names such as '0')"
    raise AmalgamError(f"{index}: expected {ENTRY_FORMS}, got {entry!r}{quote}")


def _composed(value: Any) -> Any:
    """A name, or each name of a list, in Unicode's composed form (:func:`nfc`); anything else as it is."""
    if isinstance(value, list):
        return [_composed(v) for v in value]
    return nfc(value) if isinstance(value, str) else value


def label_names(entries: Sequence[Any]) -> list[str]:
    """The teacher's own label names, in output order."""
    return [parse_entry(e, i)[0] for i, e in enumerate(entries)]


def space_of(entries: Optional[Sequence[Any]], background: Optional[str]) -> Optional[LabelSpace]:
    """A teacher's label space from its ``labels`` entries and ``background``.

    Raises:
        AmalgamError: a malformed entry, a relation on the background, a unified class covered by
            two of the teacher's labels (prefixed with the entry index where there is one).
    """
    if entries is None:
        return None
    parsed = [parse_entry(e, i) for i, e in enumerate(entries)]
    names = tuple(name for name, _ in parsed)
    for i, (name, covers) in enumerate(parsed):
        if name == background and covers != (name,):
            raise AmalgamError(
                f"{i}: the background '{name}' covers every class the teacher does not know; give it as a plain name"
            )
    covers = tuple(c for _, c in parsed) if any(c != (n,) for n, c in parsed) else ()
    try:
        return LabelSpace(names, background, covers)
    except ValueError as exc:
        raise AmalgamError(str(exc)) from None


#: a line of WordNet id and name (``n01440764 tench, Tinca tinca``): the id is dropped, the rest is the name
_SYNSET = re.compile(r"^n\d{8}[ \t]+(\S.*)$")
#: a numbered line of a labels file: ``0 background``, ``1: person``, ``2,car``
_NUMBERED = re.compile(r"^(\d+)\s*[:,\s]\s*([^\W_].*)$")  # not "0 - zero": torchvision's MNIST names


#: first lines that head a table of names rather than name an output (read as label 0, they shifted every label)
_HEADERS = {"name", "names", "label", "labels", "class", "classes", "class_name", "category", "categories"}
_HEADER_ROW = re.compile(r"^(id|idx|index|value|label_id|class_id)\s*[,;\t ]\s*(name|label|class|class_name)$", re.I)
#: a name pasted from Python or YAML: quoted, or a list's comma after it
_PASTED = re.compile(r"""^(\d+\s*[:,=\t ]\s*)?(["'].*["']|.*,)$""")


def _refuse_non_names(lines: list[str], path: Path, lead: int) -> None:
    """Stops on a line of a labels file that is no output's name: a comment, a header, a name pasted from code
    with its quotes or list comma (a trial's ``'Bag',`` lines became ten more unified classes, unsaid)."""
    for i, line in enumerate(lines):
        where = f"line {lead + i + 1} of {path} reads {line!r}"
        if line.startswith("#"):
            raise AmalgamError(f"{where}, a comment: every line names one output (in order), so delete it")
        if i == 0 and (line.casefold() in _HEADERS or _HEADER_ROW.match(line)):
            raise AmalgamError(f"{where}, a header: every line names one output (in order), so delete it")
        if _PASTED.match(line):
            raise AmalgamError(
                f"{where}: quotes or a trailing comma, as pasted from code? Write the bare name, one a line"
            )


def read_names(path: Path, map_values: bool = False) -> list[str]:
    """A labels file: one name a line, surrounding spaces stripped, blank lines at its start and end skipped.

    A blank line among the names is refused naming its line: skipped, it shifted every label after
    it by one output, and a user "fixing" the count by adding a name made that silent.

    A file whose every line is numbered (``0 background``) is read by its numbers, which must be
    0 to n-1: read as names, the numbers matched no label and a 1-based file would shift them all.
    Its blank lines shift nothing (each name carries its output), so they are skipped.
    ``map_values``: the file names an eval set's label-map values (``classes.txt``), so a file numbered
    from 1 lacks value 0's name (ADE20K's "other"), which the refusal says; a teacher's from 0. A line
    numbered 255 there names the maps' ignore value and is left out.
    """
    lines = [line.strip() for line in read_text(path).splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    lead = 0  # blank lines before the first name: the line numbers said count them
    while lines and not lines[0]:
        lines.pop(0)
        lead += 1
    _refuse_non_names(lines, path, lead)
    if lines and all(_NUMBERED.match(line) for line in lines if line):
        lines = [line for line in lines if line]
    if "" in lines:
        blank = lead + lines.index("") + 1
        raise AmalgamError(
            f"line {blank} of {path} is blank, among the labels (one output's name a line, {len(lines)} lines):"
            " name that output, or delete the line if the file has one line too many"
        )
    numbered = [_NUMBERED.match(line) for line in lines]
    if lines and all(synset := [_SYNSET.match(line) for line in lines]):
        # ImageNet's LOC_synset_mapping.txt, read as a classes_file reads it
        names, ids = [m[1].strip() for m in synset], [line.split()[0] for line in lines]
        return names if map_values else _distinct(names, path, lead, ids)
    if not lines or not all(numbered):
        return lines if map_values else _distinct(lines, path, lead)
    if map_values:  # a '255 void' line names the maps' ignore value (VOC-style files): not a class
        numbered = [m for m in numbered if int(m[1]) != IGNORE]
    ids = [int(m[1]) for m in numbered]
    if sorted(ids) != list(range(len(ids))):
        shown = ", ".join(map(str, ids[:6])) + (", ..." if len(ids) > 6 else "")
        head = f"every line of {path} starts with a number ({shown}), but they do not run 0 to {len(ids) - 1}"
        if map_values:  # renumbering from 0 would name every value after the next class
            missing = sorted(set(range(max(ids) + 1)) - set(ids))
            shown = ", ".join(map(str, missing[:8])) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
            # a value nobody annotated is no class: 255 leaves it unscored (a '0 unlabeled' line is scored)
            zero = ""
            if 0 in missing:
                zero = "; value 0: '0 background' where it is background, or write pixels nobody annotated as 255"
            raise AmalgamError(
                f"{head}: they are the label maps' values, so every value from 0 to {max(ids)} needs its line;"
                f" missing: {shown}{zero} (renumbering would shift the classes)"
                if missing
                else f"{head}: a value is given twice"
            )
        raise AmalgamError(
            f"{head}: if they are output indices, number from 0; if they are part of the names, give the labels"
            " inline (labels: [...])"
        )
    if not map_values:  # in the file's order, so that the lines said are its lines; the numbers name them
        _distinct([m[2].strip() for m in numbered], path, lead, [f"output {m[1]}" for m in numbered])
    return [m[2].strip() for m in sorted(numbered, key=lambda m: int(m[1]))]


def _distinct(names: list[str], path: Path, lead: int, ids: Optional[list[str]] = None) -> list[str]:
    """``names``, refused in one line naming the lines of the first name given twice (ImageNet's files
    name two synsets 'crane', a bird and a machine, and two 'maillot'): outputs need a name each."""
    seen: dict[str, int] = {}
    for k, name in enumerate(names):
        if name not in seen:
            seen[name] = k
            continue
        first, again = seen[name], k
        where = f"lines {lead + first + 1} and {lead + again + 1} of {path}"
        which = f" ({ids[first]} and {ids[again]})" if ids else ""
        count = sum(names.count(n) > 1 for n in set(names))
        more = f"; {count - 1} other name{' is' if count == 2 else 's are'} given twice too" if count > 1 else ""
        raise AmalgamError(
            f"{where} both name '{name}'{which}{more}: each output needs its own name; rename them in the file, e.g."
            f" '{name} 1' and '{name} 2' (for ImageNet's two 'crane's: 'crane bird' and 'crane machine')"
        )
    return names


def read_class_map(path: Path) -> dict[str, str]:
    """A classes file: ``<folder id> <name>`` a line (``n01440764 tench``); the name is the rest of the line.
    A line holding a tab splits at its first tab instead, so a folder id may hold spaces (``Ankle boot``)."""
    found: dict[str, str] = {}
    for number, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        text = line.strip(" \r\n")
        parts = text.split("\t", 1) if "\t" in text else text.split(maxsplit=1)
        parts = [part.strip() for part in parts]
        if len(parts) != 2 or not all(parts):
            raise AmalgamError(
                f"{path}:{number}: expected '<folder id> <name>' (a tab between them when the id has spaces),"
                f" got {line.strip()!r}"
            )
        found[parts[0]] = parts[1]
    return found


def classes_by_value(path: Path) -> list[str]:
    """The class names of label maps from a classes file whose ids are the maps' values, ``0 <name>``
    to ``N-1 <name>`` in any order (a set without ``classes.txt``); a ``255`` line names the ignore value."""
    mapping = read_class_map(path)
    values = {int(k): v for k, v in mapping.items() if k.isdigit()}
    values.pop(IGNORE, None)  # a '255 void' line names the maps' ignore value, as in classes.txt: not a class
    if len(values) != len(mapping) - (str(IGNORE) in mapping) or sorted(values) != list(range(len(values))):
        ids = ", ".join(list(mapping)[:5]) + (" ..." if len(mapping) > 5 else "")
        raise AmalgamError(
            f"classes_file {path}: a set without classes.txt reads it as '<map value> <name>' lines, the values 0"
            f" to N-1 (found ids {ids}); or give the set a classes.txt (one name a line, value 0 first)"
        )
    return [values[v] for v in range(len(values))]


def rename_classes(classes: Sequence[str], path: Path) -> list[str]:
    """An eval set's class ids (folders, ``classes.txt`` lines) renamed through a classes file."""
    mapping = read_class_map(path)
    missing = [c for c in classes if c not in mapping]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise AmalgamError(
            f"classes_file {path} does not name {len(missing)} of the set's classes: {shown} (give each a line"
            " '<folder id> <name>', the same name twice to keep it; a tab between them when the id has spaces)"
        )
    return [mapping[c] for c in classes]
