# Ceiling of a half/quarter-resolution output: teacher logits pooled then upsampled, mIoU vs labels.
import sys, torch, numpy as np, torch.nn.functional as F
from pathlib import Path
from PIL import Image
sys.path.insert(0, "recipes")
from amalgam.teachers.model_sources import build_model, load_checkpoint
base = Path("recipes")
m = build_model("python", {"factory": "demo_models:resnet_unet", "num_classes": 11, "in_channels": 3, "width": 16, "blocks": 1, "stem_stride": 1}, base)
load_checkpoint(m, Path("zoo/quickstart/seg-scenes.pt"), "seg"); m.eval()
root = Path("data/scenes/val"); n = 300
imgs = torch.stack([torch.from_numpy(np.array(Image.open(root/"images"/f"{i:05d}.png").convert("RGB"))).permute(2,0,1).float()/255 for i in range(n)])
labs = torch.stack([torch.from_numpy(np.array(Image.open(root/"labels"/f"{i:05d}.png"))).long() for i in range(n)])
print(imgs.shape, labs.shape, labs.max())
def miou(pred, lab, k=11):
    cm = torch.bincount(lab.flatten()*k+pred.flatten(), minlength=k*k).reshape(k,k).double()
    iou = cm.diag()/(cm.sum(0)+cm.sum(1)-cm.diag())
    return iou.mean().item(), iou
with torch.no_grad():
    # teacher normalisation? check recipe: input size only -> default imagenet mean/std?
    for name, x in [("raw", imgs), ("imnet", (imgs-torch.tensor([0.485,0.456,0.406])[:,None,None])/torch.tensor([0.229,0.224,0.225])[:,None,None])]:
        lo = m(x); print(name, "full", round(miou(lo.argmax(1), labs)[0],4))
    for f in (2, 4):
        lp = F.interpolate(F.avg_pool2d(lo, f), size=64, mode="bilinear", align_corners=False)
        mi, iou = miou(lp.argmax(1), labs); print("pool", f, round(mi,4), [round(v,2) for v in iou.tolist()])
        pp = F.interpolate(F.avg_pool2d(lo.softmax(1), f), size=64, mode="bilinear", align_corners=False)
        print(" prob-pool", f, round(miou(pp.argmax(1), labs)[0],4))
