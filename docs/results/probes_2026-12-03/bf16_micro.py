"""fp32 against bf16 autocast (CPU): forward + backward of a recipe's student, channels_last, one
random batch repeated (no teachers, no data; a sum of squares as the loss). From the repository root:

    OMP_NUM_THREADS=1 python docs/results/probes_2026-12-03/bf16_micro.py recipes/quickstart.yaml 16
    OMP_NUM_THREADS=1 python docs/results/probes_2026-12-03/bf16_micro.py recipes/shapes.yaml 32
"""
import sys, time, torch
sys.path.insert(0, ".")
from amalgam.config.recipe import load_recipe
from amalgam.distill.plan import build_plan
from amalgam.students.build import build_student
recipe = load_recipe(sys.argv[1]); bs = int(sys.argv[2])
plan = build_plan(recipe, log=lambda m: None)
student = build_student(plan.student_spec()).to(memory_format=torch.channels_last)
h, w = recipe.data.image_size
x = torch.randn(bs, 3, h, w).to(memory_format=torch.channels_last)
def step(dtype):
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if dtype else torch.autocast("cpu", enabled=False)
    with ctx:
        out = student(x)
        loss = sum(v.float().square().mean() for v in out.values())
    loss.backward()
for name, dt in [("fp32", None), ("bf16", torch.bfloat16), ("fp32", None), ("bf16", torch.bfloat16)]:
    for _ in range(3): step(dt)
    t = time.perf_counter(); n = 10
    for _ in range(n): step(dt)
    dtm = (time.perf_counter() - t) / n
    print(f"{name}: {dtm*1000:.1f} ms/step, {bs/dtm:.0f} img/s", flush=True)
