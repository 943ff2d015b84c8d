"""Diagnostic: recompute the student's BatchNorm running stats on scenes only, save, then score with amalgam eval."""
import sys, glob, torch
from pathlib import Path
from PIL import Image
import numpy as np
sys.path.insert(0, "/work/main")
from amalgam.students.serialize import load_student, save_student
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
blob = torch.load(src, weights_only=False)
student, spaces = load_student(src, check_inputs=False)
files = sorted(glob.glob("/work/main/data/scenes/train/images/*"))[::max(1, 8000 // n)][:n]
for m in student.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
        m.reset_running_stats(); m.momentum = None
student.train()
with torch.no_grad():
    for i in range(0, len(files), 32):
        x = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB").resize((64, 64)))).permute(2, 0, 1).float() / 255 for f in files[i:i+32]])
        student(x)
student.eval()
save_student(student, spaces, blob["recipe"], Path(dst))
print("saved", dst)
