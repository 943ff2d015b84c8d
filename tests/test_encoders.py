"""Stage splitters: a branched student's stages compute exactly its encoder's features."""

from __future__ import annotations

import pytest
import torch

from amalgam.errors import AmalgamError
from amalgam.students.build import StudentSpec, build_student
from amalgam.students.encoders import StagedEncoder, build_encoder


@pytest.mark.parametrize("name", ["tu-mobilenetv3_small_100", "tu-efficientnet_b0", "tu-resnet10t", "resnet18"])
def test_stages_chain_to_the_encoders_own_features(name):
    # same seed, same weights: splitting draws nothing from the global random stream
    torch.manual_seed(0)
    encoder = build_encoder(name).eval()
    torch.manual_seed(0)
    staged = StagedEncoder(name).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        wanted = encoder(x)
        got = [x, *staged.forward_range(x, 0, 5)]
    assert [f.shape for f in got] == [f.shape for f in wanted]
    for a, b in zip(got, wanted):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["tu-mobilenetv3_small_100", "tu-efficientnet_b0"])
def test_branched_student_on_timm_cnns_beyond_resnets(name):
    heads = {"classification": 3, "segmentation": 4}
    student = build_student(StudentSpec("branched", name, 2, [16, 16, 8, 8, 8], heads)).eval()
    with torch.no_grad():
        out = student(torch.rand(1, 3, 64, 64))
    assert out["classification"].shape == (1, 3) and out["segmentation"].shape == (1, 4, 64, 64)


def test_stem_of_stride_4_says_which_encoders_branch():
    with pytest.raises(AmalgamError) as info:
        build_student(StudentSpec("branched", "tu-convnext_atto", 2, [16, 16, 8, 8, 8], {"classification": 3}))
    message = str(info.value)
    assert "\n" not in message and "stem downsamples by 4" in message
    assert "tu-efficientnet_*" in message and "student.type: compact" in message
