"""Check (or write) the manifest of the shipped demo teachers: sha256 and size of every file; install them.

``zoo_weights/MANIFEST`` holds comment lines (``#``: what the folder is and the exact command that
regenerates it) and one line per file, ``<sha256>  <bytes>  <path relative to the folder>``, in the
``sha256sum`` layout plus the size. ``--check`` fails on a missing, changed or unlisted file, e.g. a
Git LFS pointer or a checkpoint retrained in place without rewriting the manifest.

Usage::

    python tools/zoo_manifest.py --check zoo_weights
    python tools/zoo_manifest.py --install zoo_weights zoo   # checked, then copied where absent in zoo/
    python tools/zoo_manifest.py --write zoo_weights   # after retraining; keeps the comment lines
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from amalgam.io import file_digest

MANIFEST = "MANIFEST"
SUFFIXES = (".pt", ".ts", ".safetensors")


def weight_files(folder: Path) -> list[str]:
    """Every weights file under ``folder`` (relative POSIX paths, sorted)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.suffix in SUFFIXES)


def read_manifest(folder: Path) -> tuple[list[str], dict[str, tuple[str, int]]]:
    """The comment lines and ``{path: (sha256, bytes)}`` of ``folder/MANIFEST``."""
    comments, entries = [], {}
    for number, line in enumerate((folder / MANIFEST).read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            comments.append(line)
            continue
        parts = line.split()
        if len(parts) != 3 or len(parts[0]) != 64 or not parts[1].isdigit():
            raise ValueError(f"{folder / MANIFEST}:{number}: expected '<sha256>  <bytes>  <path>', got {line!r}")
        entries[parts[2]] = (parts[0], int(parts[1]))
    return comments, entries


def check(folder: Path) -> list[str]:
    """Problems with ``folder`` against its manifest (empty when every file matches)."""
    if not (folder / MANIFEST).is_file():
        return [f"{folder / MANIFEST} not found"]
    _, entries = read_manifest(folder)
    problems = []
    for rel, (digest, size) in entries.items():
        path = folder / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif path.stat().st_size != size:
            problems.append(f"{rel}: {path.stat().st_size} bytes, the manifest says {size}")
        elif file_digest(path) != digest:
            problems.append(f"{rel}: sha256 differs from the manifest")
    problems += [f"{rel}: not in the manifest" for rel in weight_files(folder) if rel not in entries]
    return problems


def write(folder: Path) -> str:
    """Rewrites the file lines of ``folder/MANIFEST`` from the files on disk, keeping its comments."""
    comments = read_manifest(folder)[0] if (folder / MANIFEST).is_file() else []
    lines = [f"{file_digest(folder / rel)}  {(folder / rel).stat().st_size}  {rel}" for rel in weight_files(folder)]
    text = "\n".join(comments + lines) + "\n"
    (folder / MANIFEST).write_text(text)
    return text


def install(folder: Path, dest: Path) -> tuple[list[str], list[str], list[str]]:
    """Copies each manifest file that matches it into ``dest`` where absent (a file there is kept:
    retrained, or the user's own); returns (copied, kept, refused: missing or changed here)."""
    _, entries = read_manifest(folder)
    copied, kept, refused = [], [], []
    for rel, (digest, size) in entries.items():
        source, target = folder / rel, dest / rel
        if target.exists():
            kept.append(rel)
        elif not source.is_file() or source.stat().st_size != size or file_digest(source) != digest:
            refused.append(rel)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            copied.append(rel)
    return copied, kept, refused


def differing(folder: Path, dest: Path, kept: list[str]) -> list[str]:
    """The kept files of ``dest`` that differ from the manifest's: an older shipped file (the quickstart
    student's encoder was widened on 2026-12-04) would otherwise be read without a word."""
    _, entries = read_manifest(folder)
    return [rel for rel in kept if file_digest(dest / rel) != entries[rel][0]]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: 0 when the check passes (or after writing), 1 otherwise."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--check", type=Path, metavar="FOLDER")
    which.add_argument("--write", type=Path, metavar="FOLDER")
    which.add_argument("--install", type=Path, nargs=2, metavar=("FOLDER", "DEST"))
    args = parser.parse_args(argv)
    if args.write is not None:
        print(write(args.write), end="")
        return 0
    folder = args.check if args.install is None else args.install[0]
    problems = check(folder)
    for problem in problems:
        print(f"{folder}: {problem}", file=sys.stderr)
    if args.install is not None:  # what matches is installed even when another file does not
        copied, kept, refused = install(folder, args.install[1])
        print(f"{args.install[1]}: copied {', '.join(copied) or 'nothing'}; kept {', '.join(kept) or 'nothing'}")
        if other := differing(folder, args.install[1], kept):  # an older shipped file, or the user's own
            print(
                f"{args.install[1]}: kept, though not the shipped file: {', '.join(other)} (remove it and run"
                " make zoo again to install the shipped one)",
                file=sys.stderr,
            )
        if refused:
            print(f"{args.install[1]}: not installed (missing or changed): {', '.join(refused)}", file=sys.stderr)
    if problems:
        print(f"{folder}: regenerate with the command in {folder / MANIFEST}", file=sys.stderr)
        return 1
    print(f"{folder}: {len(read_manifest(folder)[1])} files match {MANIFEST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
