"""Teacher-output cache: frozen teachers give the same answer on the same un-augmented image.

Each teacher's outputs (and its tapped feature, when feature adapters use one) are stored fp16
(fp32 once a value exceeds fp16's range) in memory-mapped files under
``<run>/teacher_cache/<teacher>/``, one row per image of the teacher's sources, filled lazily the
first time an image is drawn. Geometric augmentation (the horizontal flip) is applied to the cached
dense outputs exactly as to the image, so the cache holds the un-augmented outputs. A ``meta.json``
keys the store by everything the outputs depend on (:func:`teacher_key`); a mismatch, or a damaged
file, rebuilds it with one line saying why (see cache_store.py for the files and their checks).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch

import amalgam
from amalgam.data.mixing import fingerprint
from amalgam.data.views import BatchViews, ViewSpec
from amalgam.distill.cache_store import FP16_MAX, Store, check_free, make_folder, open_store, widen
from amalgam.distill.plan import Plan
from amalgam.distill.targets import Taps, Targets, apply_flip, live_targets, mirror_rows
from amalgam.io import gb_text
from amalgam.task import Task
from amalgam.teachers.fingerprint import model_code, task_code, weight_digests
from amalgam.teachers.inputs import answer_views
from amalgam.teachers.taps import FeatureTap
from amalgam.teachers.teacher import Teacher
from amalgam.training.runtime import autocast_for

#: bump when what the stores hold or how they are laid out changes
CACHE_FORMAT = "amalgam-teacher-cache/10"  # 3: answers on the teacher's own view, stored on the student's grid;
# 4: images read upright by their EXIF orientation; 5: a depth teacher's own NaN/inf stored as +inf (counted),
# no longer as NaN (no depth); 6: a depth teacher's holes (no depth) no longer spread by a shrinking resize;
# 7: every view (the student's image too, a teacher's input where their views agree) resized in 8 bits, antialiased;
# 8: a depth teacher's +inf is no depth (NaN), no longer its failure (+inf); 9: a strided dense answer placed on
# the pixels its cells pooled, no longer stretched over an input no multiple of its stride; 10: an inverse or relative
# depth teacher's answer resized as its disparity (Task.resize_space), no longer as depth

# source fields that do not change what the teachers say about an image: how often it is drawn, and
# how its ground truth (never read in training) is scaled
NOT_IN_KEY = frozenset({"weight", "depth_scale", "depth_reading", "flip"})


def teacher_key(plan: Plan, name: str, taps: Optional[Taps] = None, precision: str = "fp32") -> dict:
    """Everything a teacher's cached outputs depend on (``taps``: the features stored with them;
    ``precision``: what the answers are computed in, the run's ``train.precision`` on its device).

    The teacher's config (model kwargs, input spec, wrapper, output convention), the bytes of its
    checkpoint and TorchScript file, its factory's source, its task plugin's code, each source's config and files (path,
    size, mtime), the image size, amalgam's version and the cache format.
    """
    recipe = plan.recipe
    cfg = recipe.teachers[name]
    sources = {}
    for sid in plan.source_ids[name]:
        dataset = plan.sources.sets[sid]
        src_name = plan.sources.names[sid]
        config = recipe.data.sources[src_name].model_dump(mode="json", exclude=NOT_IN_KEY)
        sources[src_name] = {"config": config, **fingerprint(dataset)}
        if dataset.least_side is not None:  # its large JPEGs decoded at a reduced scale
            sources[src_name]["least_side"] = dataset.least_side
    return {
        "format": CACHE_FORMAT,
        "input": json.loads(json.dumps(dataclasses.asdict(plan.teachers[name].input_spec))),  # as read back
        "amalgam": amalgam.__version__,
        "teacher": cfg.model_dump(mode="json", exclude={"eval"}),
        "code": model_code(recipe, name),
        "task_code": task_code(cfg.task),
        "tap": taps[name].module_name if name in (taps or {}) else None,
        "files": weight_digests(recipe, name),
        "image_size": list(recipe.data.image_size),
        "sources": sources,
        "source_order": list(sources),  # the store's rows follow it: reordered, they are other images'
        "precision": precision,
    }


def _comparable(key: dict) -> dict:
    """A stored key as :func:`teacher_key` writes it now (older stores also recorded source weights)."""
    for source in key.get("sources", {}).values():
        for field_name in NOT_IN_KEY:
            source.get("config", {}).pop(field_name, None)
        source.get("config", {}).setdefault("exif", "upright")  # format 4 read every image upright
        source.get("config", {}).setdefault("args", {})  # before a torchvision set's args existed
    key.setdefault("task_code", {})  # before a task plugin's code was keyed: amalgam's own tasks have none
    key.setdefault("source_order", list(key.get("sources", {})))  # its rows' order: the stored mapping's
    if isinstance(key.get("input"), dict):
        key["input"].setdefault("crop", 1.0)  # before input.crop existed: the whole image
    if isinstance(key.get("teacher"), dict):
        key["teacher"].setdefault("unused_outputs", [])  # before teachers.<n>.unused_outputs existed
        key["teacher"].setdefault("output_scale", None)  # before teachers.<n>.output_scale existed
    for spec in (key.get("input"), key.get("teacher", {}).get("input")):  # every teacher was fed RGB
        if isinstance(spec, dict) and "channel_order" not in spec:  # before input.channel_order existed
            spec["channel_order"] = "rgb"
            if isinstance(spec.get("origin"), dict):
                spec["origin"]["channel_order"] = "default"
    return key


class TeacherCache:
    """Lazily filled fp16 store of every teacher's outputs on the un-augmented training images.

    Args:
        root: folder for the stores (``<run>/teacher_cache``).
        plan: the resolved amalgamation (teachers, sources).
        log: progress messages.
        taps: the teachers' features to store beside their outputs (the Objective's
            ``teacher_taps``); part of the store's key, so a store is never read with other taps.
        precision: what the answers are computed in (``fp32``, ``bf16``, ``fp16``: the run's
            ``train.precision`` on its device); part of the key, so a run never reads another's.
        shared: several processes (torchrun) fill the stores: one cannot widen a store to fp32 under the
            others, so rows beyond fp16 are computed each time instead (see :meth:`lookup`).
    """

    def __init__(
        self,
        root: Path,
        plan: Plan,
        log: Callable[[str], None] = print,
        taps: Optional[Taps] = None,
        precision: str = "fp32",
        shared: bool = False,
    ):
        self.plan = plan
        self.shared, self.unstored = shared, set()
        self.taps: Taps = dict(taps or {})
        self.starts = plan.sources.offsets
        self.stores: dict[str, Store] = {}
        self.log = log
        self.hits = self.misses = 0
        self.precision = precision
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
            label = f"teacher cache '{name}'"
            key = teacher_key(plan, name, self.taps, self.precision)
            store = open_store(root / name, key, rows, out, feat, offsets, teacher.task.dense, label, log, _comparable)
            self.stores[name] = store
            done = int(store.filled.sum())
            dtype = "fp16" if store.outputs.dtype == np.float16 else "fp32"
            log(f"teacher cache '{name}': {rows:,} rows of {list(out)} {dtype}, {done:,} already filled")

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
        self,
        images: Union[torch.Tensor, BatchViews],
        source: torch.Tensor,
        index: torch.Tensor,
        flip: Optional[torch.Tensor],
    ) -> Targets:
        """Targets for one batch: ``images`` un-augmented (or the batch's views, which then carry
        the flips), ``flip`` the batch's flip mask (or None). A miss runs the teacher on its plain
        view; what is stored is its answer on the student's grid."""
        source, index = source.cpu(), index.cpu()
        if not isinstance(images, BatchViews):  # the student's images stand in for the originals
            images = BatchViews(images, self.plan.student_view, images, flip)

        def get(name: str, idx: torch.Tensor):
            teacher = self.plan.teachers[name]
            if name not in self.stores:  # stochastic: runs live on the augmented images
                return live_targets(self.plan.teachers, images, self.taps)(name, idx)
            store = self.stores[name]
            idx_cpu = idx.cpu()
            rows = store.global_rows(source[idx_cpu], index[idx_cpu], self.starts)

            def run(missing: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
                rows_in_batch = idx[torch.from_numpy(missing).to(idx.device)]
                out, feature = _plain_answer(teacher, images, rows_in_batch, self.taps.get(name), self.precision)
                feat = feature.float().cpu().numpy() if store.features is not None else None
                return out.float().cpu().numpy(), feat

            outputs, features = self.lookup(name, rows, run)
            device = images.student.device
            f = flip[idx] if flip is not None else None
            out = torch.from_numpy(outputs.astype(np.float32)).to(device)
            out = mirror_rows(teacher.task, out, f)  # the task says what a mirror does to its values
            feat = None
            if features is not None:
                feat = apply_flip(torch.from_numpy(features.astype(np.float32)).to(device), f)
            return out, feat

        return get

    def lookup(
        self, name: str, rows: np.ndarray, run: Callable[[np.ndarray], tuple[np.ndarray, Optional[np.ndarray]]]
    ) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """A teacher's stored rows; ``run(positions)`` computes those not filled or failing their checksum.

        Computed rows are written back. Values beyond fp16's range widen the store to fp32 first,
        so they are kept, not turned into inf; a store several processes fill (``shared``) is not widened, and
        such rows are returned, not stored.
        """
        store = self.stores[name]
        outputs, features, missing, _ = store.read(rows)  # damaged rows: counted, said once by flush
        if missing.any():
            new_out, new_feat = run(np.nonzero(missing)[0])
            keep = np.ones(len(new_out), dtype=bool)
            if store.outputs.dtype == np.float16 and _beyond_fp16(new_out, new_feat):
                if self.shared:  # a rank widening alone swapped the file under the others: rows lost (a trial)
                    keep = self._within_fp16(name, new_out, new_feat)
                else:
                    peak = max(_peak(a) for a in (new_out, new_feat) if a is not None)
                    self.log(
                        f"teacher cache '{name}': outputs reach {peak:.3g}, beyond fp16's {FP16_MAX:.0f}: stored as"
                        " fp32 from now on"
                    )
                    widen(store, f"teacher cache '{name}'")
                outputs = outputs.astype(np.float32)
                features = features.astype(np.float32) if features is not None else None
            store.write(rows[missing][keep], new_out[keep], None if new_feat is None else new_feat[keep])
            outputs[missing] = new_out
            if features is not None:
                features[missing] = new_feat
        self.misses += int(missing.sum())
        self.hits += int((~missing).sum())
        return outputs, features

    def _within_fp16(self, name: str, out: np.ndarray, feat: Optional[np.ndarray]) -> np.ndarray:
        """Which rows of a shared store's new answers fp16 holds; the first time a teacher's do not, said."""
        keep = np.array([not _beyond_fp16(out[i], None if feat is None else feat[i]) for i in range(len(out))])
        if name not in self.unstored:
            self.unstored.add(name)
            self.log(
                f"teacher cache '{name}': outputs beyond fp16's {FP16_MAX:.0f}, and several processes fill the"
                " store: those rows are computed each time they are drawn, not stored (a single process widens"
                " the store to fp32)"
            )
        return keep

    def flush(self) -> tuple[int, int]:
        """Writes the stores to disk, says the rows that failed their checksum since the last flush
        (one line per teacher: flushed once an epoch); returns and resets (hits, misses) since then."""
        for name, store in self.stores.items():
            store.flush()
            if line := store.damage_line(f"teacher cache '{name}'"):
                self.log(line)
        counts = (self.hits, self.misses)
        self.hits = self.misses = 0
        return counts

    def add_counts(self, hits: int, misses: int) -> None:
        """Counts ``hits`` and ``misses`` as if looked up since the last flush: an epoch stopped by
        Ctrl-C saved its counts, and its resumed rest adds to them (the epoch's rate is the whole epoch's)."""
        self.hits += int(hits)
        self.misses += int(misses)


def _peak(a: np.ndarray) -> float:
    return float(np.abs(a[np.isfinite(a)]).max(initial=0))


def _beyond_fp16(*arrays: Optional[np.ndarray]) -> bool:
    """Whether a finite value would overflow to inf in fp16 (a teacher's own inf is not the cache's to fix)."""
    return any(a is not None and _peak(a) > FP16_MAX for a in arrays)


def _plain_answer(
    teacher: Teacher, views: BatchViews, rows: torch.Tensor, tap: Optional[FeatureTap], precision: str = "fp32"
):
    """The teacher on its un-augmented view of ``rows``, dense answers on the student's grid, computed in
    ``precision`` whatever autocast the caller is in: it is part of the store's key."""
    with autocast_for(views.student.device, precision):
        return answer_views(teacher, views, rows, views.student.shape[-2:], augmented=False, tap=tap)


def _shapes(teacher: Teacher, size: tuple, tap: Optional[FeatureTap]) -> tuple[tuple, Optional[tuple]]:
    """Per-image shapes of what is stored for the teacher: its answer on the student's grid and its
    tapped feature (an original of the student's size stands in for any)."""
    device = next(iter(teacher.model.parameters()), torch.empty(0)).device
    student = torch.rand(1, 3, *size, device=device)
    views = BatchViews(student, ViewSpec(tuple(size)), [(student[0] * 255).to(torch.uint8).cpu()])
    out, feature = _plain_answer(teacher, views, torch.zeros(1, dtype=torch.long), tap)
    return tuple(out.shape[1:]), (tuple(feature.shape[1:]) if feature is not None else None)


def open_cache(
    plan: Plan, run_dir: Path, taps: Taps, log: Callable[[str], None], precision: str = "fp32", shared: bool = False
) -> Optional[TeacherCache]:
    """The teacher cache when ``train.cache_teachers`` is on and it fits ``train.cache_max_gb``
    (``precision``: what the run computes in, see :class:`TeacherCache`).

    ``taps`` are the features the objective reads (``Objective.teacher_taps``): taking them here
    is what orders the two, since the objective makes the taps the cache stores and is keyed by.
    """
    cfg = plan.recipe.train
    if not cfg.cache_teachers:
        log("teacher cache: off (train.cache_teachers: false): teachers run on every batch")
        return None
    need = TeacherCache.estimate_bytes(plan, taps) / 1e9
    if need > cfg.cache_max_gb:
        log(f"teacher cache: off, it would take {gb_text(need)} > train.cache_max_gb {cfg.cache_max_gb}")
        return None
    log(f"teacher cache: on, up to {gb_text(need)} under {run_dir / 'teacher_cache'}{_augment_note(plan)}")
    if note := _few_draws_note(plan, need):
        log(note)
    folder = run_dir / "teacher_cache"
    make_folder(folder, "teacher cache")
    held = sum(p.stat().st_size for p in folder.rglob("*.npy") if p.is_file())  # stores a run before left
    check_free(folder, int(need * 1e9) - held, "teacher cache")  # every store's at once, not each in turn
    return TeacherCache(folder, plan, log, taps, precision, shared)


def _few_draws_note(plan: Plan, need_gb: float) -> Optional[str]:
    """The line when the run draws far fewer images than the cache reserves rows for: it is reserved whole."""
    cfg, images = plan.recipe.train, len(plan.sources)
    draws = (cfg.samples_per_epoch or images) * cfg.epochs
    if draws * 4 > images:
        return None
    return (
        f"teacher cache: reserves {gb_text(need_gb)} for {images:,} images, of which this run draws at most {draws:,}"
        " (train.samples_per_epoch x epochs): a source's limit: keeps it to what is drawn; train.cache_teachers:"
        " false runs the teachers live"
    )


def _augment_note(plan: Plan) -> str:
    """How the cached outputs meet the augmentation: the flip through each task's mirror hook, and mixup's
    blends, which the teachers label live (said whatever the flip)."""
    cfg = plan.recipe.train
    note = (
        "; augmentation is the horizontal flip only (geometric), applied to the cached outputs through each task's"
        " mirror hook" + _default_mirrors(plan)
        if cfg.augment
        else "; no augmentation (train.augment: false)"
    )
    if cfg.mixup is not None:
        note += f"; mixup's blends of {', '.join(cfg.mixup.sources)} are labelled by the teachers live, not cached"
    return note


def _default_mirrors(plan: Plan) -> str:
    """The dense tasks whose cached outputs are mirrored by the default (values unchanged), said so
    that a plugin whose values change under a mirror (a normal's x) is seen to need its own."""
    tasks = {t.task.name: t.task for t in plan.teachers.values()}
    plain = sorted(n for n, task in tasks.items() if task.dense and type(task).mirror is Task.mirror)
    return f" (a spatial flip, values unchanged: {', '.join(plain)})" if plain else ""
