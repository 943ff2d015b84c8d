import sys, torch, torch.nn.functional as F
from amalgam.api import load_recipe, load_student
from amalgam.distill.plan import build_plan
torch.set_num_threads(1)
run = sys.argv[1]
rec = load_recipe("/work/exp/wt/recipes/quickstart.yaml")
plan = build_plan(rec, log=lambda m: None)
student, _ = load_student(run + "/student.pt"); student.eval()
ds = plan.eval_sets["scenes-val"]; t = plan.teachers["depth"]
G, R, A = [], [], []
with torch.no_grad():
    for i in range(0, 300, 50):
        items = [ds[j] for j in range(i, i + 50)]
        x = torch.stack([it["image"] for it in items])
        td = t(x)[:, 0]; sd = student(x)["depth"][:, 0]
        g = torch.log(sd) - torch.log(td)
        m = g.flatten(1).mean(1)
        G.append(m); R.append((g - m[:, None, None]).abs().flatten(1).mean(1)); A.append(g.abs().flatten(1).mean(1))
G, R, A = map(torch.cat, (G, R, A))
print(f"mean|log s/t| {A.mean():.4f}; per-image global offset |mean| {G.abs().mean():.4f} (std {G.std():.4f}); residual after removing it {R.mean():.4f}")
