"""Teacher-output cache: frozen teachers give the same answer on the same un-augmented image.

Each teacher's outputs (and its tapped feature, when feature adapters use one) are stored fp16 in
memory-mapped files under ``<run>/teacher_cache/<teacher>/``, one row per image of the teacher's
sources, filled lazily the first time an image is drawn. Geometric augmentation (the horizontal
flip) is applied to the cached dense outputs exactly as to the image, so the cache holds the
un-augmented outputs. A ``meta.json`` keys the store by the teacher's config, the hash of its
checkpoint file(s), the image size and each source's file list; a mismatch rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from amalgam.distill.plan import Plan
from amalgam.distill.targets import Taps, Targets, apply_flip, ask, live_targets
from amalgam.teachers.teacher import FeatureTap, Teacher

# source fields that change how often an image is drawn, not what the teachers say about it
SAMPLING_ONLY = frozenset({"weight"})


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (checkpoints are tens of MB: well under a second)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def teacher_key(plan: Plan, name: str, taps: Optional[Taps] = None) -> dict:
    """Everything a teacher's cached outputs depend on (``taps``: the features stored with them)."""
    recipe = plan.recipe
    cfg = recipe.teachers[name]
    files = {}
    for path in (cfg.checkpoint, cfg.model.kwargs().get("path")):
        if path is not None and recipe.resolve(Path(path)).is_file():
            files[str(path)] = file_digest(recipe.resolve(Path(path)))
    sources = {}
    for sid in plan.source_ids[name]:
        dataset = plan.sources.sets[sid]
        listing = [str(p) for p in getattr(dataset, "files", [])]
        src_name = plan.sources.names[sid]
        sources[src_name] = {
            "config": recipe.data.sources[src_name].model_dump(mode="json", exclude=SAMPLING_ONLY),
            "images": len(dataset),
            "files": hashlib.sha256("\n".join(listing).encode()).hexdigest(),
        }
    return {
        "format": "amalgam-teacher-cache/1",
        "teacher": cfg.model_dump(mode="json", exclude={"eval"}),
        "tap": taps[name].module_name if name in (taps or {}) else None,
        "files": files,
        "image_size": list(recipe.data.image_size),
        "sources": sources,
    }


def _comparable(key: dict) -> dict:
    """A stored key as :func:`teacher_key` writes it now (older stores also recorded source weights)."""
    for source in key.get("sources", {}).values():
        for field_name in SAMPLING_ONLY:
            source.get("config", {}).pop(field_name, None)
    return key


@dataclass
class _Store:
    offsets: dict[int, int]  # source id -> first row
    outputs: np.memmap
    features: Optional[np.memmap]
    filled: np.memmap
    dense: bool

    def rows(self, source: torch.Tensor, index: torch.Tensor, starts: list[int]) -> np.ndarray:
        local = index - torch.tensor([starts[s] for s in source.tolist()], dtype=torch.long)
        first = torch.tensor([self.offsets[s] for s in source.tolist()], dtype=torch.long)
        return (first + local).numpy()


def _open(path: Path, shape: tuple, dtype, fresh: bool) -> np.memmap:
    return np.lib.format.open_memmap(path, mode="w+" if fresh else "r+", dtype=dtype, shape=shape)


class TeacherCache:
    """Lazily filled fp16 store of every teacher's outputs on the un-augmented training images.

    Args:
        root: folder for the stores (``<run>/teacher_cache``).
        plan: the resolved amalgamation (teachers, sources).
        log: progress messages.
        taps: the teachers' features to store beside their outputs (the Objective's
            ``teacher_taps``); part of the store's key, so a store is never read with other taps.
    """

    def __init__(self, root: Path, plan: Plan, log: Callable[[str], None] = print, taps: Optional[Taps] = None):
        self.plan = plan
        self.taps: Taps = dict(taps or {})
        self.starts = plan.sources.offsets
        self.stores: dict[str, _Store] = {}
        self.hits = self.misses = 0
        size = tuple(plan.recipe.data.image_size)
        for name, teacher in plan.teachers.items():
            if not teacher.deterministic:
                log(f"teacher cache '{name}': not cached, its {plan.recipe.teachers[name].wrap.type} sub-teachers vary")
                continue
            out, feat = _shapes(teacher, size, self.taps.get(name))
            offsets, rows = {}, 0
            for sid in plan.source_ids[name]:
                offsets[sid] = rows
                rows += len(plan.sources.sets[sid])
            folder = root / name
            folder.mkdir(parents=True, exist_ok=True)
            key = teacher_key(plan, name, self.taps)
            meta = folder / "meta.json"
            fresh = not meta.exists() or _comparable(json.loads(meta.read_text())) != key
            if fresh:
                meta.unlink(missing_ok=True)  # written last: a half-made store is never trusted
            store = _Store(
                offsets,
                _open(folder / "outputs.npy", (rows, *out), np.float16, fresh),
                _open(folder / "features.npy", (rows, *feat), np.float16, fresh) if feat else None,
                _open(folder / "filled.npy", (rows,), np.bool_, fresh),
                teacher.task.dense,
            )
            if fresh:
                store.filled[:] = False
                store.filled.flush()
                meta.write_text(json.dumps(key, indent=1))
            self.stores[name] = store
            done = int(store.filled.sum())
            log(f"teacher cache '{name}': {rows:,} rows of {list(out)} fp16, {done:,} already filled")

    @staticmethod
    def estimate_bytes(plan: Plan, taps: Optional[Taps] = None) -> int:
        """Disk the stores would take if every row were filled."""
        size = tuple(plan.recipe.data.image_size)
        total = 0
        for name, teacher in plan.teachers.items():
            if not teacher.deterministic:
                continue
            rows = sum(len(plan.sources.sets[s]) for s in plan.source_ids[name])
            out, feat = _shapes(teacher, size, (taps or {}).get(name))
            total += rows * 2 * (int(np.prod(out)) + (int(np.prod(feat)) if feat else 0))
        return total

    def targets(
        self, images: torch.Tensor, source: torch.Tensor, index: torch.Tensor, flip: Optional[torch.Tensor]
    ) -> Targets:
        """Targets for one batch: ``images`` un-augmented, ``flip`` the batch's flip mask (or None)."""
        source, index = source.cpu(), index.cpu()

        def get(name: str, idx: torch.Tensor):
            teacher = self.plan.teachers[name]
            if name not in self.stores:  # stochastic: runs live on the augmented images
                return live_targets(self.plan.teachers, apply_flip(images, flip), self.taps)(name, idx)
            store = self.stores[name]
            idx_cpu = idx.cpu()
            rows = store.rows(source[idx_cpu], index[idx_cpu], self.starts)
            missing = ~store.filled[rows]
            if missing.any():
                miss = torch.from_numpy(np.nonzero(missing)[0])
                out, feature = ask(teacher, images[idx[miss.to(idx.device)]], self.taps.get(name))
                new_rows = rows[missing]
                store.outputs[new_rows] = out.float().cpu().numpy().astype(np.float16)
                if store.features is not None:
                    store.features[new_rows] = feature.float().cpu().numpy().astype(np.float16)
                store.filled[new_rows] = True
            self.misses += int(missing.sum())
            self.hits += int((~missing).sum())
            device = images.device
            f = flip[idx] if flip is not None else None
            out = torch.from_numpy(np.asarray(store.outputs[rows], dtype=np.float32)).to(device)
            out = apply_flip(out, f) if store.dense else out
            feat = None
            if store.features is not None:
                feat = apply_flip(torch.from_numpy(np.asarray(store.features[rows], dtype=np.float32)).to(device), f)
            return out, feat

        return get

    def flush(self) -> tuple[int, int]:
        """Writes the stores to disk; returns and resets (hits, misses) since the last flush."""
        for store in self.stores.values():
            for array in (store.outputs, store.features, store.filled):
                if array is not None:
                    array.flush()
        counts = (self.hits, self.misses)
        self.hits = self.misses = 0
        return counts


def _shapes(teacher: Teacher, size: tuple, tap: Optional[FeatureTap]) -> tuple[tuple, Optional[tuple]]:
    """Per-image shapes of the teacher's output and tapped feature on a student-sized image."""
    device = next(iter(teacher.model.parameters()), torch.empty(0)).device
    out, feature = ask(teacher, torch.rand(1, 3, *size, device=device), tap)
    feat = tuple(feature.shape[1:]) if feature is not None else None
    return tuple(out.shape[1:]), feat


def open_cache(plan: Plan, run_dir: Path, taps: Taps, log: Callable[[str], None]) -> Optional[TeacherCache]:
    """The teacher cache when ``train.cache_teachers`` is on and it fits ``train.cache_max_gb``.

    ``taps`` are the features the objective reads (``Objective.teacher_taps``): taking them here
    is what orders the two, since the objective makes the taps the cache stores and is keyed by.
    """
    cfg = plan.recipe.train
    if not cfg.cache_teachers:
        log("teacher cache: off (train.cache_teachers: false): teachers run on every batch")
        return None
    need = TeacherCache.estimate_bytes(plan, taps) / 1e9
    if need > cfg.cache_max_gb:
        log(f"teacher cache: off, it would take {need:.1f} GB > train.cache_max_gb {cfg.cache_max_gb}")
        return None
    log(
        f"teacher cache: on, up to {need:.2f} GB under {run_dir / 'teacher_cache'}; augmentation is the horizontal"
        " flip only (geometric), applied to the cached outputs as to the images"
    )
    return TeacherCache(run_dir / "teacher_cache", plan, log, taps)
