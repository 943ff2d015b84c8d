"""Python model factories of the shapes world's teachers (see tools/make_shapes.py).

Recipes and zoo files name them as ``model: {from: python, factory: shapes_models:tiny_unet, ...}``.
"""

from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class TinyUNet(nn.Module):
    """A three-level U-Net (plain conv blocks, max-pool down, transposed-conv up) returning logits."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 16):
        super().__init__()
        w = width
        self.enc1, self.enc2, self.enc3 = _block(in_channels, w), _block(w, 2 * w), _block(2 * w, 4 * w)
        self.pool = nn.MaxPool2d(2)
        self.up2, self.dec2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2), _block(4 * w, 2 * w)
        self.up1, self.dec1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2), _block(2 * w, w)
        self.head = nn.Conv2d(w, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        e3 = self.enc3(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up2(e3), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.head(d1)


def tiny_unet(num_classes: int, in_channels: int = 3, width: int = 16) -> nn.Module:
    """A small U-Net segmenter (input sides divisible by 4).

    Args:
        num_classes: output logits per pixel.
        in_channels: image channels.
        width: channels of the first level (doubled per level).
    """
    return TinyUNet(num_classes, in_channels, width)


class TinyVGG(nn.Module):
    """Three conv blocks (each then max-pooled), global average pool, linear: a classifier for small tiles."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 16):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _block(in_channels, w), nn.MaxPool2d(2), _block(w, 2 * w), nn.MaxPool2d(2), _block(2 * w, 4 * w)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def tiny_vgg(num_classes: int, in_channels: int = 3, width: int = 16) -> nn.Module:
    """A small VGG-style classifier (keeps full resolution in its first block, unlike ImageNet stems).

    Args:
        num_classes: output logits.
        in_channels: image channels.
        width: channels of the first block (doubled per block).
    """
    return TinyVGG(num_classes, in_channels, width)
