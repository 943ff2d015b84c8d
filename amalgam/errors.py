"""Errors that the CLI prints as one line (a traceback only with ``--debug``)."""

from __future__ import annotations

import re
from typing import Optional

#: how torch's DataLoader re-raises a worker's error: ``type(f"Caught {type} in DataLoader worker
#: process N.\nOriginal Traceback ...\n{module.type}: {message}")``
_WORKER = re.compile(r"\ACaught \w+ in DataLoader worker process \d+\.\nOriginal Traceback")


def _unwrapped(message: str, cls: type) -> str:
    """A worker-wrapped message cut back to the error's own one line (else ``message`` as it is)."""
    if not _WORKER.match(message):
        return message
    # the last one: a chained error's traceback names the earlier error first
    found = list(re.finditer(rf"\n(?:[\w.]+\.)?{re.escape(cls.__name__)}: ", message))
    return message[found[-1].end() :].strip() if found else message


#: how TorchScript reports an error inside a scripted or traced model: this preamble, both tracebacks,
#: then the original ``RuntimeError: message`` on the last line
_TORCHSCRIPT = "The following operation failed in the TorchScript interpreter."


def error_line(exc: BaseException, every_line: bool = False) -> str:
    """The one line that says what went wrong in a third-party error (a user's network, a loader):
    its first line, or, for an error raised inside a TorchScript model, the original error's message
    (the first line is only TorchScript's preamble). The exception's type name if it says nothing.

    Args:
        every_line: all its lines joined into one instead of the first (a library's refusal that
            lists the valid values on its second line).
    """
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    lines = text.splitlines()
    if lines[0] == _TORCHSCRIPT:
        return re.sub(r"\A(?:[\w.]+\.)?\w*(?:Error|Exception): ", "", lines[-1].strip())
    return " ".join(text.split()) if every_line else lines[0]


def under_key(key: str, message: str) -> tuple[str, str]:
    """``(key path, message)`` for a part's refusal raised under recipe ``key``: a message that
    starts with one of the part's argument names (``"weights: expected 2 values"``) moves that name
    into the key (``key.weights``, ``"expected 2 values"``); any other stays under ``key``."""
    head, sep, rest = message.partition(": ")
    return (f"{key}.{head}", rest) if sep and head and " " not in head else (key, message)


class AmalgamError(Exception):
    """A problem with the user's input or files, explained in one line.

    Raised in a DataLoader worker (a corrupt image found mid-epoch), it keeps that one line: torch
    re-raises it in the main process with the worker's whole traceback as its message.
    """

    def __init__(self, *args: object):
        if len(args) == 1 and isinstance(args[0], str):
            args = (_unwrapped(args[0], type(self)),)
        super().__init__(*args)


class RecipeError(AmalgamError):
    """A recipe key holds something invalid.

    Args:
        path: dotted key path, e.g. ``teachers.seg-a.model.arch``.
        message: what was expected (None: ``path`` is the whole message, as torch re-raises a
            worker's error with one argument).
    """

    def __init__(self, path: str, message: Optional[str] = None):
        if message is None:
            path, message = "", _unwrapped(path, type(self))
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


def a_type(value: object) -> str:
    """``value``'s type name with its article, for messages: ``a dict``, ``an OrderedDict``."""
    name = type(value).__name__
    return ("an " if name[:1].lower() in "aeiou" else "a ") + name


def count_of(n: int, word: str) -> str:
    """``1 channel``, ``3 channels``: a count with its noun (plural by an s)."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
