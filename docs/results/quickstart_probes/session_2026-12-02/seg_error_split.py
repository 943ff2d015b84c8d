# Where the student's segmentation loses against the teacher: fg/bg vs item-class confusion.
import sys, torch, numpy as np, torch.nn.functional as F
from pathlib import Path
from PIL import Image
sys.path.insert(0, "recipes")
from amalgam.teachers.model_sources import build_model, load_checkpoint
from amalgam.students.serialize import load_student
run = Path(sys.argv[1])
m = build_model("python", {"factory": "demo_models:resnet_unet", "num_classes": 11, "in_channels": 3, "width": 16, "blocks": 1, "stem_stride": 1}, Path("recipes"))
load_checkpoint(m, Path("zoo/quickstart/seg-scenes.pt"), "seg"); m.eval()
st, spaces = load_student(run / "student.pt"); st.eval()
print(spaces)
root = Path(sys.argv[2] if len(sys.argv) > 2 else "data/scenes/val"); n = 300
imgs = torch.stack([torch.from_numpy(np.array(Image.open(root/"images"/f"{i:05d}.png").convert("RGB"))).permute(2,0,1).float()/255 for i in range(n)])
labs = torch.stack([torch.from_numpy(np.array(Image.open(root/"labels"/f"{i:05d}.png"))).long() for i in range(n)])
mean = torch.tensor([0.485,0.456,0.406])[:,None,None]; std = torch.tensor([0.229,0.224,0.225])[:,None,None]
with torch.no_grad():
    t = m((imgs-mean)/std).argmax(1)
    so = st(imgs)
    seg = [k for k in so if so[k].dim()==4 and so[k].shape[1]==11][0]
    s = F.interpolate(so[seg], size=64, mode="bilinear", align_corners=False).argmax(1)
def stats(p, name):
    k=11; cm = torch.bincount(labs.flatten()*k+p.flatten(), minlength=k*k).reshape(k,k).double()
    iou = cm.diag()/(cm.sum(0)+cm.sum(1)-cm.diag())
    fgp, fgl = p>0, labs>0
    fgiou = (fgp&fgl).sum()/(fgp|fgl).sum()
    both = fgp&fgl
    acc = (p[both]==labs[both]).float().mean()
    print(f"{name}: mIoU {iou.mean():.4f} fg-IoU {fgiou:.4f} class-acc-on-fg {acc:.4f}")
    print("  ", [round(v,2) for v in iou.tolist()])
    return cm
stats(t, "teacher"); cm = stats(s, "student")
# student's agreement with teacher
print("student==teacher pixel agreement", (s==t).float().mean().item(), "on teacher-fg", (s[t>0]==t[t>0]).float().mean().item())
