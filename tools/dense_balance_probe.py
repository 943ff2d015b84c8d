"""Probe of the dense distillation loss alone: does the student learn small classes from it?

Two *oracle* teachers (their logits are the ground truth of the shapes world, ``scale`` times one-hot,
each over its own partial label space whose background covers the classes it does not know, as
``recipes/zoo/shapes.yaml`` splits them) teach a small U-Net student through the engine's own
``SegmentationTask.distill_loss``. Teachers are perfect, so a class the student misses is the
loss's fault (or the budget's), not the teachers'. Each ``--balance`` value (the power of
``amalgamation.class_balance``) trains the same student from the same seed; the student's IoU per
unified class on the val scenes is printed and written as JSON.

Usage::

    python tools/dense_balance_probe.py --data data/shapes --balance 0 0.5 1 --json runs/balance_probe.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from amalgam.evaluation.metrics import ConfusionMatrix
from amalgam.labels import LabelSpace, projection, unify
from amalgam.task import DistillOptions, get_task

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
from shapes_models import tiny_unet  # noqa: E402

#: the shapes zoo's label splits (``--teacher`` gives others, e.g. the fashion-scenes zoo's)
SHAPES_TEACHERS = ["seg-a=circle|square|triangle|cross", "seg-b=triangle|ring|diamond|circle"]


def parse_teachers(specs: list[str]) -> dict[str, LabelSpace]:
    """``name=class|class|...`` -> a label space with a catch-all background first."""
    out = {}
    for spec in specs:
        name, classes = spec.split("=", 1)
        out[name] = LabelSpace(("background", *classes.split("|")), "background")
    return out


def load(folder: Path, count: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` images ``[N, 3, size, size]`` in [0, 1] and class maps ``[N, size, size]``."""
    files = sorted((folder / "images").glob("*.png"))[:count]
    images = [np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR)) for f in files]
    labels = [np.asarray(Image.open(folder / "labels" / f.name).resize((size, size), Image.NEAREST)) for f in files]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    return x, torch.from_numpy(np.stack(labels)).long()


def oracle_logits(labels: torch.Tensor, classes: list[str], space: LabelSpace, scale: float) -> torch.Tensor:
    """``scale`` times the one-hot of each pixel's class in ``space`` (unknown classes: its background)."""
    lut = torch.tensor([space.names.index(n) if n in space.names else space.background_index for n in classes])
    return F.one_hot(lut[labels], len(space)).permute(0, 3, 1, 2).float() * scale


def run(balance: float, data, val, classes: list[str], teachers: dict[str, LabelSpace], args) -> dict:
    """Trains one student with ``class_balance = balance``; its per-class IoU on ``val``."""
    torch.manual_seed(args.seed)
    task = get_task("segmentation")
    unified = unify(list(teachers.values()), background="background")
    if sorted(unified.names) != sorted(classes):
        raise SystemExit(f"the teachers' classes {unified.names} are not the data's {classes}")
    lut = torch.tensor([unified.names.index(n) for n in classes])  # data ids -> unified ids
    projections = {n: projection(s, unified) for n, s in teachers.items()}
    student = tiny_unet(len(unified), width=args.width)
    opt = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=1e-4)
    x, y = data
    steps = args.epochs * (len(x) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    gen = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    for _ in range(args.epochs):
        for idx in torch.randperm(len(x), generator=gen).split(args.batch)[: len(x) // args.batch]:
            out = student(x[idx])
            loss = sum(
                task.distill_loss(
                    out,
                    oracle_logits(y[idx], classes, s, args.scale),
                    DistillOptions(
                        projections[n], args.temperature, class_balance=balance, after_projection=args.after_projection
                    ),
                )
                for n, s in teachers.items()
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    student.eval()
    cm = ConfusionMatrix(len(unified))
    with torch.no_grad():
        for i in range(0, len(val[0]), 64):
            cm.update(student(val[0][i : i + 64]).argmax(1), lut[val[1][i : i + 64]])
    iou = [round(v, 4) for v in cm.iou().tolist()]
    return {
        "balance": balance,
        "iou": dict(zip(unified.names, iou)),
        "miou": round(sum(iou) / len(iou), 4),
        "seconds": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("data/shapes"))
    p.add_argument("--balance", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    p.add_argument("--train-images", type=int, default=2000)
    p.add_argument("--val-images", type=int, default=300)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--temperature", type=float, default=2.0, help="the recipe default")
    p.add_argument("--scale", type=float, default=4.0, help="oracle logit of the true class")
    p.add_argument("--after-projection", action="store_true", help="amalgamation.temperature_after_projection: true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teacher", action="append", help="name=class|class|... (default: the shapes zoo's two)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    data = load(args.data / "train", args.train_images, args.size)
    val = load(args.data / "val", args.val_images, args.size)
    classes = (args.data / "train" / "classes.txt").read_text().split("\n")
    classes = [c.strip() for c in classes if c.strip()]
    teachers = parse_teachers(args.teacher or SHAPES_TEACHERS)
    results = []
    for balance in args.balance:
        results.append(run(balance, data, val, classes, teachers, args))
        print(json.dumps(results[-1]), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {"args": {k: str(v) for k, v in vars(args).items()}, "runs": results}
        args.json.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
