"""The training loop's batch augmentation."""

import torch

from amalgam.engine import random_hflip


def test_random_hflip_flips_images_and_dense_targets_together():
    images = torch.arange(8 * 3 * 2 * 4, dtype=torch.float).view(8, 3, 2, 4)
    masks = images[:, 0].long()
    out, out_masks = random_hflip(images, torch.Generator().manual_seed(0), masks)
    flipped = (out != images).flatten(1).any(1)
    assert 0 < flipped.sum() < 8  # some flipped, some not
    assert torch.equal(out[flipped], images[flipped].flip(-1))
    assert torch.equal(out_masks, out[:, 0].long())  # the same samples flipped in both
    assert torch.equal(random_hflip(images, torch.Generator().manual_seed(0)), out)
