"""Whether a training source holds an eval set's images: the same file or dataset item, or a byte-identical
copy between folders (a copied pool of eval images is the usual leak), found cheaply on large folders."""

from __future__ import annotations

import os
from pathlib import Path

from amalgam.data.image_set import ImageSet, spread
from amalgam.data.sources import FolderSet
from amalgam.io import file_digest


def shared_images(source: ImageSet, eval_set: ImageSet) -> tuple[int, str]:
    """How many of a training source's images an eval set holds too (by :meth:`ImageSet.image_keys`:
    the same file, or the same torchvision dataset, folder, split and index; and, between folders of
    files, a byte-identical copy), and one of them."""
    scored = set(eval_set.image_keys())
    shared = [index for index, key in enumerate(source.image_keys()) if key in scored]
    sampled = False
    if isinstance(source, FolderSet) and isinstance(eval_set, FolderSet):
        taken = set(shared)
        copies, sampled = _copies(source.files, eval_set.files)
        shared += [i for i in copies if i not in taken]
    example = source.describe(shared[0]) if shared else ""
    sought = f"; copies sought in a spread of {COPY_CHECKS:,} of its files: at least" if sampled else ""
    return len(shared), example + sought


#: most training files of an eval file's size that the copy check reads (a spread of them beyond)
COPY_CHECKS = 20_000
#: bytes read first of each such file: two images rarely share them unless one is a copy
COPY_HEAD = 4096


def _copies(files: list[Path], others: list[Path]) -> tuple[list[int], bool]:
    """Indices of ``files`` with a byte-identical copy among ``others`` (a copied pool of eval images is
    the usual leak), and whether only a spread of the candidates was read. Candidates are files of a
    size some other has; each is read up to :data:`COPY_HEAD` bytes and looked up by (size, head), then
    compared whole; at most :data:`COPY_CHECKS` of them (an even spread), so a million-image folder, or
    one of equal-size BMPs, costs seconds."""
    by_size: dict[int, list[Path]] = {}
    for path in others:
        by_size.setdefault(_size(path), []).append(path)
    sizes = [_size(path) for path in files]
    alike = [i for i, size in enumerate(sizes) if size in by_size]
    sampled = len(alike) > COPY_CHECKS
    alike = [alike[k] for k in spread(len(alike), COPY_CHECKS)] if sampled else alike
    heads: dict[tuple[int, bytes], list[Path]] = {}
    for size in {sizes[i] for i in alike}:
        for other in by_size[size]:
            heads.setdefault((size, _head(other)), []).append(other)
    digests: dict[Path, str] = {}  # each candidate hashed once, not read again for every file it meets
    found = [i for i in alike if _has_copy(files[i], heads.get((sizes[i], _head(files[i])), []), digests)]
    return found, sampled


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(COPY_HEAD)
    except OSError:  # unreadable here: the source check names it
        return b""


def _has_copy(path: Path, alike: list[Path], digests: dict[Path, str]) -> bool:
    """Whether one of ``alike`` (files of ``path``'s size and first bytes), not ``path`` itself, holds its
    bytes (by :func:`~amalgam.io.file_digest`, kept in ``digests``)."""
    if not alike:
        return False
    real = os.path.realpath(path)

    def digest(file: Path) -> str:
        if file not in digests:
            digests[file] = file_digest(file)
        return digests[file]

    try:
        return any(os.path.realpath(o) != real and digest(o) == digest(path) for o in alike)
    except OSError:
        return False


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1
