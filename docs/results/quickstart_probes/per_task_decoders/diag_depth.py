import sys, torch, torch.nn.functional as F
from amalgam.api import load_recipe, load_student
from amalgam.distill.plan import build_plan
torch.set_num_threads(1)
run = sys.argv[1]; split = sys.argv[2] if len(sys.argv) > 2 else "val"
rec = load_recipe("/work/exp/wt/recipes/quickstart.yaml", [f"data.eval.scenes-val.path=../data/scenes/{split}"])
plan = build_plan(rec, log=lambda m: None)
student, _ = load_student(run + "/student.pt"); student.eval()
ds = plan.eval_sets["scenes-val"]
t = plan.teachers["depth"]
bins = {b: [0.0, 0.0, 0] for b in (2, 3, 4, 5, 6, 8, 99)}
acc = {k: 0.0 for k in ["st", "sg", "tg", "n", "st_edge", "n_edge", "sg_edge", "tg_edge"]}
with torch.no_grad():
    for i in range(0, 300, 50):
        items = [ds[j] for j in range(i, i + 50)]
        x = torch.stack([it["image"] for it in items]); g = torch.stack([torch.as_tensor(it["depth"]) for it in items]).float()
        td = t(x)[:, 0]; sd = student(x)["depth"][:, 0]
        if sd.shape[-2:] != g.shape[-2:]:
            sd = F.interpolate(sd[:, None], g.shape[-2:], mode="bilinear")[:, 0]; td = F.interpolate(td[:, None], g.shape[-2:], mode="bilinear")[:, 0]
        lg = torch.log(g.clamp(min=1e-3))
        edge = torch.zeros_like(g, dtype=torch.bool)
        dx = (lg[:, :, 1:] - lg[:, :, :-1]).abs() > 0.05; dy = (lg[:, 1:] - lg[:, :-1]).abs() > 0.05
        edge[:, :, 1:] |= dx; edge[:, :, :-1] |= dx; edge[:, 1:] |= dy; edge[:, :-1] |= dy
        edge = F.max_pool2d(edge.float()[:, None], 3, 1, 1)[:, 0] > 0
        lo = 0
        for b in bins:
            m = (g >= lo) & (g < b); lo = b
            bins[b][0] += ((sd - g) ** 2)[m].sum().item(); bins[b][1] += ((td - g) ** 2)[m].sum().item(); bins[b][2] += m.sum().item()
        acc["st"] += ((sd - td) ** 2).sum().item(); acc["sg"] += ((sd - g) ** 2).sum().item(); acc["tg"] += ((td - g) ** 2).sum().item(); acc["n"] += g.numel()
        acc["st_edge"] += ((sd - td) ** 2)[edge].sum().item(); acc["sg_edge"] += ((sd - g) ** 2)[edge].sum().item(); acc["tg_edge"] += ((td - g) ** 2)[edge].sum().item(); acc["n_edge"] += edge.sum().item()
print("bins:", " ".join(f"<{b}:{(bins[b][0]/max(bins[b][2],1))**.5:.2f}/{(bins[b][1]/max(bins[b][2],1))**.5:.2f}({bins[b][2]/acc['n']:.0%})" for b in bins))
n, ne = acc["n"], acc["n_edge"]
print(f"{split}: rmse s-t {(acc['st']/n)**.5:.3f} s-gt {(acc['sg']/n)**.5:.3f} t-gt {(acc['tg']/n)**.5:.3f} | edge px {ne/n:.2%}: share of s-gt sq err on edges {acc['sg_edge']/acc['sg']:.2%}, t-gt {acc['tg_edge']/acc['tg']:.2%}, s-t {acc['st_edge']/acc['st']:.2%}")
print(f"non-edge rmse s-gt {((acc['sg']-acc['sg_edge'])/(n-ne))**.5:.3f} t-gt {((acc['tg']-acc['tg_edge'])/(n-ne))**.5:.3f}")
