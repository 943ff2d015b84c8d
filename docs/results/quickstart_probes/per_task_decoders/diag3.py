# per-image wall (GT > 5 m) offset of the student against the teacher
import sys, torch, torch.nn.functional as F
from amalgam.api import load_recipe, load_student
from amalgam.distill.plan import build_plan
torch.set_num_threads(1)
rec = load_recipe("/work/main/recipes/quickstart.yaml")
plan = build_plan(rec, log=lambda m: None)
student, _ = load_student(sys.argv[1] + "/student.pt"); student.eval()
ds = plan.eval_sets["scenes-val"]; t = plan.teachers["depth"]
off, res, tw, gw = [], [], [], []
with torch.no_grad():
    for i in range(0, 300, 50):
        items = [ds[j] for j in range(i, i + 50)]
        x = torch.stack([it["image"] for it in items]); g = torch.stack([torch.as_tensor(it["depth"]) for it in items]).float()
        td = t(x)[:, 0]; sd = student(x)["depth"][:, 0]
        for k in range(len(items)):
            m = g[k] > 5
            if m.sum() < 50: continue
            d = (torch.log(sd[k][m]) - torch.log(td[k][m]))
            off.append(d.mean()); res.append((d - d.mean()).abs().mean())
            tw.append((torch.log(td[k][m]) - torch.log(g[k][m])).mean())
off, res, tw = map(torch.stack, (off, res, tw))
print(f"wall images {len(off)}: student-teacher per-image log offset |mean| {off.abs().mean():.4f} std {off.std():.4f}; within-wall residual {res.mean():.4f}; teacher-truth per-image offset |mean| {tw.abs().mean():.4f} std {tw.std():.4f}")
