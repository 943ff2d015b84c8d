"""Interleaved A/B: the student's forward and backward, contiguous vs channels_last, batch B at 64 px.

    OMP_NUM_THREADS=2 python docs/results/probes_2026-12-03/cl_micro.py 16 recipes/quickstart.yaml
    OMP_NUM_THREADS=2 python docs/results/probes_2026-12-03/cl_micro.py 32 recipes/shapes.yaml
"""
import sys, time, torch
from pathlib import Path
ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from amalgam.config.recipe import load_recipe
from amalgam.distill.plan import build_plan
from amalgam.students.build import build_student
torch.manual_seed(0)
B = int(sys.argv[1]) if len(sys.argv) > 1 else 16
recipe = load_recipe(sys.argv[2] if len(sys.argv) > 2 else ROOT / "recipes/quickstart.yaml")
plan = build_plan(recipe, with_data=False, log=lambda s: None)
a = build_student(plan.student_spec()).train()
b = build_student(plan.student_spec()).train().to(memory_format=torch.channels_last)
b.load_state_dict(a.state_dict())
x = torch.randn(B, 3, 64, 64)
def step(m, inp):
    out = m(inp)
    loss = sum(v.float().mean() for v in (out.values() if isinstance(out, dict) else [out]))
    loss.backward()
    m.zero_grad(set_to_none=True)
for _ in range(3):
    step(a, x); step(b, x.contiguous(memory_format=torch.channels_last))
ta = tb = 0.0
for r in range(15):
    t = time.perf_counter(); step(a, x); ta += time.perf_counter() - t
    t = time.perf_counter(); step(b, x.contiguous(memory_format=torch.channels_last)); tb += time.perf_counter() - t
print(f"B={B} threads={torch.get_num_threads()} contiguous {B*15/ta:.1f} img/s, channels_last {B*15/tb:.1f} img/s")
