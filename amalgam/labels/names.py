"""Class names of an eval set that look like a teacher's label but are not it.

A folder ``red `` (trailing space), ``light_blue`` or ``Red`` is not the label ``red`` /
``light blue``: matched by exact name, its images were left unscored (or scored as the
teacher's background) and nothing said so. Names equal up to case, surrounding spaces and the
separators ``_``, ``-`` and space are refused with the label they look like; amalgam does not
guess which was meant.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import TYPE_CHECKING, Iterable, Optional, Sequence

import yaml

from amalgam.errors import AmalgamError

if TYPE_CHECKING:
    from amalgam.labels.algebra import LabelSpace

#: what separates words in a class name; taxonomy.normalise (inspect's warnings) folds by the same
_SEPARATORS = re.compile(r"[\s_\-/.]+")


def nfc(name: str) -> str:
    """The name in Unicode's composed form (NFC): macOS writes folder names decomposed (``e`` and an accent), YAML
    and most files composed; both read as the same name, as they look."""
    return unicodedata.normalize("NFC", name)


#: lower-case letters of other scripts that look like Latin ones (Unicode's confusables, the common ones, after
#: casefold: Cyrillic 'в' is a capital 'В' folded), read as those only inside a name that mixes them with Latin
#: letters: a trial's Cyrillic 'а' in 'Bаg' split Bag into two classes with no word, while a set of Cyrillic
#: letters beside Latin ones ('А' and 'A') holds different classes
_LOOK_ALIKE, _LATIN = "аевкмнорстхуѕіјԁһԛԝαβεηικμνοτυχ", "aebkmhopctxysijdhqwabehikmvotux"
_CONFUSABLE, _CONFUSABLE_LETTERS = str.maketrans(_LOOK_ALIKE, _LATIN), frozenset(_LOOK_ALIKE)
#: dashes that look like '-': always one
_DASHES = str.maketrans("‐‑‒–—−﹣", "-------")
#: zeros leading a number that stands alone ('08', 'class_01'), not those inside ids or decimals ('n00004475', '0.05')
_LEADING_ZEROS = re.compile(r"(?<![^\s_\-/])0+(?=\d)")


def fold(name: str, alike: bool = True) -> str:
    """The name up to case, surrounding spaces, separators (``_ - / .``), Unicode form (``é`` as one character
    or as ``e`` and an accent, as macOS writes file names; full-width letters) and, with ``alike``, look-alike
    dashes, letters of other scripts mixed into a Latin name, and zeros leading a number (``08`` and ``8``):
    ``' T_shirt '`` -> ``'t shirt'``."""
    plain = unicodedata.normalize("NFKC", name).casefold()
    if alike:
        plain = _LEADING_ZEROS.sub("", plain.translate(_DASHES))
        if _mixes_scripts(plain):
            plain = plain.translate(_CONFUSABLE)
    return unicodedata.normalize("NFKC", _SEPARATORS.sub(" ", plain).strip())


def _mixes_scripts(name: str) -> bool:
    """Whether a name holds Latin letters beside letters of other scripts that look like them."""
    return any("a" <= c <= "z" for c in name) and any(c in _CONFUSABLE_LETTERS for c in name)


def shown(name: str) -> str:
    """A name as a warning quotes it: with its escapes beside it where it holds characters beyond ASCII, which
    may look like others ('Bаg' with a Cyrillic 'а' reads as 'Bag')."""
    return repr(name) if name.isascii() else f"{name!r} ({ascii(name)})"


def yaml_name(name: str) -> str:
    """A name as a YAML flow scalar, to paste into a recipe: plain when safe, else double-quoted
    (``"jersey, T-shirt, tee shirt"``: a comma or colon breaks a flow mapping)."""
    plain = re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_ ./-]*(?<! )", name) is not None
    return name if plain and yaml.safe_load(name) == name else json.dumps(name)  # '4', 'no', 'null' read otherwise


def look_alikes(names: Iterable[str], labels: Sequence[str]) -> dict[str, list[str]]:
    """Each of ``names`` that folds to one or more of ``labels`` without being one: name -> labels."""
    by_fold: dict[str, list[str]] = {}
    for label in labels:
        found = by_fold.setdefault(fold(label), [])
        if label not in found:
            found.append(label)
    given = set(labels)
    return {n: by_fold[fold(n)] for n in names if n not in given and fold(n) in by_fold}


def look_alike_error(found: dict[str, list[str]], labels: Sequence[str]) -> AmalgamError:
    """One line naming each look-alike class, the label(s) it may mean and the two ways out."""
    listed = ", ".join(
        f"{shown(name)} (did you mean {' or '.join(map(shown, alike))}?)" for name, alike in found.items()
    )
    name, alike = next(iter(found.items()))
    return AmalgamError(
        f"eval set classes are not labels of the teacher (labels: {', '.join(labels[:8])}"
        f"{' ...' if len(labels) > 8 else ''}) but differ from one only in case, spaces, '_', '-', look-alike letters"
        f" or dashes, leading zeros or Unicode form (an accent as its own character, as macOS names files): {listed}; "
        "their images would go unscored or be scored as another class. Relate them in the teacher's labels "
        f"({{{alike[0]!r}: {name!r}}}), name the set's classes in a classes_file (a label with '/' cannot be a "
        "folder's name), or rename the folder (or the class) to the label"
    )


#: label names that usually stand for "everything else" (folded by :func:`fold`)
CATCH_ALL_NAMES = frozenset(
    {"background", "bg", "void", "unlabeled", "unlabelled", "other", "others", "none", "rest", "misc", "nothing"}
)


#: label names of what a network marks as no class (an ignore channel): read as a class, the student paints it
IGNORE_NAMES = frozenset({"ignore", "ignored", "void", "unlabeled", "unlabelled", "dontcare", "don't care", "invalid"})


def ignore_like_label(teacher: str, space: "LabelSpace") -> Optional[str]:
    """One line when a teacher with a ``background`` also has a label named like an ignore value (``ignore``,
    ``void``): it becomes a unified class of its own, which the student learns to paint (a trial's segmenter
    with an 'ignore' output got one without a word). Without a background, the names that are catch-alls too
    (``void``) are :func:`unmarked_catch_all`'s to say; ``ignore``, ``dontcare`` and the like are said here."""
    said_elsewhere = CATCH_ALL_NAMES if space.background is None else frozenset()
    named = [
        label
        for label in space.names
        if label != space.background and fold(label) in IGNORE_NAMES and fold(label) not in said_elsewhere
    ]
    if not named:
        return None
    return (
        f"teacher '{teacher}': label '{named[0]}' is read as a class of its own, which the student learns to"
        f" answer: if the network's channel marks no class, list it in teachers.{teacher}.unused_outputs (its"
        f" index) and drop it from the labels"
    )


def unmarked_catch_all(teacher: str, space: "LabelSpace", unified: Sequence[str]) -> Optional[str]:
    """One line when a teacher has a label named like a catch-all (``background``, ``void``, ...) that
    its recipe does not mark with ``background:`` although the teacher knows only part of the
    unified classes: that label then teaches the unified class of its name only, so the pixels of
    the classes it does not know are taught as that class, not as "one of the others"."""
    if space.background is not None:
        return None
    named = [label for label in space.names if fold(label) in CATCH_ALL_NAMES]
    covered = {cls for label in space.names for cls in space.covered(label)}
    unknown = [name for name in unified if name not in covered and fold(name) not in CATCH_ALL_NAMES]
    if not named or not unknown:
        return None
    shown = ", ".join(unknown[:4]) + (f" and {len(unknown) - 4} more" if len(unknown) > 4 else "")
    return (
        f"teacher '{teacher}': label '{named[0]}' is read as a class of its own, not as everything it does not "
        f"know ({shown}), since teachers.{teacher}.background is not set: set it to '{named[0]}' if it stands "
        "for everything else"
    )
