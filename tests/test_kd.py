"""Multi-teacher and peer losses against values computed by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from amalgam.errors import AmalgamError
from amalgam.kd import LOGIT_ENSEMBLES, ONE, FEEDLoss, SimilarityLoss, dml_loss, kd_loss, kdcl_minlogit_loss, one_loss
from amalgam.kd.peers import kdcl_minlogit_target

LN3 = math.log(3.0)
# teacher 1 says [.5, .5], teacher 2 says [.75, .25]
TWO_TEACHERS = torch.tensor([[[0.0, 0.0]], [[LN3, 0.0]]])


def test_kd_loss_is_t2_times_kl():
    assert kd_loss(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]), 1.0).item() == pytest.approx(math.log(2))
    # T = 2 scales by 4; softmax([0, 0] / 2) is still uniform
    assert kd_loss(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]), 2.0).item() == pytest.approx(4 * math.log(2))


@pytest.mark.parametrize(
    "kind, kwargs, labels, expected_w",
    [
        ("mean", {}, None, [0.5, 0.5]),
        ("fixed", {"weights": [3.0, 1.0]}, None, [0.75, 0.25]),
        # CE_1 = ln 2, CE_2 = -ln .75; softmax of the CEs = [.6, .4]; w = 1 - that
        ("confidence", {}, torch.tensor([0]), [0.4, 0.6]),
    ],
)
def test_logit_ensembles_by_hand(kind, kwargs, labels, expected_w):
    ens = LOGIT_ENSEMBLES.get(kind)(num_teachers=2, **kwargs)
    target, w = ens(TWO_TEACHERS, 1.0, labels=labels)
    torch.testing.assert_close(w, torch.tensor([expected_w]))
    p = torch.tensor([[0.5, 0.5], [0.75, 0.25]])
    torch.testing.assert_close(target, (torch.tensor(expected_w).view(2, 1) * p).sum(0, keepdim=True))


def test_entropy_weights_favour_the_surer_teacher():
    h1 = math.log(2)
    h2 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    w1 = math.exp(-h1) / (math.exp(-h1) + math.exp(-h2))
    _, w = LOGIT_ENSEMBLES.get("entropy")(num_teachers=2)(TWO_TEACHERS, 1.0)
    torch.testing.assert_close(w, torch.tensor([[w1, 1 - w1]]))
    assert w[0, 1] > w[0, 0]


def test_learned_gate_trains_with_the_student_never_the_teachers():
    torch.manual_seed(0)
    teachers = torch.randn(3, 4, 5, requires_grad=True)
    features = torch.randn(4, 8, 2, 2, requires_grad=True)
    gate = LOGIT_ENSEMBLES.get("gate")(num_teachers=3, in_features=8)
    target, w = gate(teachers, 2.0, features=features)
    torch.testing.assert_close(w.sum(1), torch.ones(4))
    torch.testing.assert_close(target.sum(1), torch.ones(4))
    student = torch.randn(4, 5, requires_grad=True)
    kd_loss(student, target, 2.0).backward()
    assert teachers.grad is None
    assert student.grad is not None and features.grad is not None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gate.parameters())


def test_ensemble_errors_are_specific():
    with pytest.raises(AmalgamError, match="needs labels"):
        LOGIT_ENSEMBLES.get("confidence")(num_teachers=2)(TWO_TEACHERS)
    with pytest.raises(AmalgamError, match=r"expected teacher logits \[K=3, B, C\], got \[2, 1, 2\]$"):
        LOGIT_ENSEMBLES.get("mean")(num_teachers=3)(TWO_TEACHERS)
    maps = torch.randn(2, 1, 3, 4, 4)  # a user's segmenters: the error said the shape, not how to pass them
    with pytest.raises(AmalgamError, match=r"got \[2, 1, 3, 4, 4\]; dense maps \[K, B, C, H, W\]: .*movedim"):
        LOGIT_ENSEMBLES.get("mean")(num_teachers=2)(maps)
    flat, _ = LOGIT_ENSEMBLES.get("mean")(num_teachers=2)(maps.movedim(2, -1).reshape(2, -1, 3))  # as it says
    torch.testing.assert_close(flat.reshape(1, 4, 4, 3).movedim(-1, 1), maps.softmax(2).mean(0), rtol=1e-5, atol=1e-6)
    with pytest.raises(AmalgamError, match="weights"):
        LOGIT_ENSEMBLES.get("fixed")(num_teachers=2, weights=[1.0])


def test_feed_by_hand_and_adaptors_bridge_channels_and_sizes():
    feed = FEEDLoss(student_channels=2, teacher_channels=[2])
    feed.adaptors[0] = nn.Identity()
    student = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)  # unit: [.6, .8]
    teacher = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    assert feed(student, [teacher]).item() == pytest.approx(0.4 + 0.8)
    feed = FEEDLoss(student_channels=4, teacher_channels=[6, 3])
    s = torch.randn(2, 4, 8, 8, requires_grad=True)
    t = [torch.randn(2, 6, 4, 4, requires_grad=True), torch.randn(2, 3, 2, 2, requires_grad=True)]
    feed(s, t).backward()
    assert s.grad is not None and all(x.grad is None for x in t)
    assert all(p.grad is not None for p in feed.parameters())


def test_similarity_loss_by_hand_with_fixed_and_learned_alphas():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # G_s = I
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # G_t rows = [.7071, .7071]
    r = 1 / math.sqrt(2)
    expected = 2 * ((1 - r) ** 2 + r**2) / 4
    assert SimilarityLoss(1)(s, [t]).item() == pytest.approx(expected)
    both = SimilarityLoss(2, alphas=[1.0, 3.0])
    assert both(s, [t, s]).item() == pytest.approx(0.25 * expected)  # the second teacher matches
    learned = SimilarityLoss(3, learn=True)
    assert learned.alphas().sum().item() == pytest.approx(1.0)
    x = torch.randn(4, 3, 2, 2, requires_grad=True)
    learned(x, [torch.randn(4, 5), torch.randn(4, 2, 3, 3), torch.randn(4, 7)]).backward()
    assert x.grad is not None and learned.logits.grad is not None


def test_dml_by_hand_and_peers_learn_only_from_others_predictions():
    z = TWO_TEACHERS.clone().requires_grad_(True)
    total, per = dml_loss(z, torch.tensor([0]))
    kl_21 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    kl_12 = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert per[0].item() == pytest.approx(math.log(2) + kl_21)
    assert per[1].item() == pytest.approx(-math.log(0.75) + kl_12)
    assert total.item() == pytest.approx(per[0].item() + per[1].item())
    grad_0 = torch.autograd.grad(per[0], z)[0]
    assert grad_0[1].abs().sum() == 0  # peer 0's loss does not move peer 1


def test_kdcl_minlogit_target_by_hand():
    z = torch.tensor([[[2.0, 1.0, 0.0]], [[1.0, 3.0, 0.0]]])
    torch.testing.assert_close(kdcl_minlogit_target(z, torch.tensor([0])), torch.tensor([[0.0, -1.0, -2.0]]))
    total, per = kdcl_minlogit_loss(z, torch.tensor([0]))
    assert len(per) == 2 and torch.isfinite(total)


def test_one_gates_branches_and_trains_every_part():
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
    model = ONE(trunk, lambda: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)), 4, branches=3)
    z, ens = model(torch.randn(5, 1, 6, 6))
    assert z.shape == (3, 5, 3) and ens.shape == (5, 3)
    g = torch.softmax(model.gate(trunk(torch.randn(5, 1, 6, 6))), 1)
    torch.testing.assert_close(g.sum(1), torch.ones(5))
    total, per = one_loss(z, ens, torch.tensor([0, 1, 2, 0, 1]))
    assert len(per) == 3
    total.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(
    ("target", "temperature", "said"),
    [
        (torch.ones(8, 1), 2.0, r"target \[8, 1\] and student logits \[8, 10\] must have one shape"),
        (torch.full((1, 10), 0.1), 2.0, r"target \[1, 10\] and student logits \[8, 10\] must have one shape"),
        (torch.full((8, 10), float("nan")), 2.0, r"target holds 80 NaN/inf values"),
        (torch.full((8, 10), 0.1), 0.0, r"temperature must be > 0, got 0.0"),
        (torch.full((8, 10), 0.1), -1.0, r"temperature must be > 0, got -1.0"),
    ],
    ids=["column", "one-row", "nan", "t0", "negative-t"],
)
def test_kd_loss_refuses_targets_that_would_broadcast_or_turn_it_nan(target, temperature, said):
    # each gave a number (373.55 for a [B, 1] target) or NaN without a word
    with pytest.raises(AmalgamError, match=said):
        kd_loss(torch.zeros(8, 10), target, temperature)


def test_a_logit_ensemble_takes_a_list_of_teacher_logits_as_the_peer_losses_do():
    ensemble = LOGIT_ENSEMBLES.get("mean")(num_teachers=2)
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    target, _ = ensemble([a, b], 2.0)
    stacked, _ = ensemble(torch.stack([a, b]), 2.0)
    assert torch.equal(target, stacked)
