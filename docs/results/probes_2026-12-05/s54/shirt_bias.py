"""Feasibility: how much can seg-scenes' Shirt IoU gain from a shifted decision (logit bias)?"""
import sys, torch
sys.path[:0] = [".", "./tasks", "./tools"]
from pathlib import Path
from torch.utils.data import DataLoader
import train_teacher as tt
torch.set_num_threads(1)
zp = Path("./recipes/zoo/quickstart.yaml")
zoo = tt.load_zoo(zp); base = zp.resolve().parent
name = "seg-scenes"
cfg, task = tt.zoo_teacher(zoo, name)
path = tt.artefact_path(cfg, base)
model = tt.load_saved(name, cfg, path, base / zoo.recipe_dir).eval()
split = sys.argv[1] if len(sys.argv) > 1 else "val"
spec = cfg.train.val if split == "val" else cfg.train.data
data, lut = tt.load_labelled("x", spec, base, cfg, task, None)
outs, ys = [], []
with torch.no_grad():
    for i, batch in enumerate(DataLoader(data, batch_size=64)):
        x, y = tt.to_teacher_batch(batch, cfg, task, lut, "cpu", None)
        outs.append(model(x).float()); ys.append(y)
        if split != "val" and i >= 15: break
out, y = torch.cat(outs), torch.cat(ys)
k = cfg.labels.index("Shirt")
n = len(cfg.labels)
for b in [0, 0.25, 0.5, 0.75, 1.0, 1.5]:
    o = out.clone(); o[:, k] += b
    p = o.argmax(1)
    m = torch.bincount((y * n + p).flatten(), minlength=n * n).reshape(n, n).double()
    tp = m.diag(); iou = tp / (m.sum(0) + m.sum(1) - tp)
    print(f"bias {b}: mIoU {iou.mean():.4f} Shirt {iou[k]:.4f} min-other {min(v for j,v in enumerate(iou.tolist()) if j!=k):.4f} " + " ".join(f"{v:.3f}" for v in iou.tolist()), flush=True)
