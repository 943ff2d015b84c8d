"""Probe: the student's encoder at output stride OS (env, default 32), decoder blocks resize to their skip."""

import os
import sys

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

import amalgam.students.build as build
import amalgam.students.encoders as enc

OS = int(os.environ.get("OS", "32"))


def build_encoder(name, args=None):
    return smp.encoders.get_encoder(name, in_channels=3, depth=5, weights=None, output_stride=OS, **dict(args or {}))


enc.build_encoder = build_encoder


def forward(self, x, skip):
    size = skip.shape[-2:] if skip is not None else [2 * s for s in x.shape[-2:]]
    x = F.interpolate(x, size=size, mode="nearest")
    if skip is not None:
        x = torch.cat([x, skip], dim=1)
    return self.convs(x)


build.DecoderBlock.forward = forward

if __name__ == "__main__":
    from amalgam.cli import main

    sys.exit(main(sys.argv[1:]))
