"""How far bf16 autocast moves the quickstart teachers' answers on 64 val scenes (CPU)."""
import sys, torch
sys.path.insert(0, ".")
from pathlib import Path
from PIL import Image
import numpy as np
from amalgam.config.recipe import load_recipe
from amalgam.distill.plan import build_plan
torch.set_num_threads(1)
plan = build_plan(load_recipe("recipes/quickstart.yaml"), with_data=False, log=lambda m: None)
files = sorted(Path("data/scenes/val/images").glob("*.png"))[:64]
x = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB"))).permute(2, 0, 1).float() / 255 for f in files])
for name in ("seg-scenes", "depth"):
    t = plan.teachers[name]
    with torch.inference_mode():
        a = t(x) if not hasattr(t, "prepare") else t(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            b = t(x)
    a = a if torch.is_tensor(a) else next(iter(a.values())); b = b if torch.is_tensor(b) else next(iter(b.values()))
    a, b = a.float(), b.float()
    if name == "seg-scenes":
        print(name, "dtype", b.dtype, "argmax agreement", (a.argmax(1) == b.argmax(1)).float().mean().item(),
              "max |dlogit|", (a - b).abs().max().item(), "KL(T=2)", torch.nn.functional.kl_div((b/2).log_softmax(1), (a/2).log_softmax(1), log_target=True, reduction="batchmean").item() / (64*64))
    else:
        print(name, "mean |rel diff|", ((a - b).abs() / a.abs().clamp_min(1e-3)).mean().item(), "max", ((a - b).abs() / a.abs().clamp_min(1e-3)).max().item())
