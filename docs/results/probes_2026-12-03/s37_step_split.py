import sys, time, torch
sys.path.insert(0, "/work/main")
from amalgam.config.load import load_recipe
from amalgam.distill.plan import build_plan
from amalgam.students.build import build_student
from amalgam.training.trainer import Trainer
name = sys.argv[1]
ov = ["train.samples_per_epoch=640", "train.epochs=1"] + sys.argv[2:]
recipe = load_recipe(name, ov)
plan = build_plan(recipe, log=lambda m: None)
tr = Trainer(plan, build_student(plan.student_spec()), __import__("pathlib").Path("/work/main/runs/split_" + recipe.name), torch.device("cpu"), log=lambda m: None)
print("precision", tr.precision)
tr.student.train()
batches = []
for i, b in enumerate(tr.loader):
    batches.append(b)
    if len(batches) == 12: break
T = {"model": 0.0, "objective": 0.0}
def timed(fn, key):
    def w(*a, **k):
        t = time.perf_counter(); r = fn(*a, **k); T[key] += time.perf_counter() - t; return r
    return w
for b in batches: tr.step(b)
for b in batches: tr.step(b)
tr.model.forward = timed(tr.model.forward, "model")
tr.objective.forward = timed(tr.objective.forward, "objective")
t = time.perf_counter()
for b in batches: tr.step(b)
tot = time.perf_counter() - t
n = sum(len(b["image"]) for b in batches)
print(f"total {tot/n*1000:.2f} ms/img; model fwd {T['model']/n*1000:.2f}; objective fwd {T['objective']/n*1000:.2f}; rest (bwd+opt+aug+targets) {(tot-T['model']-T['objective'])/n*1000:.2f}")
