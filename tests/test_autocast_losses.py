"""Loss parts that multiply probabilities or sum long vectors compute in fp32 inside autocast (CUDA fp16 and
bf16, emulated by CPU autocast): an fp16 product rounded confident teachers' small probabilities to 0 (their
log -inf, the KL NaN) and similarity sums past 65504 to inf."""

from __future__ import annotations

import pytest
import torch

from amalgam.kd.feature_ensembles import similarity
from amalgam.kd.logit_ensembles import build_logit_ensemble
from amalgam.labels import partial_label_kl

HALF = [torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", HALF)
def test_an_ensemble_of_confident_teachers_keeps_its_small_probabilities_under_autocast(dtype):
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 10) * 3
    logits[:, :, 0] += 40  # the other labels' probabilities ~1e-9 at T = 2
    ensemble, student = build_logit_ensemble("mean", 2), torch.randn(4, 10)
    plain, _ = ensemble(logits, 2.0, check=False)
    with torch.autocast("cpu", dtype=dtype):
        mixed, _ = ensemble(logits, 2.0, check=False)
        loss = partial_label_kl(student, 2.0 * mixed.clamp_min(1e-8).log(), torch.eye(10, dtype=torch.bool), 2.0)
    assert mixed.dtype == torch.float32 and (mixed > 0).all()
    torch.testing.assert_close(mixed, plain)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("dtype", HALF)
def test_a_learned_gates_weights_come_back_in_float32_under_autocast(dtype):
    # its linear layer ran in half precision: weights bf16/fp16 beside a float32 target and other ensembles'
    gate = build_logit_ensemble("gate", 2, in_features=6)
    with torch.autocast("cpu", dtype=dtype):
        target, weights = gate(torch.randn(2, 4, 5), 2.0, torch.randn(4, 6), check=False)
    assert target.dtype == torch.float32 and weights.dtype == torch.float32


@pytest.mark.parametrize("dtype", HALF)
def test_the_similarity_matrix_is_the_fp32_one_under_autocast(dtype):
    torch.manual_seed(0)
    features = torch.randn(4, 64, 16, 16) * 8  # row sums of squares ~1e6: past fp16's range
    with torch.autocast("cpu", dtype=dtype):
        mixed = similarity(features)
    assert torch.isfinite(mixed).all()
    torch.testing.assert_close(mixed, similarity(features))
