"""Python model factories of the demo teacher zoo.

Recipes and zoo files name them as ``model: {from: python, factory: demo_models:small_resnet, ...}``;
amalgam imports this module from the recipe's folder.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, conv1x1


class SmallResNet(nn.Module):
    """ResNet-18 for small grey images: 3x3 stride-1 stem, no max-pool, base width ``width``.

    Module names follow torchvision's ResNet (``conv1``, ``layer1`` .. ``layer4``, ``fc``) so
    feature taps such as ``layer3`` mean the same thing as on a standard ResNet.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        width: int = 32,
        blocks: tuple[int, ...] = (2, 2, 2, 2),
        stem_stride: int = 1,
    ):
        super().__init__()
        # A 7x7 stride-2 stem plus max-pool would shrink a 28-32 px image 4x before the first block.
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=stem_stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.inplanes = width
        self.layer1 = self._make_layer(width, blocks[0], stride=1)
        self.layer2 = self._make_layer(width * 2, blocks[1], stride=2)
        self.layer3 = self._make_layer(width * 4, blocks[2], stride=2)
        self.layer4 = self._make_layer(width * 8, blocks[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width * 8, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():
            if isinstance(m, BasicBlock):
                # Zero-init the last BN of each residual branch: every block starts as identity.
                nn.init.zeros_(m.bn2.weight)

    def _make_layer(self, planes: int, count: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes, stride), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, count)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def small_resnet(num_classes: int, in_channels: int = 1, width: int = 32, blocks: int = 2) -> nn.Module:
    """A ResNet-18-style classifier for small (28-32 px) images.

    Args:
        num_classes: output logits.
        in_channels: 1 for grey inputs, 3 for RGB.
        width: channels of the first stage (doubles at each of the 4 stages; torchvision uses 64).
        blocks: residual blocks per stage (2 as in ResNet-18; 1 for a ResNet-10).
    """
    return SmallResNet(num_classes, in_channels, width, (blocks,) * 4)


def small_vgg(num_classes: int, in_channels: int = 1, width: int = 16, dropout: float = 0.3) -> nn.Module:
    """A plain VGG-style classifier (three conv-conv-pool stages, dropout before the classifier).

    Module names: ``features`` (its stage outputs at indices 6, 13, 20 are good feature taps),
    ``dropout`` and ``fc``.
    """

    def stage(cin: int, cout: int) -> list[nn.Module]:
        return [
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        ]

    model = nn.Sequential()
    model.features = nn.Sequential(*stage(in_channels, width), *stage(width, width * 2), *stage(width * 2, width * 4))
    model.pool = nn.AdaptiveAvgPool2d(1)
    model.flatten = nn.Flatten()
    model.dropout = nn.Dropout(dropout)
    model.fc = nn.Linear(width * 4, num_classes)
    return model


class ResNetUNet(nn.Module):
    """A U-Net on :class:`SmallResNet`'s stages, for segmentation or depth at the input's size.

    The encoder modules keep SmallResNet's names (``conv1``, ``bn1``, ``layer1`` .. ``layer4``), so a
    classifier from :func:`small_resnet` of the same width and blocks (e.g. one trained on the items)
    is a pretrained backbone for it (``train.init`` in a zoo file). Each decoder step upsamples 2x,
    concatenates the encoder stage of that size and applies conv-BN-ReLU; ``decoder.blocks.{0,1,2}``
    are feature taps from coarse to fine.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        width: int,
        blocks: int,
        decoder: tuple[int, ...],
        stem_stride: int = 1,
    ):
        super().__init__()
        # A stride-2 stem quarters the cost of every stage; the head's logits are upsampled back.
        encoder = SmallResNet(1, in_channels, width, (blocks,) * 4, stem_stride)
        self.conv1, self.bn1, self.relu = encoder.conv1, encoder.bn1, encoder.relu
        self.layer1, self.layer2 = encoder.layer1, encoder.layer2
        self.layer3, self.layer4 = encoder.layer3, encoder.layer4
        skips = (width * 4, width * 2, width)  # layer3, layer2, layer1 channels
        self.decoder = nn.Module()
        self.decoder.blocks = nn.ModuleList()
        cin = width * 8
        for skip, cout in zip(skips, decoder):
            self.decoder.blocks.append(
                nn.Sequential(
                    nn.Conv2d(cin + skip, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
                )
            )
            cin = cout
        self.head = nn.Conv2d(cin, num_classes, 1)

    def forward(self, x):
        f1 = self.layer1(self.relu(self.bn1(self.conv1(x))))
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        y = self.layer4(f3)
        for block, skip in zip(self.decoder.blocks, (f3, f2, f1)):
            y = block(torch.cat([nn.functional.interpolate(y, size=skip.shape[-2:], mode="nearest"), skip], 1))
        y = self.head(y)
        if y.shape[-2:] != x.shape[-2:]:
            y = nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return y


def resnet_unet(
    num_classes: int,
    in_channels: int = 3,
    width: int = 16,
    blocks: int = 1,
    decoder: tuple[int, ...] = (48, 24, 12),
    stem_stride: int = 1,
) -> nn.Module:
    """A U-Net whose encoder is :func:`small_resnet`'s (same width/blocks), see ResNetUNet.

    ``stem_stride: 2`` runs the encoder at half the input's resolution (the logits are upsampled
    bilinearly back to it).
    """
    return ResNetUNet(num_classes, in_channels, width, blocks, tuple(decoder), stem_stride)
