"""Where a student's segmentation (or classification) decisions differ from one teacher's.

Prints three confusion matrices over the teacher's eval set (pixels for a segmentation teacher,
images for a classifier), all in the teacher's label space
(the student restricted to it, as `amalgam eval` scores it): ground truth x teacher, ground truth x
student, and teacher x student. Used in docs/benchmarks.md to see whether a student's mIoU gap is
in the amount of a class it paints or in where it paints it.

    python tools/seg_disagreement.py recipes/fashion_scenes_4ep.yaml runs/fashion_scenes_4ep/student.pt seg-tops \\
        --set "teachers.seg-tops.wrap={type: multi_transform, flip: true}"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from amalgam.config.recipe import load_recipe  # noqa: E402
from amalgam.data.views import BatchViews, collate  # noqa: E402
from amalgam.distill.plan import build_plan  # noqa: E402
from amalgam.evaluation.evaluate import by_size, prediction_size  # noqa: E402
from amalgam.evaluation.metrics import ConfusionMatrix  # noqa: E402
from amalgam.labels import IGNORE, apply_lookup, lookup, projection  # noqa: E402
from amalgam.students.serialize import load_student  # noqa: E402
from amalgam.teachers.inputs import answer_views  # noqa: E402


@torch.no_grad()
def disagreement(recipe_path: Path, student_path: Path, teacher: str, overrides: list[str] = ()) -> dict:
    """Confusion matrices ``gt_teacher``, ``gt_student``, ``teacher_student`` and the class names."""
    plan = build_plan(load_recipe(recipe_path, overrides=list(overrides)), log=lambda msg: None)
    if teacher not in plan.teachers or plan.teachers[teacher].space is None:
        labelled = [n for n, t in plan.teachers.items() if t.space is not None]
        raise SystemExit(f"{teacher!r} is not a teacher with labels in {recipe_path} (those are: {labelled})")
    student, spaces = load_student(student_path)
    student.eval()
    t = plan.teachers[teacher]
    task, dataset = t.task, plan.eval_sets[t.eval_name]
    proj, lut, n = projection(t.space, spaces[task.name]), lookup(dataset.classes, t.space), len(t.space)
    # ConfusionMatrix.update(columns, rows); ground-truth pixels mapped to IGNORE are skipped
    out = {k: ConfusionMatrix(n) for k in ("gt_teacher", "gt_student", "teacher_student")}
    for batch in DataLoader(dataset, batch_size=plan.recipe.train.eval_batch_size, collate_fn=collate):
        # each label map at its own resolution, the teacher on its own view (as amalgam eval scores)
        views = BatchViews(batch["image"], plan.student_view, batch.get("original"))
        student_out = student(batch["image"])[task.name]
        for rows, target in by_size(batch[task.target_key], torch.device("cpu")):
            truth = apply_lookup(target, lut)
            size = prediction_size(task, truth, batch["image"])
            by_teacher = task.predict(answer_views(t, views, rows, size, augmented=False)[0], size)
            by_student = task.predict(student_out[rows], size, proj)
            out["gt_teacher"].update(by_teacher, truth)
            out["gt_student"].update(by_student, truth)
            # over the same pixels/images as the ground-truth matrices, so the three sums agree
            out["teacher_student"].update(by_student, torch.where(truth == IGNORE, IGNORE, by_teacher))
    unit = "pixels" if task.dense else "images"
    return {"classes": list(t.space.names), "unit": unit, **{k: m.matrix for k, m in out.items()}}


def _print(title: str, matrix: torch.Tensor, names: list[str], unit: str) -> None:
    print(f"\n{title} (rows x columns, {unit})")
    width = max(10, *(len(n) for n in names))
    print(" " * width + "".join(f"{n[:width]:>{width + 1}}" for n in names))
    for name, row in zip(names, matrix.tolist()):
        print(f"{name:<{width}}" + "".join(f"{v:>{width + 1},}" for v in row))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("student", type=Path, help="a run's student.pt")
    parser.add_argument("teacher", help="a segmentation or classification teacher of the recipe")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override")
    args = parser.parse_args(argv)
    result = disagreement(args.recipe, args.student, args.teacher, args.set)
    names = result["classes"]
    _print("ground truth x teacher", result["gt_teacher"], names, result["unit"])
    _print("ground truth x student", result["gt_student"], names, result["unit"])
    _print("teacher x student", result["teacher_student"], names, result["unit"])
    painted_t, painted_s = result["gt_teacher"].sum(0), result["gt_student"].sum(0)
    agree = result["teacher_student"].diag()
    print(f"\nclass: {result['unit']} given it by teacher / student / both")
    for i, name in enumerate(names):
        print(f"  {name}: {int(painted_t[i]):,} / {int(painted_s[i]):,} / {int(agree[i]):,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
