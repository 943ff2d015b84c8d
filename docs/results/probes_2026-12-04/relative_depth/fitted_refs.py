"""The quickstart's metric depth teacher and its metric-trained student, scored after the per-image fit
of inverse depth (RelativeDepthMeter), on the 300 val scenes the relative probe was scored on."""

import sys

import torch
from amalgam_tasks.depth import DepthMeter, RelativeDepthMeter

from amalgam.config.recipe import load_recipe
from amalgam.distill.eval_checks import eval_answers
from amalgam.distill.plan import build_plan
from amalgam.students.serialize import load_student

plan = build_plan(load_recipe("recipes/quickstart.yaml"), log=lambda m: None)
teacher, data = plan.teachers["depth"], plan.eval_sets["scenes-val"]
answers, truths = eval_answers(plan, teacher, data, len(data))
student, _ = load_student(sys.argv[1])
fitted, plain, s_fitted, s_plain = RelativeDepthMeter(), DepthMeter(), RelativeDepthMeter(), DepthMeter()
with torch.no_grad():
    for i, (a, t) in enumerate(zip(answers, truths)):
        fitted.update(a[None], t[None])
        plain.update(a[None], t[None])
        img = data[i]["image"][None]
        s = teacher.task.predict(student(img)["depth"], tuple(t.shape[-2:]))
        s_fitted.update(s, t[None])
        s_plain.update(s, t[None])
print("images", len(truths))
print("metric teacher, raw:", plain.compute())
print("metric teacher, fitted:", fitted.compute())
print("metric-trained student, raw:", s_plain.compute())
print("metric-trained student, fitted:", s_fitted.compute())
