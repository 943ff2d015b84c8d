"""Where a build's time goes: images/s of uncached and cached epochs, the step split into data /
teachers / student / optimizer, the student's training GFLOP/s against this machine's measured
matmul peak, and peak memory.

    python tools/bench.py recipes/quickstart.yaml --epochs 3 --samples 640 --limit 320 --json runs/bench.json

``--limit`` caps every source so that later epochs mostly re-draw cached images (the cache fills
lazily, one image the first time it is drawn); the per-epoch cache hit rate is printed.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from amalgam.config.recipe import load_recipe  # noqa: E402
from amalgam.distill.objective import student_tap_module  # noqa: E402
from amalgam.distill.plan import build_plan  # noqa: E402
from amalgam.io import write_json  # noqa: E402
from amalgam.students.build import build_student  # noqa: E402
from amalgam.training.engine import resolve_device, seed_everything, train  # noqa: E402
from amalgam.training.profiling import StepTimer  # noqa: E402
from amalgam.training.routing import planned_router  # noqa: E402

SECTIONS = ("data", "teachers", "student", "optimizer")


def matmul_peak(device: torch.device, dtype=torch.float32, n: int = 1024, repeats: int = 10) -> float:
    """Best GFLOP/s of an ``n x n`` matrix product on this device (the machine's practical peak).

    Where a 256 x 256 product already takes over 10 ms (bf16 on a CPU without bf16 units) the size
    and repeats shrink, so measuring a slow dtype costs about a second, not a minute.
    """

    def once(a: torch.Tensor, b: torch.Tensor) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    small = [torch.randn(256, 256, device=device, dtype=dtype) for _ in range(2)]
    if once(*small) > 0.01:
        n, repeats = 256, 3
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = min(once(a, b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def training_flops_per_image(
    student: torch.nn.Module, size, batch: int, device: torch.device, rows: Optional[dict] = None
) -> float:
    """FLOPs of one forward + backward of the student, per image (torch's flop counter); ``rows``
    routes the dense branches as a training step does (training/routing.py)."""
    from torch.utils.flop_counter import FlopCounterMode

    student.train()
    x = torch.rand(batch, 3, *size, device=device)
    with FlopCounterMode(display=False) as counter:
        out = student(x) if rows is None else student(x, rows=rows)
        sum(v.float().mean() for v in out.values()).backward()
    student.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch


def expected_rows(plan, student: torch.nn.Module, batch: int, device: torch.device) -> Optional[dict]:
    """The rows a build routes in a batch whose sources come in the recipe's shares (None: the
    build routes nothing, e.g. with a student feature tap inside a routed part)."""
    router, _ = planned_router(plan, student, student_tap_module(plan, student.spec), device)
    if router is None:
        return None
    weights = [plan.recipe.data.sources[name].weight for name in plan.sources.names]
    exact = [batch * w / sum(weights) for w in weights]
    counts = [int(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: counts[i] - exact[i])[: batch - sum(counts)]:
        counts[i] += 1  # largest remainders: the counts add up to the batch
    source = torch.cat([torch.full((n,), i) for i, n in enumerate(counts)]).to(device)
    return router.rows(source)


def per_epoch(history: list[dict], images_per_epoch: list[int]) -> list[dict]:
    """Per-epoch seconds, images/s and section split from the cumulative train_log rows."""
    rows, previous = [], {}
    for row, images in zip(history, images_per_epoch):
        now = {k: row.get(k, 0.0) for k in ["seconds"] + [f"time_{s}" for s in SECTIONS]}
        delta = {k: now[k] - previous.get(k, 0.0) for k in now}
        previous = now
        split = {s: delta[f"time_{s}"] for s in SECTIONS}
        split["student"] -= split["teachers"]  # the teachers run inside the student's section
        rows.append(
            {
                "epoch": row["epoch"],
                "seconds": round(delta["seconds"], 2),
                "images_per_second": round(images / delta["seconds"], 2),
                "cache_hit_rate": row.get("cache_hit_rate"),
                "split_seconds": {k: round(v, 2) for k, v in split.items()},
            }
        )
    return rows


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=640, help="images per epoch")
    parser.add_argument("--limit", type=int, default=320, help="cap on every source's images")
    parser.add_argument("--no-cache", action="store_true", help="teachers run live every epoch")
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument("--json", type=Path, help="write the measurements here")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE")
    args = parser.parse_args(argv)
    overrides = [f"train.epochs={args.epochs}", f"train.samples_per_epoch={args.samples}"]
    overrides += [f"train.cache_teachers={str(not args.no_cache).lower()}"]
    recipe = load_recipe(args.recipe, overrides + args.set)
    for name in recipe.data.sources:
        src = recipe.data.sources[name]
        src.limit = min(src.limit or args.limit, args.limit)
    shutil.rmtree(args.output, ignore_errors=True)  # a cold cache: epoch 1 is uncached
    args.output.mkdir(parents=True)
    device = resolve_device(recipe.device)
    plan = build_plan(recipe, log=lambda m: None)
    seed_everything(recipe.seed)
    student = build_student(plan.student_spec()).to(device)
    size = tuple(recipe.data.image_size)
    flop_batch = min(recipe.train.batch_size, 32)  # rows enough for the sources' shares, light on big batches
    rows = expected_rows(plan, student, flop_batch, device)
    flops = training_flops_per_image(student, size, flop_batch, device, rows)
    timer = StepTimer(device)
    result = train(plan, student, args.output, device, log=print, timer=timer)
    batch = recipe.train.batch_size
    images = [args.samples // batch * batch if args.samples >= 2 * batch else args.samples] * args.epochs
    epochs = per_epoch(result.history, images)
    for e in epochs:
        e["student_gflops"] = round(flops * images[0] / max(e["split_seconds"]["student"], 1e-9) / 1e9, 2)
    peak = matmul_peak(device)
    peak_bf16 = matmul_peak(device, torch.bfloat16)
    memory_mb = (
        torch.cuda.max_memory_allocated(device) / 2**20
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    cached = epochs[-1]["images_per_second"] / epochs[0]["images_per_second"] if len(epochs) > 1 else None
    # the share is of the peak of the dtype the student trained in (train.precision)
    reference = {"bf16": peak_bf16}.get(result.precision, peak)
    report = {
        "command": "python tools/bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "precision": result.precision,
        "epochs": epochs,
        "last_over_first_epoch_speed": round(cached, 2) if cached else None,
        "student_training_gflop_per_image": round(flops / 1e9, 3),
        "flops_routed": rows is not None,  # counted on a batch routed as training routes it
        "matmul_peak_gflops_fp32": round(peak, 1),
        "matmul_peak_gflops_bf16": round(peak_bf16, 1),
        "student_share_of_peak": round(epochs[-1]["student_gflops"] / reference, 3),
        "peak_memory_mb": round(memory_mb, 1),
    }
    print("\n| epoch | img/s | cache hits | data s | teachers s | student s | optimizer s | student GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|")
    for e in epochs:
        s = e["split_seconds"]
        hits = "-" if e["cache_hit_rate"] is None else f"{e['cache_hit_rate']:.0%}"
        print(
            f"| {e['epoch']} | {e['images_per_second']} | {hits} | {s['data']} | {s['teachers']} | {s['student']} "
            f"| {s['optimizer']} | {e['student_gflops']} |"
        )
    ratio = report["last_over_first_epoch_speed"]  # None with one epoch: no cached epoch to compare
    print(
        f"\nlast/first epoch speed {'n/a (one epoch)' if ratio is None else f'{ratio}x'}; student at "
        f"{report['student_share_of_peak']:.0%} of the {result.precision} matmul peak (fp32 {peak:.0f} GFLOP/s, "
        f"bf16 {peak_bf16:.0f}); trained in {result.precision}; peak memory {memory_mb:.0f} MB; "
        f"{report['threads']} threads"
    )
    if args.json:
        write_json(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
