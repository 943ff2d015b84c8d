"""Teachers for the label trials: wrappers that re-label the zoo's competent teachers
(exact, known mappings), plus a tiny CNN trained here (tiny_cnn)."""
import sys
from pathlib import Path

import torch
from torch import nn
ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "recipes"))
import demo_models  # noqa

FM = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
SEG = ["background"] + FM
ZOO = str(ROOT / "zoo" / "quickstart") + "/"


class Regroup(nn.Module):
    """Output j = logsumexp of the inner model's logits over groups[j] (class dim 1)."""
    def __init__(self, inner, groups):
        super().__init__()
        self.inner = inner
        self.groups = [list(g) for g in groups]

    def forward(self, x):
        z = self.inner(x)
        return torch.cat([torch.logsumexp(z[:, g], 1, keepdim=True) for g in self.groups], 1)


def _groups(groups, space):
    return [[space.index(n) for n in ([g] if isinstance(g, str) else g)] for g in groups]


def cls_view(groups):
    """A partial/coarse/reordered view of the zoo Fashion-MNIST classifier; groups: list of
    original class names or lists of them (canonical names)."""
    m = demo_models.small_resnet(10, in_channels=1, width=16, blocks=1)
    m.load_state_dict(torch.load(ZOO + "cls-items.pt", weights_only=True))
    return Regroup(m, _groups(groups, FM)).eval()


def seg_view(groups):
    m = demo_models.resnet_unet(11, in_channels=3, width=16, blocks=1, stem_stride=1)
    sd = torch.load(ZOO + "seg-scenes.pt", weights_only=True)
    m.load_state_dict(sd)
    return Regroup(m, _groups(groups, SEG)).eval()


def tiny_cnn(num_classes):
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, num_classes))
