"""Side-by-side of amalgam and torchdistill on the same single-teacher KD: images/s and final top-1.

    OMP_NUM_THREADS=1 python tools/bench_torchdistill.py recipes/kd_single.yaml --json runs/bench_torchdistill.json

Three rows, all from the same recipe (one classification teacher, fixed task weight):

* ``amalgam, cached``: the real ``amalgam build`` with the teacher cache (the default); epoch 1
  fills the cache, later epochs read what they re-draw.
* ``amalgam, live teacher``: the same build with ``train.cache_teachers=false``: the teacher runs
  on every batch, as in torchdistill.
* ``torchdistill``: torchdistill's ``DistillationBox`` trains the same student (built and seeded as
  ``amalgam build`` builds it) from the same teacher object, on the same images (same sampler and
  seed, so the same draws), batch size and epochs, with ``KDLoss`` (alpha 0, weighted by T^2 so it
  is exactly amalgam's ``T^2 * KL`` with batch mean), AdamW with the same lr and weight decay and a
  per-step cosine schedule over all steps; the student is then scored by amalgam's ``evaluate``.

Remaining differences: the horizontal flip (a random half of the images) is drawn per batch by
amalgam and per sample by the torchdistill dataset, and on CUDA and on CPUs with AMX amalgam
trains under bf16/fp16 autocast (``train.precision: auto``, its standard pipeline) while
torchdistill's box runs fp32; ``--set train.precision=fp32`` gives both the same arithmetic.
Timing is the training loop's wall clock; amalgam's includes its per-epoch checkpoint. The runs
share one process, one after another.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import torch
from torch import nn
from torch.utils.data import Dataset, Sampler

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import amalgam  # noqa: E402
from amalgam.config.recipe import Recipe, load_recipe  # noqa: E402
from amalgam.data import MixedSources, mixing_sampler  # noqa: E402
from amalgam.distill.plan import Plan, build_plan  # noqa: E402
from amalgam.errors import AmalgamError  # noqa: E402
from amalgam.evaluation.evaluate import evaluate  # noqa: E402
from amalgam.io import write_json  # noqa: E402
from amalgam.students.build import build_student  # noqa: E402
from amalgam.training.engine import resolve_device, seed_everything  # noqa: E402

CACHED, LIVE, TORCHDISTILL = "amalgam, cached", "amalgam, live teacher", "torchdistill"


def settings(args: argparse.Namespace) -> list[str]:
    """The recipe overrides both sides run with (epochs, batch size, images per epoch)."""
    out = []
    for key, value in (("epochs", args.epochs), ("batch_size", args.batch_size), ("samples_per_epoch", args.samples)):
        if value is not None:
            out.append(f"train.{key}={value}")
    return out + list(args.set)


def the_teacher(recipe: Recipe) -> str:
    """Name of the recipe's single classification teacher (the comparison needs exactly one)."""
    if recipe.peers is not None or len(recipe.teachers) != 1:
        raise AmalgamError(f"needs a recipe with exactly one teacher, {recipe.name} has {len(recipe.teachers)}")
    name, cfg = next(iter(recipe.teachers.items()))
    if cfg.task != "classification" or not cfg.eval:
        raise AmalgamError(f"teacher '{name}' must be a classification teacher with an eval set")
    if not isinstance(recipe.amalgamation.task_weights, dict) or recipe.amalgamation.features != "none":
        raise AmalgamError("needs fixed task_weights and features: none (plain KD, as torchdistill's KDLoss)")
    return name


def steps_per_epoch(samples: int, batch: int) -> int:
    """Batches of one epoch: whole batches only once there are two or more (as amalgam's make_loader)."""
    return samples // batch if samples >= 2 * batch else math.ceil(samples / batch)


def run_amalgam(recipe_path: Path, overrides: list[str], run_dir: Path, cached: bool) -> dict:
    """Runs ``amalgam.build`` and reads its report and train_log.csv.

    Returns the row: images, train seconds, images/s, the student's top-1, per-epoch seconds and
    (cached) teacher cache hit rates.
    """
    sets = overrides + [f"train.cache_teachers={str(cached).lower()}"]
    report = amalgam.build(recipe_path, sets, output=run_dir, force=True, quiet=True).report
    with open(run_dir / "train_log.csv", newline="") as f:
        log = list(csv.DictReader(f))
    cumulative = [float(row["seconds"]) for row in log]
    images = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)["images"]
    task = report["tasks"][0]
    return {
        "side": CACHED if cached else LIVE,
        "epochs": report["train"]["epochs"],
        "images": images,
        "train_seconds": report["train"]["seconds"],
        "images_per_second": report["train"]["images_per_second"],
        "top1": task["student_value"],
        "teacher_top1": task["teacher_value"],
        "epoch_seconds": [round(b - a, 2) for a, b in zip([0.0] + cumulative, cumulative)],
        "cache_hit_rate": [float(row["cache_hit_rate"]) for row in log] if cached else None,
    }


class TaskLogits(nn.Module):
    """An amalgam student seen as a plain classifier: ``images -> logits`` of one task."""

    def __init__(self, student: nn.Module, task: str):
        super().__init__()
        self.student, self.task = student, task

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.student(images)[self.task]


class ImagesWithTargets(Dataset):
    """amalgam's training images as torchdistill's ``(image, target)`` pairs.

    Training is label-free, so the target is a placeholder (-1). ``flip`` mirrors each image with
    probability 1/2, the usual per-sample form of amalgam's batch flip.
    """

    def __init__(self, sources: MixedSources, flip: bool):
        self.sources, self.flip = sources, flip

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.sources[index]["image"]
        if self.flip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image, -1


def amalgam_sampler(dataset: Dataset, plan: Plan, num_samples: int, seed: int) -> Sampler:
    """torchdistill's ``sampler.class_or_func``: amalgam's own draw (same seed, same images per epoch)."""
    weights = [plan.recipe.data.sources[n].weight for n in plan.sources.names]
    return mixing_sampler(plan.sources, weights, num_samples, seed)


def torchdistill_config(plan: Plan, steps: int, device: torch.device) -> dict:
    """torchdistill's train config for the recipe's KD (the keys DistillationBox reads)."""
    cfg, amal = plan.recipe.train, plan.recipe.amalgamation
    samples = cfg.samples_per_epoch or len(plan.sources)
    loader = {"batch_size": cfg.batch_size, "num_workers": cfg.workers, "pin_memory": device.type == "cuda"}
    loader["drop_last"] = samples >= 2 * cfg.batch_size  # as amalgam: no 1-sample batch for BatchNorm
    kd = {
        "key": "KDLoss",
        "kwargs": {
            "student_module_path": ".",
            "student_module_io": "output",
            "teacher_module_path": ".",
            "teacher_module_io": "output",
            "temperature": amal.temperature,
            "alpha": 0.0,  # no label term; with alpha 0 KDLoss returns the bare batchmean KL ...
            "reduction": "batchmean",
        },
    }
    weight = next(iter(plan.recipe.amalgamation.task_weights.values()))
    return {
        "num_epochs": cfg.epochs,
        "train_data_loader": {
            "dataset_id": "train",
            "sampler": {
                "class_or_func": amalgam_sampler,
                "kwargs": {"plan": plan, "num_samples": samples, "seed": plan.recipe.seed},
            },
            "kwargs": loader,
        },
        "teacher": {"forward_proc": "forward_batch_only", "requires_grad": False},
        "student": {"forward_proc": "forward_batch_only", "requires_grad": True},
        "optimizer": {
            "key": "AdamW" if cfg.optimizer == "adamw" else "SGD",
            "kwargs": {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
            | ({"momentum": cfg.momentum} if cfg.optimizer == "sgd" else {}),
        },
        # per step (scheduling_step 1) over all steps: lr * (1 + cos(pi * step / steps)) / 2, as amalgam
        "scheduler": {"key": "CosineAnnealingLR", "kwargs": {"T_max": steps, "eta_min": 0.0}, "scheduling_step": 1},
        # ... so the T^2 of amalgam's loss (and its fixed task weight) goes into the sub-term's weight
        "criterion": {
            "key": "WeightedSumLoss",
            "kwargs": {"sub_terms": {"kd": {"criterion": kd, "weight": weight * amal.temperature**2}}},
        },
    }


def run_torchdistill(recipe_path: Path, overrides: list[str]) -> dict:
    """Trains the recipe's student with torchdistill's DistillationBox; scores it with amalgam's evaluate."""
    from torchdistill.core.distillation import get_distillation_box

    recipe = load_recipe(recipe_path, overrides)
    if recipe.train.schedule != "cosine":
        raise AmalgamError("the comparison matches amalgam's cosine schedule only (train.schedule: cosine)")
    name = the_teacher(recipe)
    quiet = lambda msg: None  # noqa: E731
    plan = build_plan(recipe, log=quiet)
    device = resolve_device(recipe.device)
    seed_everything(recipe.seed)  # as `amalgam build`: the same initial student
    student = build_student(plan.student_spec())
    teacher = plan.teachers[name].to(device)  # frozen, eval mode, logits on the student-sized input
    model = TaskLogits(student, teacher.task.name).to(device)
    cfg = recipe.train
    samples = cfg.samples_per_epoch or len(plan.sources)
    steps = max(1, cfg.epochs * steps_per_epoch(samples, cfg.batch_size))
    seed_everything(recipe.seed)  # amalgam's train() reseeds here too
    dataset = ImagesWithTargets(plan.sources, cfg.augment)
    box = get_distillation_box(
        teacher, model, {"train": dataset}, torchdistill_config(plan, steps, device), device, None, False, 1
    )
    images = 0
    start = time.perf_counter()
    epoch_seconds = []
    for epoch in range(cfg.epochs):
        began = time.perf_counter()
        box.pre_epoch_process(epoch=epoch)
        for sample_batch, targets, supp_dict in box.train_data_loader:
            sample_batch = sample_batch.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            loss = box.forward_process(sample_batch, targets, supp_dict)
            box.post_forward_process(loss=loss)
            images += sample_batch.shape[0]
        box.post_epoch_process()
        epoch_seconds.append(round(time.perf_counter() - began, 2))
    seconds = time.perf_counter() - start
    result = evaluate(plan, student, device, log=quiet).tasks[0]
    return {
        "side": TORCHDISTILL,
        "epochs": cfg.epochs,
        "images": images,
        "train_seconds": round(seconds, 2),
        "images_per_second": round(images / seconds, 2),
        "top1": result.student_metrics["top1"],
        "teacher_top1": result.teacher_metrics["top1"],
        "epoch_seconds": epoch_seconds,
        "cache_hit_rate": None,
        "final_lr": box.optimizer.param_groups[0]["lr"],
    }


def to_markdown(report: dict) -> str:
    """The rows as a Markdown table, then the settings line."""
    lines = [
        "| side | epochs | images | train s | images/s | top-1 | speed vs torchdistill | epoch s | cache hits |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        ratio = "-" if r["speed_vs_torchdistill"] is None else f"{r['speed_vs_torchdistill']:.2f}x"
        hits = "-" if r["cache_hit_rate"] is None else " / ".join(f"{h:.0%}" for h in r["cache_hit_rate"])
        lines.append(
            f"| {r['side']} | {r['epochs']} | {r['images']} | {r['train_seconds']} | {r['images_per_second']} "
            f"| {r['top1']:.4f} | {ratio} | {' / '.join(str(s) for s in r['epoch_seconds'])} | {hits} |"
        )
    s = report["settings"]
    lines += [
        "",
        f"teacher top-1 {report['teacher_top1']:.4f}; batch {s['batch_size']}, "
        f"{s['samples_per_epoch'] or 'all'} images per epoch, T={s['temperature']}, "
        f"{s['optimizer']} lr {s['lr']} wd {s['weight_decay']}, cosine per step; "
        f"{report['device']}, {report['threads']} threads, torch {report['torch']}, "
        f"torchdistill {report['torchdistill'] or '-'}",
    ]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    """Runs the rows, prints the table and the command, writes ``--json``; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path, help="a one-teacher classification recipe (recipes/kd_single.yaml)")
    parser.add_argument("--epochs", type=int, help="default: the recipe's")
    parser.add_argument("--batch-size", type=int, help="default: the recipe's")
    parser.add_argument("--samples", type=int, help="images per epoch (default: the recipe's)")
    parser.add_argument("--json", type=Path, help="write the measurements here")
    parser.add_argument("--skip-torchdistill", action="store_true", help="only the two amalgam rows")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="more recipe overrides")
    args = parser.parse_args(argv)
    overrides = settings(args)
    recipe = load_recipe(args.recipe, overrides)
    the_teacher(recipe)
    version = None
    if not args.skip_torchdistill:
        import torchdistill

        version = torchdistill.__version__
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_torchdistill-") as tmp:
        for cached in (True, False):
            print(f"running {CACHED if cached else LIVE} ...", flush=True)
            rows.append(run_amalgam(args.recipe, overrides, Path(tmp) / f"cached-{cached}", cached))
    if not args.skip_torchdistill:
        print(f"running {TORCHDISTILL} ...", flush=True)
        rows.append(run_torchdistill(args.recipe, overrides))
    reference = rows[-1]["images_per_second"] if not args.skip_torchdistill else None
    for row in rows:
        row["speed_vs_torchdistill"] = round(row["images_per_second"] / reference, 3) if reference else None
    cfg = recipe.train
    report = {
        "command": "python tools/bench_torchdistill.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "torch": torch.__version__,
        "torchdistill": version,
        "threads": torch.get_num_threads(),
        "device": str(resolve_device(recipe.device)),
        "settings": {
            "recipe": str(args.recipe),
            "teacher": the_teacher(recipe),
            "student": f"{recipe.student.type} {recipe.student.encoder}",
            "epochs": cfg.epochs,
            "batch_size": cfg.batch_size,
            "samples_per_epoch": cfg.samples_per_epoch,
            "temperature": recipe.amalgamation.temperature,
            "optimizer": cfg.optimizer,
            "lr": cfg.lr,
            "weight_decay": cfg.weight_decay,
        },
        "teacher_top1": rows[0]["teacher_top1"],
        "rows": rows,
    }
    print()
    print(to_markdown(report))
    print(f"\n{report['command']}")
    if args.json:
        write_json(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
