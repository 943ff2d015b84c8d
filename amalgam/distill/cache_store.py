"""One teacher's cached outputs on disk: opened and checked, filled with checksums, widened to fp32.

Files under ``<run>/teacher_cache/<teacher>/``: ``outputs.npy`` (and ``features.npy`` when a
feature tap is cached), ``filled.npy`` (which rows hold data), ``sums.npy`` (a CRC-32 of every
filled row) and ``meta.json`` (the key, written last and atomically). A store whose files are
missing, cut short or of another shape is rebuilt with one line saying why; a row whose bytes no
longer match its checksum is recomputed from the teacher. Outputs beyond fp16's range switch the
store to fp32 instead of becoming inf. Disk is reserved when the store is made, so a full disk is
one error line now, not a SIGBUS from a memory-mapped write later.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from amalgam.errors import AmalgamError, error_line
from amalgam.io import is_disk_full, no_room, write_json

FP16_MAX = float(np.finfo(np.float16).max)


def reserve(path: Path, label: str) -> None:
    """Allocates a file's blocks now, so later writes through a memory map cannot hit a full disk."""
    size = path.stat().st_size
    try:
        with open(path, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, size)
    except AttributeError:  # no posix_fallocate on this platform: the free-space check stands alone
        return
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise AmalgamError(f"{label}: disk full: cannot reserve {size:,} bytes for {path}") from None
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise


def check_free(folder: Path, need: int, label: str) -> None:
    """Raises one line naming the folder and the bytes needed when the disk cannot hold ``need`` more."""
    free = shutil.disk_usage(folder).free
    if need > free:
        raise AmalgamError(
            f"{label}: disk full: the cache needs {need:,} bytes under {folder}, {free:,} are free "
            "(free space, lower train.cache_max_gb or set train.cache_teachers: false)"
        )


def make_folder(folder: Path, label: str) -> None:
    """Makes a store's folder, or says in one line which file sits where a folder must be.

    Raises:
        AmalgamError: naming the file (``folder`` itself or ``teacher_cache``) and what to do.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a plain file in the way: mkdir's error names no fix
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), folder)
        raise AmalgamError(
            f"{label}: {blocker} is a file where the cache needs a folder: "
            "move or delete it (the cache is rebuilt there)"
        ) from None


def read_meta(path: Path) -> tuple[Optional[dict], Optional[str]]:
    """(stored meta, None) or (None, why it cannot be used); (None, None) when there is none yet."""
    if not path.exists():
        return None, None
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return None, f"meta.json is unreadable ({type(exc).__name__}: torn write?)"
    if not isinstance(meta, dict) or "format" not in meta:
        return None, "meta.json is not a cache key"
    return meta, None


@dataclass
class Store:
    """One teacher's memory-mapped arrays.

    Attributes:
        offsets: source id -> first row of that source.
        outputs: ``[rows, *output shape]``.
        features: ``[rows, *feature shape]`` or None.
        filled: ``[rows]`` bool.
        sums: ``[rows]`` uint32 CRC-32 of each filled row's output (and feature) bytes.
        dense: whether outputs are maps (flipped with the images).
    """

    offsets: dict[int, int]
    outputs: np.memmap
    features: Optional[np.memmap]
    filled: np.memmap
    sums: np.memmap
    dense: bool
    folder: Path
    #: rows that failed their checksum since :meth:`damage_line` last read it (recomputed on read)
    damaged_rows: int = 0

    def global_rows(self, source, index, starts: list[int]) -> np.ndarray:
        """Store rows of samples given by source id and global index (torch tensors on the CPU)."""
        local = index.numpy() - np.array([starts[s] for s in source.tolist()], dtype=np.int64)
        first = np.array([self.offsets[s] for s in source.tolist()], dtype=np.int64)
        return first + local

    def checksum(self, outputs: np.ndarray, features: Optional[np.ndarray]) -> np.ndarray:
        """CRC-32 of each row of ``outputs`` (and ``features``)."""
        sums = np.empty(len(outputs), dtype=np.uint32)
        for i in range(len(outputs)):
            crc = zlib.crc32(np.ascontiguousarray(outputs[i]).tobytes())
            if features is not None:
                crc = zlib.crc32(np.ascontiguousarray(features[i]).tobytes(), crc)
            sums[i] = crc
        return sums

    def read(self, rows: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray], np.ndarray, np.ndarray]:
        """Copies of the rows' outputs and features, the mask of rows to (re)compute (not filled, or
        failing their checksum) and the mask of those that failed their checksum."""
        outputs = np.asarray(self.outputs[rows])
        features = np.asarray(self.features[rows]) if self.features is not None else None
        filled = np.asarray(self.filled[rows], dtype=bool)
        damaged = filled & (self.checksum(outputs, features) != self.sums[rows])
        self.damaged_rows += int(damaged.sum())
        return outputs, features, ~filled | damaged, damaged

    def damage_line(self, label: str) -> Optional[str]:
        """One line with the rows that failed their checksum since the last call (None if none), then
        resets the count: said once per epoch with the total, not once per batch."""
        count, self.damaged_rows = self.damaged_rows, 0
        if not count:
            return None
        return (
            f"{label}: {count} rows failed their checksum (the file changed outside amalgam?): recomputed from"
            " the teacher"
        )

    def write(self, rows: np.ndarray, outputs: np.ndarray, features: Optional[np.ndarray]) -> None:
        """Stores freshly computed rows with their checksums, then marks them filled."""
        outputs = outputs.astype(self.outputs.dtype)
        self.outputs[rows] = outputs
        if self.features is not None:
            features = features.astype(self.features.dtype)
            self.features[rows] = features
        self.sums[rows] = self.checksum(outputs, features)
        self.filled[rows] = True

    def arrays(self) -> list[np.memmap]:
        return [a for a in (self.outputs, self.features, self.filled, self.sums) if a is not None]

    def flush(self) -> None:
        for array in self.arrays():
            array.flush()


def layout(rows: int, out: tuple, feat: Optional[tuple], dtype) -> dict[str, tuple[tuple, np.dtype]]:
    """File name -> (shape, dtype) of a store."""
    files = {"outputs.npy": ((rows, *out), np.dtype(dtype))}
    if feat:
        files["features.npy"] = ((rows, *feat), np.dtype(dtype))
    files["filled.npy"] = ((rows,), np.dtype(np.bool_))
    files["sums.npy"] = ((rows,), np.dtype(np.uint32))
    return files


def _problem(path: Path, shape: tuple, dtype: np.dtype) -> Optional[str]:
    """Why a ``.npy`` file cannot be the store array it should be, or None if its header and size fit.

    Read before mapping: numpy silently extends a file cut short when it maps it read-write.
    """
    if not path.is_file():
        return f"{path.name} is missing"
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            found_shape, fortran, found_dtype = read_header(f)
            offset = f.tell()
    except (OSError, ValueError) as exc:
        return f"{path.name} is damaged (its header: {error_line(exc)})"
    if tuple(found_shape) != tuple(shape) or found_dtype != dtype or fortran:
        return f"{path.name} holds {found_dtype}{list(found_shape)}, expected {dtype}{list(shape)}"
    size, expected = path.stat().st_size, offset + int(np.prod(shape)) * dtype.itemsize
    if size != expected:
        return f"{path.name} is damaged ({size:,} bytes, expected {expected:,})"
    return None


def _open_existing(folder: Path, files: dict) -> tuple[dict[str, np.memmap], Optional[str]]:
    """Opens every file read-write, or says which one is missing, cut short or of another shape."""
    for name, (shape, dtype) in files.items():
        problem = _problem(folder / name, shape, dtype)
        if problem:
            return {}, problem
    return {name: np.lib.format.open_memmap(folder / name, mode="r+") for name in files}, None


def _create(folder: Path, files: dict, label: str) -> dict[str, np.memmap]:
    need = sum(int(np.prod(shape)) * dtype.itemsize + 128 for shape, dtype in files.values())
    held = sum((folder / name).stat().st_size for name in files if (folder / name).is_file())
    check_free(folder, need - held, label)
    opened = {}
    for name, (shape, dtype) in files.items():
        (folder / name).unlink(missing_ok=True)
        try:
            opened[name] = np.lib.format.open_memmap(folder / name, mode="w+", dtype=dtype, shape=shape)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            raise AmalgamError(
                f"{label}: cannot make {folder / name}: {no_room(folder, exc, int(np.prod(shape)) * dtype.itemsize)}"
                " (lower train.cache_max_gb or set"
                " train.cache_teachers: false)"
            ) from None
        reserve(folder / name, label)
    opened["filled.npy"][:] = False
    opened["sums.npy"][:] = 0
    return opened


def open_store(
    folder: Path,
    key: dict,
    rows: int,
    out: tuple,
    feat: Optional[tuple],
    offsets: dict[int, int],
    dense: bool,
    label: str,
    log: Callable[[str], None],
    comparable: Callable[[dict], dict] = lambda k: k,
) -> Store:
    """Opens a teacher's store when its key matches and its files are whole, else makes a new one.

    Args:
        folder: ``<run>/teacher_cache/<teacher>``.
        key: what the outputs depend on (see ``teacher_key``).
        rows, out, feat: row count, per-row output shape, per-row feature shape (or None).
        offsets: source id -> first row.
        dense: outputs are maps.
        label: how the store is named in messages, e.g. ``teacher cache 'seg-a'``.
        log: where the one line saying why a store is rebuilt goes.
        comparable: normalises an older stored key before comparison.
    """
    make_folder(folder, label)
    meta_path = folder / "meta.json"
    meta, why = read_meta(meta_path)
    dtype = np.float16
    opened: dict[str, np.memmap] = {}
    if meta is not None:
        dtype = np.float32 if meta.get("dtype") == "float32" else np.float16
        stored = comparable({k: v for k, v in meta.items() if k != "dtype"})
        changed = [k for k in sorted(set(stored) | set(key)) if stored.get(k) != key.get(k)]
        if changed:
            why = f"what its outputs depend on changed ({', '.join(changed)})"
        else:
            opened, why = _open_existing(folder, layout(rows, out, feat, dtype))
    if not opened:
        if why:
            log(f"{label}: rebuilding it: {why}")
        dtype = np.float16
        meta_path.unlink(missing_ok=True)  # written last: a half-made store is never trusted
        opened = _create(folder, layout(rows, out, feat, dtype), label)
        write_json({**key, "dtype": np.dtype(dtype).name}, meta_path)
    return Store(
        offsets,
        opened["outputs.npy"],
        opened.get("features.npy"),
        opened["filled.npy"],
        opened["sums.npy"],
        dense,
        folder,
    )


def widen(store: Store, label: str) -> None:
    """Rewrites a store's outputs and features as fp32 (fp16 rows convert exactly) and records it."""
    meta_path = store.folder / "meta.json"
    meta = json.loads(meta_path.read_text())
    for attr, name in (("outputs", "outputs.npy"), ("features", "features.npy")):
        old = getattr(store, attr)
        if old is None:
            continue
        check_free(store.folder, old.size * 4 + 128, label)
        tmp = store.folder / f".{name}.fp32"
        new = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=old.shape)
        reserve(tmp, label)
        for start in range(0, len(old), 1024):
            new[start : start + 1024] = old[start : start + 1024]
        new.flush()
        del new
        os.replace(tmp, store.folder / name)
        setattr(store, attr, np.lib.format.open_memmap(store.folder / name, mode="r+"))
    filled = np.nonzero(np.asarray(store.filled))[0]
    if len(filled):
        features = store.features[filled] if store.features is not None else None
        store.sums[filled] = store.checksum(np.asarray(store.outputs[filled]), features)
    store.flush()
    write_json({**meta, "dtype": "float32"}, meta_path)
