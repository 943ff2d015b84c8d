"""Class-balanced dense distillation (issue #15 A): the weights and the loss, by hand."""

from __future__ import annotations

import math

import pytest
import torch

from amalgam.config.recipe import AmalgamationConfig, load_recipe
from amalgam.distill.objective import Objective
from amalgam.distill.plan import build_plan, prepare
from amalgam.kd.class_balance import DEFAULT_FOCAL, DEFAULT_POWER, class_balanced_weights, focal_weights
from amalgam.labels import partial_label_kl, partial_label_nll
from amalgam.task import DistillOptions, get_task

BIG = 30.0  # logit gap that makes a softmax one-hot to float precision


def _pixels(classes: list[int], num: int = 2) -> torch.Tensor:
    """``[1, num, 1, len(classes)]`` near one-hot logits: one pixel per entry of ``classes``."""
    return torch.nn.functional.one_hot(torch.tensor(classes), num).T.float().mul(BIG).view(1, num, 1, -1)


def test_positions_left_out_weigh_nothing_and_count_in_no_frequency():
    # a user's own loop with padded or ignored pixels: they counted in the frequencies and the mean
    logits = _pixels([0, 0, 0, 1, 0, 0])  # the last two pixels are padding
    valid = torch.tensor([True, True, True, True, False, False]).view(1, 1, -1)
    w = class_balanced_weights(logits, power=1.0, valid=valid).flatten()
    # over the four kept pixels f = [0.75, 0.25]: [2/3, 2/3, 2/3, 2] there, scaled to mean 1 over all six
    assert w.tolist() == pytest.approx([x * 6 / 4 for x in (2 / 3, 2 / 3, 2 / 3, 2)] + [0, 0], abs=1e-3)
    assert w.mean().item() == pytest.approx(1.0, abs=1e-6)  # so mean(w * term) is the kept pixels' weighted mean
    student = torch.zeros(1, 2, 1, 6)
    f = focal_weights(student, logits, None, 1.0, valid=valid).flatten()
    assert f.tolist() == pytest.approx([1.5, 1.5, 1.5, 1.5, 0, 0], abs=1e-6)
    with pytest.raises(Exception, match=r"valid \[1, 6\] must be the logits' positions \[1, 1, 6\]"):
        class_balanced_weights(logits, valid=valid.view(1, 6))


def test_three_background_pixels_and_one_object_by_hand():
    logits = _pixels([0, 0, 0, 1])  # f = [0.75, 0.25]
    w1 = class_balanced_weights(logits, power=1.0).flatten()
    # 1/f = [4/3, 4], mean over pixels (3 * 4/3 + 4) / 4 = 2: [2/3, 2/3, 2/3, 2]
    assert w1.tolist() == pytest.approx([2 / 3, 2 / 3, 2 / 3, 2], abs=1e-3)
    assert w1[:3].sum().item() == pytest.approx(w1[3].item(), abs=1e-3)  # each class weighs the same in all
    w_half = class_balanced_weights(logits, power=0.5).flatten()
    # f^-0.5 = [1.1547, 2], mean (3 * 1.1547 + 2) / 4 = 1.3660
    assert w_half.tolist() == pytest.approx([0.8453, 0.8453, 0.8453, 1.4641], abs=1e-3)
    assert class_balanced_weights(logits, power=0.0).flatten().tolist() == pytest.approx([1.0] * 4)


def test_a_catch_all_label_keeps_its_weight_and_the_others_share_theirs_by_hand():
    logits = _pixels([0, 0, 0, 0, 1, 1, 1, 2], num=3)  # f = [0.5, 0.375, 0.125]; label 0 stands for several
    catch_all = torch.tensor([True, False, False])
    w = class_balanced_weights(logits, power=1.0, catch_all=catch_all).flatten()
    # 1/f of labels 1, 2 = [8/3, 8], scaled to keep their total 0.5: 0.5 / (0.375 * 8/3 + 0.125 * 8) = 1/4
    assert w.tolist() == pytest.approx([1, 1, 1, 1, 2 / 3, 2 / 3, 2 / 3, 2], abs=1e-3)
    assert w[:4].sum().item() == pytest.approx(4.0, abs=1e-3)  # the catch-all's pixels keep their weight
    assert w[4:7].sum().item() == pytest.approx(w[7].item(), abs=3e-3)  # the others are balanced among them
    plain = class_balanced_weights(logits, power=1.0).flatten()  # without: the frequent catch-all loses weight
    assert plain[:4].sum().item() == pytest.approx(8 / 3, abs=1e-3)


def test_the_segmentation_loss_finds_catch_alls_from_the_projection():
    from amalgam.kd.class_balance import catch_all_labels

    task = get_task("segmentation")
    proj = torch.tensor([[1, 0, 1, 1], [0, 1, 0, 0]], dtype=torch.bool)  # label 0: background + two unknown classes
    assert catch_all_labels(proj).tolist() == [True, False] and catch_all_labels(None) is None
    teacher, student = _pixels([0, 0, 0, 1]), torch.randn(1, 4, 1, 4)
    expected = partial_label_kl(
        student, teacher, proj, 2.0, class_balanced_weights(teacher, 0.5, catch_all=torch.tensor([True, False]))
    )
    assert task.distill_loss(student, teacher, DistillOptions(proj, 2.0, class_balance=0.5)).item() == pytest.approx(
        expected.item(), rel=1e-6
    )
    # one catch-all and one class: nothing to balance among, the plain pixel mean
    plain = partial_label_kl(student, teacher, proj, 2.0)
    assert task.distill_loss(student, teacher, DistillOptions(proj, 2.0, class_balance=0.5)).item() == pytest.approx(
        plain.item(), rel=1e-5
    )


def test_soft_teacher_probabilities_by_hand():
    logits = torch.tensor([[0.0, 0.0], [BIG, 0.0]]).T.reshape(1, 2, 2)  # p = [0.5, 0.5] and [1, 0]
    # f = [0.75, 0.25]: w = [0.5 * 4/3 + 0.5 * 4, 4/3] = [8/3, 4/3], mean 2
    assert class_balanced_weights(logits, power=1.0).flatten().tolist() == pytest.approx([4 / 3, 2 / 3], abs=1e-3)


def test_segmentation_loss_weighs_the_rare_class_up_by_hand():
    task = get_task("segmentation")
    teacher = _pixels([0, 0, 0, 1])
    student = _pixels([0, 0, 0, 0]) * torch.tensor([1.0, 1.0, 1.0, 0.0])  # right on background, uniform on the object
    eye = torch.eye(2, dtype=torch.bool)
    log2 = math.log(2)  # the KL at the object pixel; ~0 at the others
    assert task.distill_loss(student, teacher, DistillOptions(eye, 1.0, class_balance=0.0)).item() == pytest.approx(
        log2 / 4, abs=1e-4
    )
    assert task.distill_loss(student, teacher, DistillOptions(eye, 1.0, class_balance=1.0)).item() == pytest.approx(
        2 * log2 / 4, abs=1e-3
    )
    half = task.distill_loss(student, teacher, DistillOptions(eye, 1.0, class_balance=0.5))
    assert half.item() == pytest.approx(1.4641 * log2 / 4, abs=1e-3)
    assert task.distill_loss(student, teacher, DistillOptions(eye, 1.0)).item() == pytest.approx(
        log2 / 4, abs=1e-4
    )  # default: off
    # combined with given weights (domain weights): multiplied
    given = torch.tensor([1.0, 1.0, 1.0, 0.5]).view(1, 1, 4)
    both = task.distill_loss(student, teacher, DistillOptions(eye, 1.0, weights=given, class_balance=0.5))
    assert both.item() == pytest.approx(0.5 * 1.4641 * log2 / 4, abs=1e-3)


def test_a_teacher_at_another_resolution_is_weighted_after_resizing():
    task = get_task("segmentation")
    teacher, student = torch.randn(2, 3, 8, 8), torch.randn(2, 4, 16, 16)
    proj = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0]], dtype=torch.bool)
    up = torch.nn.functional.interpolate(teacher, size=(16, 16), mode="bilinear", align_corners=False)
    expected = partial_label_kl(student, up, proj, 2.0, class_balanced_weights(up, 0.5, catch_all=proj.sum(1) > 1))
    got = task.distill_loss(student, teacher, DistillOptions(proj, 2.0, class_balance=0.5))
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_recipe_default_and_the_key_that_turns_it_off(world):
    assert AmalgamationConfig().class_balance == DEFAULT_POWER == 0.5  # on: see docs/benchmarks.md
    plan = prepare(load_recipe(world), with_data=False, log=lambda m: None)
    on = Objective(plan, student=None)
    seg = [t for t, g in on.terms.items() if plan.teachers[g[0]].task.name == "segmentation"]
    assert seg and all(on.loss_options[t] == {"class_balance": 0.5, "focal": 1.0, "output_kind": "logits"} for t in seg)
    assert all("class_balance" not in on.loss_options[t] for t in on.terms if t not in seg)  # dense labelled only
    off = Objective(
        prepare(load_recipe(world, ["amalgamation.class_balance=0"]), with_data=False, log=lambda m: None), None
    )
    assert all("class_balance" not in o for o in off.loss_options.values())  # the plain pixel mean
    assert all(o.get("focal") == 1.0 for t, o in off.loss_options.items() if t in seg)  # each key on its own


def test_focal_weights_by_hand():
    """Student probabilities of the teacher's label 0.5, 0.9, 0.1 and 1.0 at four pixels."""
    teacher = _pixels([0, 1, 0, 1])
    q = torch.tensor([0.5, 0.9, 0.1, 1.0])  # of the teacher's label at each pixel
    p_class0 = torch.where(torch.tensor([True, False, True, False]), q, 1 - q)
    student = torch.log(torch.stack([p_class0, 1 - p_class0]).clamp_min(1e-9)).view(1, 2, 1, 4)
    miss = torch.tensor([0.5, 0.1, 0.9, 0.0])
    got = focal_weights(student, teacher, None, 1.0).flatten()
    assert got.tolist() == pytest.approx((miss / miss.mean()).tolist(), abs=1e-5)
    got2 = focal_weights(student, teacher, None, 2.0).flatten()
    assert got2.tolist() == pytest.approx((miss**2 / (miss**2).mean()).tolist(), abs=1e-5)
    assert focal_weights(student, teacher, None, 0.0).flatten().tolist() == pytest.approx([1.0] * 4)


def test_focal_weights_sum_the_student_into_a_partial_teachers_labels():
    """A teacher of {background = unified 0 + 2, thing = unified 1}: q of background sums classes 0 and 2."""
    proj = torch.tensor([[1, 0, 1], [0, 1, 0]], dtype=torch.bool)
    teacher = _pixels([0, 1])
    student = torch.log(torch.tensor([[0.3, 0.4, 0.3], [0.3, 0.4, 0.3]]).T).view(1, 3, 1, 2)
    miss = torch.tensor([1 - 0.6, 1 - 0.4])
    assert focal_weights(student, teacher, proj, 1.0).flatten().tolist() == pytest.approx(
        (miss / miss.mean()).tolist(), abs=1e-5
    )


def test_the_segmentation_loss_multiplies_both_weights_and_focal_is_on_by_default():
    task = get_task("segmentation")
    proj = torch.tensor([[1, 0, 1, 1], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)[:2]
    teacher, student = torch.randn(2, 2, 6, 6), torch.randn(2, 4, 6, 6)
    both = class_balanced_weights(teacher, 0.5, catch_all=proj.sum(1) > 1) * focal_weights(student, teacher, proj, 1.0)
    expected = partial_label_kl(student, teacher, proj, 2.0, both)
    got = task.distill_loss(student, teacher, DistillOptions(proj, 2.0, class_balance=0.5, focal=1.0))
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    plain = task.distill_loss(student, teacher, DistillOptions(proj, 2.0))
    assert plain.item() == pytest.approx(partial_label_kl(student, teacher, proj, 2.0).item(), rel=1e-6)
    assert AmalgamationConfig().focal == DEFAULT_FOCAL == 1.0


def test_a_run_from_before_focal_resumes_only_with_it_pinned_off(world):
    from amalgam.config.schema import recipe_changes, recipe_differences, resume_hint

    recipe = load_recipe(world)
    stored = recipe.model_dump(mode="json", exclude={"output"})
    del stored["amalgamation"]["focal"]  # a checkpoint written before the key existed trained without it
    assert recipe_changes(stored, recipe) == ["amalgamation.focal"]
    assert recipe_changes(stored, load_recipe(world, ["amalgamation.focal=0"])) == []
    # the refusal says how to resume it as it was; a key the user changed gets no such hint
    hint = (
        "; the default of amalgamation.focal changed since that run: --set amalgamation.focal=0.0 resumes it as it was"
    )
    assert resume_hint(recipe_differences(stored, load_recipe(world, ["train.lr=0.5"]))) == hint
    then_one = recipe.model_dump(mode="json")  # focal 1.0 then: not the old default
    assert resume_hint(recipe_differences(then_one, load_recipe(world, ["amalgamation.focal=0"]))) == ""


def test_pseudo_label_cross_entropy_by_hand():
    """Teacher {background = unified 0 + 2, thing = unified 1}; the student's mass on 0 and 2 both count."""
    proj = torch.tensor([[1, 0, 1], [0, 1, 0]], dtype=torch.bool)
    teacher = _pixels([0, 1])  # top labels: background, thing
    student = torch.log(torch.tensor([[0.3, 0.4, 0.3], [0.3, 0.4, 0.3]]).T).view(1, 3, 1, 2)
    nll = [-math.log(0.6), -math.log(0.4)]
    assert partial_label_nll(student, teacher, proj).item() == pytest.approx(sum(nll) / 2, rel=1e-5)
    weights = torch.tensor([0.5, 1.5]).view(1, 1, 2)
    assert partial_label_nll(student, teacher, proj, weights).item() == pytest.approx(
        (0.5 * nll[0] + 1.5 * nll[1]) / 2, rel=1e-5
    )


def test_the_segmentation_loss_adds_the_pseudo_label_term_with_the_same_pixel_weights(world):
    task = get_task("segmentation")
    proj = torch.tensor([[1, 0, 1, 1], [0, 1, 0, 0]], dtype=torch.bool)
    teacher, student = torch.randn(2, 2, 6, 6), torch.randn(2, 4, 6, 6)
    w = class_balanced_weights(teacher, 0.5, catch_all=proj.sum(1) > 1) * focal_weights(student, teacher, proj, 1.0)
    expected = partial_label_kl(student, teacher, proj, 2.0, w) + 0.5 * partial_label_nll(student, teacher, proj, w)
    options = DistillOptions(proj, 2.0, class_balance=0.5, focal=1.0, pseudo_labels=0.5)
    assert task.distill_loss(student, teacher, options).item() == pytest.approx(expected.item(), rel=1e-6)
    assert AmalgamationConfig().pseudo_labels == 0.0  # off unless a recipe asks (docs/benchmarks.md)
    plan = build_plan(load_recipe(world, ["amalgamation.pseudo_labels=0.5"]), with_data=False, log=lambda m: None)
    options = Objective(plan, student=None).loss_options
    seg = [t for t in options if plan.teachers[t].task.name == "segmentation"]
    assert seg and all(options[t]["pseudo_labels"] == 0.5 for t in seg)
    assert all("pseudo_labels" not in o for t, o in options.items() if t not in seg)


def test_the_tree_search_key_names_pseudo_labels_only_when_set(world):
    from amalgam.distill.affinity import search_key

    assert "pseudo_labels" not in search_key(load_recipe(world))  # warm-ups stored before it stay valid
    assert search_key(load_recipe(world, ["amalgamation.pseudo_labels=0.5"]))["pseudo_labels"] == 0.5
