"""Deprecated alias of :mod:`amalgam.students.serialize` (moved in 0.2; this name goes in 0.4)."""

from amalgam._moved import alias

alias(__name__, "amalgam.students.serialize")
