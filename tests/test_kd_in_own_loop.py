"""The building blocks used in a loop of one's own (found by a user trial): each case gave a silently
wrong loss, NaN/inf without a word, or a bare traceback before."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from amalgam.distill.features import FEATURE_TERMS
from amalgam.errors import AmalgamError
from amalgam.kd import LOGIT_ENSEMBLES, FEEDLoss, SimilarityLoss, kd_loss, kdcl_minlogit_loss
from amalgam.kd.logit_ensembles import build_logit_ensemble
from amalgam.labels.algebra import LabelSpace, partial_label_kl, projection, unify
from amalgam.task import get_task
from amalgam.teachers import FeatureTap
from amalgam.teachers.subteachers import SUBTEACHERS


def test_an_fp16_target_with_zeros_gives_the_fp32_loss_not_nan():
    teacher = torch.tensor([[30.0, -30.0, 0.0]])
    student = torch.zeros(1, 3)
    fp16 = F.softmax(teacher.half() / 1.0, 1)
    assert (fp16 == 0).any()  # the case: clamp_min(1e-12) is 0 in fp16
    loss = kd_loss(student, fp16, 1.0)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(kd_loss(student, F.softmax(teacher, 1), 1.0).item(), rel=1e-3)


@pytest.mark.parametrize("temperature", [np.float32(2.0), torch.tensor(2.0), 2])
def test_a_numpy_or_tensor_temperature_is_a_number(temperature):
    z = torch.tensor([[1.0, 0.0]])
    assert kd_loss(z, F.softmax(z.flip(1), 1), temperature).item() == pytest.approx(
        kd_loss(z, F.softmax(z.flip(1), 1), 2.0).item()
    )


@pytest.mark.parametrize("temperature", [0.0, -1.0, True, float("nan")])
def test_ensembles_refuse_the_temperatures_kd_loss_refuses(temperature):
    ens = LOGIT_ENSEMBLES.get("mean")(num_teachers=2)
    with pytest.raises(AmalgamError, match="temperature"):
        ens(torch.zeros(2, 1, 3), temperature)
    with pytest.raises(AmalgamError, match="temperature"):
        kd_loss(torch.zeros(1, 3), torch.full((1, 3), 1 / 3), temperature)


def test_one_logit_is_refused_it_would_teach_nothing():
    with pytest.raises(AmalgamError, match="one class .* binary"):
        kd_loss(torch.zeros(4, 1), torch.ones(4, 1), 2.0)


def test_a_zeroed_target_row_is_named_as_such_not_as_logits():
    target = torch.full((2, 3, 2, 2), 1 / 3)
    target[0, :, 0, 0] = 0
    with pytest.raises(AmalgamError, match="sums to 0 at 1 positions"):
        kd_loss(torch.zeros(2, 3, 2, 2), target, 1.0)


def test_dense_kd_loss_is_the_mean_over_pixels_as_documented():
    student, teacher = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    target = F.softmax(teacher, 1)
    batchmean = F.kl_div(F.log_softmax(student, 1), target, reduction="batchmean")
    assert kd_loss(student, target, 1.0).item() == pytest.approx(batchmean.item() / 16, rel=1e-5)


def test_the_adapters_term_never_trains_the_teacher_feature():
    term = FEATURE_TERMS.get("adapters")(4, 6)
    teacher = torch.randn(2, 6, 3, 3, requires_grad=True)
    term(torch.randn(2, 4, 3, 3), teacher).backward()
    assert teacher.grad is None


def test_feature_losses_refuse_a_teacher_batch_that_would_broadcast():
    student = torch.randn(4, 5, 3, 3)
    with pytest.raises(AmalgamError, match="batch 1, the student's 4"):
        SimilarityLoss(1)(student, [torch.randn(1, 6, 3, 3)])
    with pytest.raises(AmalgamError, match=r"B=4"):
        FEEDLoss(5, [6])(student, [torch.randn(1, 6, 3, 3)])
    with pytest.raises(AmalgamError, match=r"student's map must be \[B, C, H, W\]"):
        FEEDLoss(5, [6])(torch.randn(4, 5), [torch.randn(4, 6, 3, 3)])


def _spaces():
    a = LabelSpace(("bg", "cat", "dog"), "bg")
    b = LabelSpace(("bg", "cat", "cow"), "bg")
    unified = unify([a, b], background="bg")
    return a, unified


def test_partial_label_kl_refuses_weights_that_broadcast_across_the_wrong_axis():
    a, unified = _spaces()
    matrix = projection(a, unified)
    student, teacher = torch.randn(4, len(unified), 4, 4), torch.randn(4, 3, 4, 4)
    assert torch.isfinite(partial_label_kl(student, teacher, matrix, weights=torch.ones(4, 4, 4)))
    for weights in (torch.ones(4, 1, 4, 4), torch.ones(4)):  # [B, B, H, W], or [B] across the width
        with pytest.raises(AmalgamError, match="without the class dimension"):
            partial_label_kl(student, teacher, matrix, weights=weights)
    with pytest.raises(AmalgamError, match="unified classes"):
        partial_label_kl(torch.randn(4, len(unified) + 1, 4, 4), teacher, matrix)
    with pytest.raises(AmalgamError, match="its 3 labels"):
        partial_label_kl(student, torch.randn(4, 2, 4, 4), matrix)


def test_a_background_covering_nothing_and_a_missing_class_are_one_line_not_inf():
    a = LabelSpace(("bg", "cat", "dog"), "bg")
    with pytest.raises(AmalgamError, match="covers no unified class"):
        projection(a, unify([a, LabelSpace(("cat", "dog"))]))
    with pytest.raises(AmalgamError, match="no class 'dog'"):
        projection(a, LabelSpace(("bg", "cat"), "bg"))


def _tap_world():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.opt = nn.Linear(3, 3), nn.Linear(3, 3)

        def forward(self, x, skip=False, twice=False):
            x = self.a(self.a(x)) if twice else self.a(x)
            return x if skip else self.opt(x)

    return Net()


def test_take_refuses_a_skipped_module_and_one_that_ran_twice():
    net = _tap_world()
    opt, a = FeatureTap.on(net, "opt", "mine"), FeatureTap.on(net, "a", "mine")
    net(torch.randn(2, 3))
    assert opt.take().shape == (2, 3) and a.take().shape == (2, 3)
    net(torch.randn(5, 3), skip=True)
    assert opt.value is None or opt.value.shape[0] != 5  # no stale batch passes take()
    with pytest.raises(AmalgamError, match="did not run since the last take"):
        opt.take()
    assert a.take().shape[0] == 5
    net(torch.randn(2, 3), twice=True)
    with pytest.raises(AmalgamError, match="ran 2 times"):
        a.take()


def test_stochastic_depth_leaves_in_a_tap_what_flowed_on_not_the_dropped_branch():
    net = torchvision.models.resnet18(num_classes=5).eval()
    x = torch.rand(2, 3, 32, 32)
    tap = FeatureTap.on(net, "layer1.0", "mine")
    SUBTEACHERS.get("stochastic_depth")(drop=1.0)(net, net, get_task("classification"), x)
    got = tap.take()
    tap.detach()
    with torch.no_grad():
        stem = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    assert torch.allclose(got, F.relu(stem))


def test_a_wrap_runs_a_teacher_left_in_train_mode_as_a_teacher_and_gives_its_mode_back():
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 3)).train()
    stats = net[1].running_mean.clone()
    SUBTEACHERS.get("mc_dropout")(samples=2)(net, net, get_task("classification"), torch.randn(6, 4))
    assert torch.equal(stats, net[1].running_mean)  # batch norm in eval mode: its statistics unmoved
    assert all(m.training for m in net.modules())  # the user's modes, as they were


def test_one_line_errors_where_tracebacks_were():
    with pytest.raises(AmalgamError, match="in_features"):
        build_logit_ensemble("gate", 3)
    gate = build_logit_ensemble("gate", 3, in_features=7)
    with pytest.raises(AmalgamError, match=r"\[B=2, 7\]"):
        gate(torch.zeros(3, 2, 4), 1.0, features=torch.zeros(2, 8))
    with pytest.raises(AmalgamError, match=r"labels must lie in \[0, 5\)"):
        kdcl_minlogit_loss(torch.randn(2, 3, 5), torch.tensor([-100, 1, 2]))
    with pytest.raises(AmalgamError, match="different shapes"):
        LOGIT_ENSEMBLES.get("mean")(num_teachers=2)([torch.zeros(4, 3), torch.zeros(4, 2)], 1.0)


# --- a review of the above: legitimate uses kept, the same bugs elsewhere -----------------------------


def test_weights_of_size_one_per_sample_or_a_scalar_still_broadcast_as_they_did():
    a, unified = _spaces()
    matrix = projection(a, unified)
    student, teacher = torch.randn(2, len(unified), 4, 4), torch.randn(2, 3, 4, 4)
    per_sample = torch.tensor([1.0, 3.0]).view(2, 1, 1)
    by_hand = partial_label_kl(student, teacher, matrix, weights=per_sample.expand(2, 4, 4).contiguous())
    assert partial_label_kl(student, teacher, matrix, weights=per_sample).item() == pytest.approx(by_hand.item())
    assert torch.isfinite(partial_label_kl(student, teacher, matrix, weights=torch.tensor(2.0)))


def test_partial_label_nll_refuses_what_partial_label_kl_refuses():
    from amalgam.labels.algebra import partial_label_nll

    a, unified = _spaces()
    with pytest.raises(AmalgamError, match="partial_label_nll: weights"):
        partial_label_nll(
            torch.randn(4, len(unified), 4, 4), torch.randn(4, 3, 4, 4), projection(a, unified), torch.ones(4)
        )


def test_a_learned_temperature_is_refused_not_silently_detached():
    with pytest.raises(AmalgamError, match="requiring grad"):
        kd_loss(torch.zeros(1, 3), torch.full((1, 3), 1 / 3), nn.Parameter(torch.tensor(2.0)))


def test_a_tap_under_activation_checkpointing_is_taken_once_per_step():
    from torch.utils.checkpoint import checkpoint

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.block, self.head = nn.Sequential(nn.Linear(3, 3), nn.ReLU()), nn.Linear(3, 2)

        def forward(self, x):
            return self.head(checkpoint(self.block, x, use_reentrant=False))

    net = Net()
    tap = FeatureTap.on(net, "block.0", "mine")
    for _ in range(2):  # the recompute in backward ran the module again: "ran 2 times"
        out = net(torch.randn(4, 3, requires_grad=True))
        assert tap.take().shape == (4, 3)
        out.sum().backward()
    net(torch.randn(4, 3))
    tap.module_name = "a"
    tap.attach(_tap_world(), "mine")  # moved to another network: the old one's value is gone
    with pytest.raises(AmalgamError, match="did not run"):
        tap.take()


def test_widths_and_wraps_take_what_they_took_before():
    gate = build_logit_ensemble("gate", 2, in_features=np.int64(8))
    assert gate.gate.in_features == 8
    with pytest.raises(AmalgamError, match="in_features"):
        build_logit_ensemble("gate", 2, in_features=True)
    out = SUBTEACHERS.get("noise")()(
        lambda x: x @ torch.ones(4, 3), None, get_task("classification"), torch.randn(2, 4)
    )
    assert out.shape == (2, 3)  # a wrap that never reads the model is called without one
    with pytest.raises(AmalgamError, match="different batch sizes"):
        LOGIT_ENSEMBLES.get("mean")(num_teachers=2)([torch.zeros(4, 3), torch.zeros(2, 3)], 1.0)


def test_a_background_standing_for_nothing_is_the_recipes_background_key():
    from types import SimpleNamespace

    from amalgam.distill.plan import teacher_projection
    from amalgam.errors import RecipeError

    teacher = SimpleNamespace(space=LabelSpace(("cat", "dog"), "dog"), task=SimpleNamespace(name="classification"))
    with pytest.raises(RecipeError, match=r"^teachers\.cls\.background: 'dog' stands for no class"):
        teacher_projection("cls", teacher, LabelSpace(("cat",)))
