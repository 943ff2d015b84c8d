"""Probe: the student sees the items source zoomed out (item shrunk by r ~ U(LO, 1), placed at random
on a black canvas); teachers' targets are unchanged (they come from the originals / cache)."""
import os, sys
import torch
import torch.nn.functional as F
from amalgam.training import augment as A

LO = float(os.environ.get("ZOOM_LO", "0.45"))
SRC = os.environ.get("ZOOM_SRC", "items")
_orig = A.BatchAugment.__call__
_gen = torch.Generator().manual_seed(123)

def zoom(images, rows):
    out = images.clone()
    H, W = images.shape[-2:]
    for i in rows.tolist():
        r = LO + (1 - LO) * torch.rand((), generator=_gen).item()
        h, w = max(2, round(H * r)), max(2, round(W * r))
        small = F.interpolate(images[i : i + 1], size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        top = int(torch.randint(0, H - h + 1, (), generator=_gen)); left = int(torch.randint(0, W - w + 1, (), generator=_gen))
        out[i] = 0
        out[i, :, top : top + h, left : left + w] = small[0]
    return out

def patched(self, raw, source, groups=None):
    aug = _orig(self, raw, source, groups)
    rows = (source == self.zoom_id).nonzero().flatten()
    if rows.numel():
        aug.images = zoom(aug.images, rows)
    return aug

_init = A.BatchAugment.__init__
def init(self, cfg, source_names, seed, local):
    _init(self, cfg, source_names, seed, local)
    self.zoom_id = source_names.index(SRC)
A.BatchAugment.__init__ = init
A.BatchAugment.__call__ = patched

from amalgam.cli import main
sys.exit(main(sys.argv[1:]))
