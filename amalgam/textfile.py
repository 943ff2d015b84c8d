"""Reading the text files a user writes (recipes, labels and classes files): no torch, so recipes load without it."""

from __future__ import annotations

from pathlib import Path

from amalgam.errors import AmalgamError


def read_text(path: Path) -> str:
    """A text file the user wrote, in UTF-8 (a BOM skipped); another encoding stops in one line naming the
    file and where, not a UnicodeDecodeError traceback."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AmalgamError(
            f"{path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}): save it as UTF-8"
        ) from None
