"""Which fast paths pay off on this machine: each one timed against its plain counterpart.

On a recipe's own models (its student at the recipe's image size, each of its teachers), with
fixed random batches:

* teacher inference: ``no_grad`` vs ``inference_mode``, NCHW vs channels_last;
* student training step (forward + backward + AdamW): fp32 vs bf16 autocast (CPU) or fp16/bf16
  AMP (CUDA), NCHW vs channels_last, eager vs ``torch.compile`` (``--compile``; the compile time
  itself is reported apart);
* a plain matrix product fp32 vs bf16 (the machine's peak), to tell slow convolutions from slow
  arithmetic.

    python tools/bench_fastpaths.py recipes/quickstart.yaml --batch 32 --json runs/fastpaths.json

amalgam turns a path on by default only where this measured a gain (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from bench import matmul_peak  # noqa: E402

from amalgam.config.recipe import load_recipe  # noqa: E402
from amalgam.distill.plan import build_plan  # noqa: E402
from amalgam.io import write_json  # noqa: E402
from amalgam.students.build import build_student  # noqa: E402
from amalgam.training.engine import resolve_device, seed_everything  # noqa: E402


def best_seconds(fn: Callable[[], None], repeats: int, warmup: int = 1, device: Optional[torch.device] = None) -> float:
    """Fastest of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def teacher_rows(plan, x: torch.Tensor, repeats: int) -> list[dict]:
    """Images/s of every teacher under no_grad / inference_mode, NCHW / channels_last."""
    rows = []
    for name, teacher in plan.teachers.items():
        teacher.eval()
        variants = {}
        for last in (False, True):
            if last:
                teacher.use_channels_last()
            for mode, ctx in (("no_grad", torch.no_grad), ("inference_mode", torch.inference_mode)):

                def run(ctx=ctx, teacher=teacher) -> None:
                    with ctx():
                        teacher(x)

                key = f"{mode}{' + channels_last' if last else ''}"
                variants[key] = round(x.shape[0] / best_seconds(run, repeats, device=x.device), 1)
        rows.append({"model": f"teacher {name}", "images_per_second": variants})
    return rows


def student_step(student: torch.nn.Module, x: torch.Tensor, dtype: Optional[torch.dtype]) -> Callable[[], None]:
    """One training step of ``student`` on ``x`` (mean of every output as the loss), optional autocast."""
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4)

    def step() -> None:
        ctx = torch.autocast(x.device.type, dtype=dtype) if dtype is not None else nullcontext()
        with ctx:
            out = student(x)
            loss = sum(v.float().mean() for v in out.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def student_rows(plan, x: torch.Tensor, repeats: int, compile_too: bool) -> dict:
    """Student training images/s per variant (each on a fresh copy of the student)."""
    low = torch.bfloat16 if x.device.type == "cpu" or torch.cuda.is_bf16_supported() else torch.float16
    variants, notes = {}, {}
    for key, dtype, last in (
        ("fp32", None, False),
        (f"{str(low).split('.')[-1]} autocast", low, False),
        ("fp32 + channels_last", None, True),
    ):
        seed_everything(0)
        student = build_student(plan.student_spec()).to(x.device).train()
        inp = x
        if last:
            student.to(memory_format=torch.channels_last)
            inp = x.contiguous(memory_format=torch.channels_last)
        variants[key] = round(x.shape[0] / best_seconds(student_step(student, inp, dtype), repeats), 2)
    if compile_too:
        seed_everything(0)
        student = build_student(plan.student_spec()).to(x.device).train()
        compiled = torch.compile(student)
        step = student_step(compiled, x, None)
        start = time.perf_counter()
        step()  # compiles forward and backward
        notes["compile_seconds"] = round(time.perf_counter() - start, 1)
        variants["fp32 + torch.compile"] = round(x.shape[0] / best_seconds(step, repeats, warmup=1), 2)
    return {"model": "student (training step)", "images_per_second": variants, **notes}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="default: the recipe's image_size")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (inductor; minutes on CPU)")
    parser.add_argument("--json", type=Path, help="write the measurements here")
    args = parser.parse_args(argv)
    recipe = load_recipe(args.recipe, ["train.channels_last=false"])
    device = resolve_device(recipe.device)
    plan = build_plan(recipe, log=lambda m: None)
    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, *(args.size or recipe.data.image_size), device=device)
    rows = teacher_rows(plan, x, args.repeats) + [student_rows(plan, x, args.repeats, args.compile)]
    peaks = {str(d).split(".")[-1]: round(matmul_peak(device, d), 1) for d in (torch.float32, torch.bfloat16)}
    report = {
        "command": "python tools/bench_fastpaths.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "batch": args.batch,
        "matmul_peak_gflops": peaks,
        "rows": rows,
    }
    print(f"# {report['command']}  ({device}, {report['threads']} threads, torch {torch.__version__})")
    print(f"matmul peak GFLOP/s: {peaks}")
    print("\n| model | variant | images/s | vs first |\n|---|---|---|---|")
    for row in rows:
        base = next(iter(row["images_per_second"].values()))
        for key, value in row["images_per_second"].items():
            print(f"| {row['model']} | {key} | {value} | {value / base:.2f}x |")
        if "compile_seconds" in row:
            print(f"| {row['model']} | compile time | {row['compile_seconds']} s | |")
    if args.json:
        write_json(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
