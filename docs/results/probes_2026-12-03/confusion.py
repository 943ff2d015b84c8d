# Confusion of the student's labels against the teacher's on the teacher's item pixels (val scenes).
import sys, torch, numpy as np, torch.nn.functional as F
from pathlib import Path
from PIL import Image
sys.path.insert(0, "recipes")
from amalgam.teachers.model_sources import build_model, load_checkpoint
from amalgam.students.serialize import load_student
run = Path(sys.argv[1])
m = build_model("python", {"factory": "demo_models:resnet_unet", "num_classes": 11, "in_channels": 3, "width": 16, "blocks": 1, "stem_stride": 1}, Path("recipes"))
load_checkpoint(m, Path("zoo/quickstart/seg-scenes.pt"), "seg"); m.eval()
st, spaces = load_student(run / "student.pt")
root = Path("data/scenes/val"); n = 300
imgs = torch.stack([torch.from_numpy(np.array(Image.open(root/"images"/f"{i:05d}.png").convert("RGB"))).permute(2,0,1).float()/255 for i in range(n)])
mean = torch.tensor([0.485,0.456,0.406])[:,None,None]; std = torch.tensor([0.229,0.224,0.225])[:,None,None]
with torch.no_grad():
    t = m((imgs-mean)/std).argmax(1)
    s = st(imgs)["segmentation"].argmax(1)
names = spaces["segmentation"].names
k = len(names)
cm = torch.bincount(t.flatten()*k + s.flatten(), minlength=k*k).reshape(k, k).double()
cm = cm / cm.sum(1, keepdim=True)
print("rows: teacher label; cols: student label (share of the teacher's pixels)")
print("%12s " % "" + " ".join("%6s" % n[:6] for n in names))
for i, n in enumerate(names):
    print("%12s " % n[:12] + " ".join("%6.2f" % v for v in cm[i].tolist()))
