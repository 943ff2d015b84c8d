"""Trial C, S8 / C2 / C6 / U5: own-loop building blocks and teacher wraps that ignored an argument,
accepted wrong input, or were refused only at epoch 1 step 1."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from amalgam.config.recipe import load_recipe
from amalgam.distill.plan import build_plan
from amalgam.errors import AmalgamError
from amalgam.evaluation.evaluate import TaskResult
from amalgam.inspection import inspect_recipe
from amalgam.kd import SimilarityLoss, kd_loss
from amalgam.task import get_task
from amalgam.teachers.subteachers import build_subteacher
from amalgam.teachers.taps import FeatureTap

DEPTH = get_task("depth")


def wrapped(world, tmp_path, teacher: str, wrap: dict):
    """The session world's recipe with ``teacher`` wrapped, loaded."""
    raw = yaml.safe_load(world.read_text())
    raw["teachers"][teacher]["wrap"] = wrap
    path = world.parent / f"blocks-{tmp_path.name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_recipe(path)


def plan_of(recipe, log=lambda m: None):
    return build_plan(recipe, with_data=False, log=log)


# S8.1


def test_learned_similarity_alphas_start_at_the_given_alphas():
    assert SimilarityLoss(2, alphas=[1, 3], learn=True).alphas().tolist() == pytest.approx([0.25, 0.75])
    assert SimilarityLoss(3, learn=True).alphas().tolist() == pytest.approx([1 / 3] * 3)
    with pytest.raises(AmalgamError, match=r"alphas: learned alphas start at log\(alpha\)"):
        SimilarityLoss(2, alphas=[0, 1], learn=True)


# S8.2, C2, C6: refused by the teacher check (inspect and build), one line naming the key


def test_hard_multi_transform_on_an_unlabelled_teacher_is_refused(world, tmp_path):
    with pytest.raises(AmalgamError, match=r"^teachers\.depth\.wrap\.hard: a depth teacher has no labels"):
        plan_of(wrapped(world, tmp_path, "depth", {"type": "multi_transform", "hard": True}))
    net = nn.Conv2d(3, 1, 1)
    with pytest.raises(AmalgamError, match="multi_transform: hard: a depth teacher"):  # and from Python
        build_subteacher("multi_transform", {"hard": True})(net, net, DEPTH, torch.rand(1, 3, 4, 4))


class _Block(nn.Module):
    """What residual_blocks looks for: conv1 and downsample."""

    def __init__(self):
        super().__init__()
        self.conv1, self.downsample = nn.Conv2d(3, 3, 1), None

    def forward(self, x):
        return x + self.conv1(x)


def test_stochastic_depth_on_a_torchscript_teacher_is_refused_before_training(world, tmp_path):
    with pytest.raises(AmalgamError, match=r"^teachers\.depth\.wrap: stochastic_depth: cannot skip .* TorchScript"):
        plan_of(wrapped(world, tmp_path, "depth", {"type": "stochastic_depth", "drop": 0.2}))
    scripted = torch.jit.trace(nn.Sequential(_Block()).eval(), torch.rand(1, 3, 4, 4))
    assert "TorchScript" in build_subteacher("stochastic_depth", {}).check(scripted, DEPTH)


def test_mc_dropout_on_a_teacher_without_dropout_is_refused_by_inspect(world, tmp_path):
    recipe = wrapped(world, tmp_path, "seg-a", {"type": "mc_dropout", "samples": 2})
    with pytest.raises(AmalgamError, match=r"^teachers\.seg-a\.wrap: mc_dropout: the teacher has no dropout layers$"):
        inspect_recipe(recipe, with_data=False, log=lambda m: None)


# S8.3


def test_answer_refuses_a_tap_on_another_teachers_model(world, tmp_path):
    plan = plan_of(load_recipe(world))
    a, b = plan.teachers["seg-a"], plan.teachers["seg-b"]
    tap = FeatureTap.on(a.model, "body", "test")
    try:
        a.answer(torch.rand(2, 3, 32, 32), tap)  # tap.value: seg-a's feature of this batch
        with pytest.raises(AmalgamError, match=r"teacher 'seg-b': the tap on 'body' is attached to another network"):
            b.answer(torch.rand(2, 3, 32, 32), tap)
    finally:
        tap.detach()


def test_answer_never_returns_a_stale_feature_of_a_module_that_did_not_run(world, tmp_path):
    plan = plan_of(load_recipe(world))
    teacher = plan.teachers["seg-a"]
    teacher.model.unused = nn.Conv2d(3, 3, 1)  # registered, never called by forward
    tap = FeatureTap.on(teacher.model, "unused", "test")
    tap.value = torch.ones(2, 3, 4, 4)  # what an earlier batch left
    try:
        with pytest.raises(AmalgamError, match=r"teacher .seg-a.: module .unused. never ran in its forward"):
            teacher.answer(torch.rand(2, 3, 32, 32), tap)
    finally:
        tap.detach()


def test_answer_refuses_a_tap_on_a_module_that_runs_twice_in_one_forward(world, tmp_path):
    # a trial: features: adapters on a block the teacher calls twice distilled its last output without a word
    # (the student's taps refused the same); plain and flip-wrapped teachers alike
    plan = plan_of(load_recipe(world))
    teacher = plan.teachers["seg-a"]
    shared = nn.Identity()
    teacher.model.shared = shared
    plain_forward = teacher.model.forward
    teacher.model.forward = lambda x: plain_forward(shared(shared(x)))
    tap = FeatureTap.on(teacher.model, "shared", "test")
    try:
        with pytest.raises(AmalgamError, match=r"^teacher 'seg-a': tap 'shared' ran 2 times in one forward"):
            teacher.answer(torch.rand(2, 3, 32, 32), tap)
        teacher.sub = build_subteacher("multi_transform", {"flip": True})
        with pytest.raises(AmalgamError, match=r"^teacher 'seg-a': tap 'shared' ran 2 times in one forward"):
            teacher.answer(torch.rand(2, 3, 32, 32), tap)
    finally:
        tap.detach()


# S8.4


def test_kd_loss_refuses_logits_as_target_in_one_line():
    torch.manual_seed(0)
    student, teacher = torch.randn(8, 10), torch.randn(8, 10) * 3
    assert kd_loss(student, F.softmax(teacher / 4, 1), 4.0).item() < 10
    with pytest.raises(AmalgamError, match=r"pass softmax\(teacher_logits / T, 1\)") as info:
        kd_loss(student, teacher, 4.0)
    assert "\n" not in str(info.value)
    assert kd_loss(student, teacher, 4.0, check=False).item() > 100  # the check can be turned off


def test_probabilities_passed_where_logits_go_are_refused_in_one_line():
    # a trial (s44): an ensemble of softmaxes gave a near-uniform target (0.10-0.12 a class of 10),
    # partial_label_kl 0.149 for 8.51, and a student's softmax into dml_loss or kd_loss a plausible loss
    from amalgam.kd import LOGIT_ENSEMBLES, dml_loss
    from amalgam.labels import LabelSpace, partial_label_kl, projection, unify

    torch.manual_seed(0)
    za, zb, zs = torch.randn(8, 10) * 3, torch.randn(8, 10) * 3, torch.randn(8, 10)
    mean = LOGIT_ENSEMBLES.get("mean")(2)
    mean([za, zb], temperature=4)  # logits, and log-probabilities, pass
    mean([za.log_softmax(1), zb], temperature=4)
    with pytest.raises(AmalgamError, match=r"^MeanEnsemble: teacher 0's logits are probabilities"):
        mean([za.softmax(1), zb], temperature=4)
    low, space = LabelSpace(tuple("012345")), unify([LabelSpace(tuple("012345")), LabelSpace(tuple("456789"))])
    m = projection(low, space)
    assert partial_label_kl(zs, za[:, :6], m, 4) > 1
    with pytest.raises(AmalgamError, match=r"^partial_label_kl: the teacher's logits are probabilities"):
        partial_label_kl(zs, za[:, :6].softmax(1), m, 4)
    with pytest.raises(AmalgamError, match=r"^partial_label_kl: the student's logits are probabilities"):
        partial_label_kl(zs.softmax(1), za[:, :6], m, 4)
    assert partial_label_kl(zs, za[:, :6].softmax(1), m, 4, check=False) < 1  # what a build passes
    y = torch.randint(0, 10, (8,))
    with pytest.raises(AmalgamError, match=r"^kd_loss: the student's logits are probabilities"):
        dml_loss([zs.softmax(1), za], y)
    with pytest.raises(AmalgamError, match=r"^kd_loss: the student's logits are probabilities"):
        kd_loss(zs.softmax(1), (zb / 4).softmax(1), 4.0)


@pytest.mark.parametrize(
    ("labels", "why"),
    [
        (torch.full((8,), -100), r"every label is -100 \(ignored\): the batch has nothing to learn from"),  # NaN
        (torch.tensor([10] + [-100] * 7), r"labels must lie in \[0, 10\) \(or -100, left out\), got 10 to 10"),
        (torch.zeros(8), r"expected labels \[B=8\] of class indices, got torch.float32"),
    ],
)
def test_the_peer_losses_refuse_labels_they_cannot_use_in_one_line(labels, why):
    from amalgam.kd import dml_loss, one_loss

    z = torch.randn(2, 8, 10)
    with pytest.raises(AmalgamError, match=f"^dml_loss: {why}"):
        dml_loss(z, labels)
    with pytest.raises(AmalgamError, match=f"^one_loss: {why}"):
        one_loss(z, z.mean(0), labels)


def test_the_peer_losses_leave_out_samples_of_the_ignore_index_as_cross_entropy_does():
    from amalgam.kd import dml_loss

    z, y = torch.randn(2, 8, 10), torch.randint(0, 10, (8,))
    y[:3] = -100
    total, _ = dml_loss(z, y)
    assert total.isfinite()


def test_feed_with_maps_of_other_widths_and_unread_arguments_are_one_line():
    # a trial: swapped teacher maps were a RuntimeError naming no teacher, labels given to an ensemble that
    # weighs without them were ignored, and noise(sigma="0.1") was a TypeError from a comparison
    from amalgam.kd import LOGIT_ENSEMBLES
    from amalgam.kd.feature_ensembles import FEEDLoss

    feed = FEEDLoss(16, [32, 48])
    student, a, b = torch.randn(2, 16, 4, 4), torch.randn(2, 32, 4, 4), torch.randn(2, 48, 4, 4)
    assert feed(student, [a, b]).item() > 0
    with pytest.raises(AmalgamError, match=r"^FEED: teacher 0 map has 48 channels, its adaptor gives 32: give"):
        feed(student, [b, a])
    with pytest.raises(AmalgamError, match=r"^FEED: the student's map has 8 channels, its adaptors take 16$"):
        feed(torch.randn(2, 8, 4, 4), [a, b])
    with pytest.raises(AmalgamError, match=r"^EntropyEnsemble does not read labels"):
        LOGIT_ENSEMBLES.get("entropy")(2)(torch.randn(2, 4, 3), 2.0, labels=torch.zeros(4, dtype=torch.long))
    with pytest.raises(AmalgamError, match=r"expected numbers, got sigma='0.1'"):
        build_subteacher("noise", {"sigma": "0.1"})


# U5


def test_a_wrap_is_described_with_its_arguments_in_the_log_inspect_and_report(world, tmp_path):
    wrap = {"type": "multi_transform", "flip": True, "scales": [1.0, 0.5]}
    shown = "multi_transform(flip=True, scales=[1.0, 0.5], hard=False)"
    assert build_subteacher("multi_transform", {"flip": True, "scales": [1.0, 0.5]}).describe() == shown
    assert build_subteacher("stochastic_depth", {"drop": 0.1}).describe() == (
        "stochastic_depth(drop=0.1, samples=1, seed=None)"
    )
    lines: list[str] = []
    recipe = wrapped(world, tmp_path, "seg-a", wrap)
    summary = inspect_recipe(recipe, with_data=False, log=lines.append).summary()
    assert any(line.startswith(f"teacher 'seg-a' wrap: {shown}") for line in lines)  # the build log's
    assert f"    wrap: {shown}" in summary
    teacher = plan_of(recipe).teachers["seg-a"]
    row = TaskResult("seg-a", teacher.task, "scenes-val", {}, {}, wrap=teacher.wrap, wrap_args=teacher.wrap_args).row()
    assert row["teacher_wrap"] == "multi_transform"  # unchanged: a public field
    assert row["teacher_wrap_args"] == {"flip": True, "scales": [1.0, 0.5], "hard": False}


def test_kd_loss_checks_an_accelerator_target_once_a_process(monkeypatch):
    """Reading the check back waits for the device: off the CPU only the first call pays it."""
    from amalgam import logit_checks

    monkeypatch.setattr(logit_checks, "_checked_on_device", set())
    on_device = torch.empty(4, 3, device="meta")  # not the CPU, as a CUDA tensor is not
    assert [logit_checks.should_check(on_device, None, "a") for _ in range(3)] == [True, False, False]
    assert logit_checks.should_check(on_device, None, "b")  # each call site checks its own first call
    assert logit_checks.should_check(on_device, True, "a")
    assert logit_checks.should_check(torch.rand(4, 3), None, "a")  # the CPU: every call


# trial F, S4: a network that edits its input in place under a wrap that runs it several times


class _HalvesItsInput(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        x.mul_(0.5)  # older code normalises in place: x.sub_(mean).div_(std)
        return self.inner(x)


def test_a_wrap_runs_a_network_that_edits_its_input_in_place_on_a_copy_each_time(world):
    plan = plan_of(load_recipe(world))
    teacher = plan.teachers["seg-a"]
    teacher.model = _HalvesItsInput(teacher.model)
    images = torch.rand(2, 3, 32, 32)
    plain, _ = teacher.answer(images, wrapped=False)
    mirrored, _ = teacher.answer(images.flip(-1), wrapped=False)
    teacher.sub = build_subteacher("multi_transform", {"flip": True})
    wrapped, _ = teacher.answer(images)
    task = teacher.task
    expected = task.ensemble([task.mark_no_answer(plain), task.mark_no_answer(task.mirror(mirrored))])
    assert torch.allclose(wrapped, expected, atol=1e-5)  # the mirrored run saw the image, not its halved copy


def test_blocks_refuse_what_they_would_get_silently_wrong():
    # a trial of the blocks in a loop of one's own: each of these returned a number, or torch's raw error
    from amalgam.kd.class_balance import class_balanced_weights, focal_weights
    from amalgam.kd.feature_ensembles import SimilarityLoss
    from amalgam.kd.logit_ensembles import FixedEnsemble
    from amalgam.kd.peers import dml_loss

    student, teacher = torch.randn(2, 5, 4, 4), torch.randn(2, 3, 4, 4)
    with pytest.raises(AmalgamError, match="the student has 5 classes, the teacher 3: pass the"):
        focal_weights(student, teacher, None, 1.0)  # gathered the student's class by the teacher's index
    with pytest.raises(AmalgamError, match=r"power is in \[0, 1\], got -1"):
        class_balanced_weights(teacher, power=-1)
    with pytest.raises(AmalgamError, match=r"expected 2 non-negative values, got \[1.0, nan\]"):
        FixedEnsemble(2, [1.0, float("nan")])
    with pytest.raises(AmalgamError, match=r"alphas: expected 2 non-negative values"):
        SimilarityLoss(2, [1.0, float("nan")])
    with pytest.raises(AmalgamError, match=r"one label space\), got \[\[4, 3\], \[4, 5\]\]"):
        dml_loss([torch.randn(4, 3), torch.randn(4, 5)], torch.zeros(4, dtype=torch.long))
    # one image has no pair to compare: 0 with a graph (a review: a batch's single row of a teacher's sources
    # must not stop training)
    one = torch.randn(1, 8, requires_grad=True)
    loss = SimilarityLoss(1)(one, [torch.randn(1, 8)])
    assert loss.item() == 0 and loss.requires_grad
    from amalgam.kd import LOGIT_ENSEMBLES, FEEDLoss

    confidence = LOGIT_ENSEMBLES.get("confidence")(2)
    with pytest.raises(AmalgamError, match=r"labels must be class indices in \[0, 5\), got \[0, 9\]"):
        confidence([torch.randn(2, 5)] * 2, 2.0, labels=torch.tensor([0, 9]))
    with pytest.raises(AmalgamError, match=r"labels are one class index a sample, \[B\] integers"):
        confidence([torch.randn(2, 5)] * 2, 2.0, labels=torch.tensor([0.0, 1.0]))
    feed = FEEDLoss(8, [4])  # a bf16 map outside autocast met fp32 adaptors in a raw dtype error
    maps = torch.randn(2, 8, 2, 2), [torch.randn(2, 4, 2, 2)]
    assert torch.isclose(feed(maps[0].bfloat16(), maps[1]), feed(maps[0].bfloat16().float(), maps[1]))


def test_the_blocks_refuse_what_they_would_read_wrong():
    # a trial of the building blocks in an own loop: partial_label_kl took T = 0 (NaN) and T = -2 (a plausible
    # 0.45); a float projection's fractions were read as membership; focal_weights took a transposed projection
    import torch

    from amalgam.kd import focal_weights
    from amalgam.labels import LabelSpace, partial_label_kl, projection, unify

    teacher = LabelSpace(("a", "b"))
    matrix = projection(teacher, unify([teacher, LabelSpace(("a", "b", "c"))]))
    student, logits = torch.randn(1, 3, 2, 3), torch.randn(1, 2, 2, 3)
    for bad in (0.0, -2.0, float("inf"), True):
        with pytest.raises(AmalgamError, match="partial_label_kl: temperature must be"):
            partial_label_kl(student, logits, matrix, bad)
    with pytest.raises(
        AmalgamError, match="matrix must be the boolean .* projection of projection\\(\\), got torch.float32"
    ):
        partial_label_kl(student, logits, matrix.float() * 0.5, 2.0)
    with pytest.raises(AmalgamError, match="focal_weights: "):
        focal_weights(student, logits, matrix.t(), 1.0)


def test_stochastic_depth_without_a_seed_draws_from_torchs_stream():
    # a trial: it drew from OS entropy, so a build seeded by its recipe differed run to run
    import torch
    from torchvision.models import resnet18

    from amalgam.task import get_task
    from amalgam.teachers.subteachers import build_subteacher

    model, task = resnet18(num_classes=3).eval(), get_task("classification")
    x = torch.rand(1, 3, 32, 32)
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        wrap = build_subteacher("stochastic_depth", {"drop": 0.5})
        with torch.no_grad():
            outs.append(wrap(model, model, task, x))
    assert torch.equal(*outs)
