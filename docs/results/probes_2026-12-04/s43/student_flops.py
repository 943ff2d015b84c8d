"""Forward FLOPs of the quickstart student per module (stop 43): python docs/results/probes_2026-12-04/s43/student_flops.py [key=value ...]"""
import sys, torch
from torch.utils.flop_counter import FlopCounterMode
import amalgam
from amalgam.distill.plan import build_plan
from amalgam.config.load import load_recipe
from amalgam.students.build import build_student
recipe = load_recipe("recipes/quickstart.yaml", sys.argv[1:])  # --set overrides as arguments
plan = build_plan(recipe, with_data=False) if 'with_data' in build_plan.__code__.co_varnames else build_plan(recipe)
student = build_student(plan.student_spec(recipe.student.branch_at))
student.train()
x = torch.rand(16, 3, 64, 64)
with FlopCounterMode(display=False, depth=4) as fc:
    out = student(x)
print({k: tuple(v.shape) for k, v in out.items()})
tot = fc.get_total_flops()
print("total fwd GFLOP/img", tot/16/1e9)
for mod, d in sorted(fc.get_flop_counts().items(), key=lambda kv: -sum(kv[1].values()))[:40]:
    print(f"{sum(d.values())/16/1e6:9.2f} MFLOP  {mod}")
