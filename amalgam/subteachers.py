"""Deprecated alias of :mod:`amalgam.teachers.subteachers` (moved in 0.2; this name goes in 0.4)."""

from amalgam._moved import alias

alias(__name__, "amalgam.teachers.subteachers")
