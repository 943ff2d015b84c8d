"""An eval set's multi-hot ground truth (a task without exclusive labels) reaches the meters in the
teacher's label order and the unified one: columns gathered by name, not values looked up as classes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from amalgam.errors import AmalgamError
from amalgam.evaluation.evaluate import _Scorer
from amalgam.labels import IGNORE, LabelSpace, extents, lookup, projection, unify
from amalgam.task import Task

SET = ["footwear", "has_sleeves", "upper_body", "covers_legs"]  # the set's column order


class Attributes(Task):
    name, dense, labelled, exclusive_labels, target_key = "attributes", False, True, False, "label"

    def predict(self, output, size, projection=None):
        if projection is not None:
            output = output[:, projection.float().argmax(1)]
        return (output > 0).long()


class Meter:
    def __init__(self):
        self.seen: list[torch.Tensor] = []

    def update(self, pred, target):
        assert pred.shape == target.shape
        self.seen.append(target)


def test_multi_hot_columns_are_gathered_by_label_and_absent_ones_ignored():
    # a trial: a teacher of the same attributes in another order scored 0.012 on one it gets 0.988 right,
    # and the student's whole-space row 0.40 against 0.95: the values 0/1 were looked up as class indices
    target = torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0]])
    teacher = LabelSpace(("has_sleeves", "footwear", "upper_body", "covers_legs"))
    lut = lookup(SET, teacher, extents([teacher]))
    assert torch.equal(Attributes().map_target(target, lut, 4), target[:, [1, 0, 2, 3]])
    bags = LabelSpace(("is_bag", "footwear"))
    space = unify([teacher, bags])
    wide = Attributes().map_target(target, lookup(SET, space, extents([teacher, bags])), len(space))
    assert wide.shape == (2, 5)
    for name in SET:
        assert torch.equal(wide[:, space.names.index(name)], target[:, SET.index(name)])
    assert (wide[:, space.names.index("is_bag")] == IGNORE).all()  # no column of the set: not scored


def test_several_columns_of_one_label_give_their_largest_and_ignored_entries_stay_ignored():
    target = torch.tensor([[0, 1, IGNORE], [0, 0, IGNORE], [IGNORE, IGNORE, IGNORE]])
    lut = torch.tensor([0, 0, 1])  # two columns of the set are label 0 (a group), the third is label 1
    assert Attributes().map_target(target, lut, 2).tolist() == [[1, IGNORE], [0, IGNORE], [IGNORE, IGNORE]]


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int8, torch.int64, torch.float32])
def test_a_multi_hot_target_of_any_dtype_keeps_its_values_and_ignored_columns(dtype):
    # a review: a bool target's IGNORE (255) read as True, so every answer of a row counted as positive
    target = torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0]]).to(dtype)
    wide = Attributes().map_target(target, torch.tensor([1, 0, 2, 3]), 5)
    assert wide[:, :4].tolist() == target.float()[:, [1, 0, 2, 3]].long().tolist() and (wide[:, 4] == IGNORE).all()
    assert wide.dtype == (torch.float32 if dtype == torch.float32 else torch.int64)


def test_a_target_without_a_column_per_class_is_one_line_and_exclusive_tasks_look_classes_up():
    with pytest.raises(AmalgamError, match=r"multi-hot \[B, 4\], one column per class of the set, got shape \[2\]"):
        Attributes().map_target(torch.tensor([1, 0]), torch.arange(4), 4)
    with pytest.raises(AmalgamError, match=r"a task of multi-label maps defines map_target"):
        Attributes().map_target(torch.zeros(2, 4, 3, 3), torch.arange(4), 4)  # a map's layout is the plugin's

    class Exclusive(Attributes):
        exclusive_labels = True

    assert Exclusive().map_target(torch.tensor([0, 2, IGNORE]), torch.tensor([2, 0, 1]), 3).tolist() == [2, 1, IGNORE]


def test_the_scorer_hands_the_meters_the_targets_in_each_rows_order(monkeypatch):
    from amalgam.evaluation import evaluate

    teacher_space = LabelSpace(("has_sleeves", "footwear", "upper_body", "covers_legs"))
    space = unify([teacher_space, LabelSpace(("is_bag",))])
    extent = extents([teacher_space])
    teacher = SimpleNamespace(task=Attributes(), space=teacher_space)
    meters = [Meter(), Meter(), Meter()]
    scorer = _Scorer(
        teacher,
        projection(teacher_space, space),
        lookup(SET, teacher_space, extent),
        lookup(SET, space, extent, refuse_look_alikes=False),
        True,
        meters,
    )
    target = torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0]]) > 0  # bools, as a set may give them
    views = SimpleNamespace(student=torch.zeros(2, 3, 8, 8))
    answers = torch.randn(2, 4)
    monkeypatch.setattr(evaluate, "answer_views", lambda *a, **k: (answers, None))
    scorer.update(views, {"attributes": torch.randn(2, len(space))}, {"label": target, "image": torch.zeros(2)})
    in_order = target.long()[:, [1, 0, 2, 3]]
    assert torch.equal(meters[0].seen[0], in_order)  # the teacher's row, in its own order
    assert torch.equal(meters[1].seen[0], in_order)  # the student's row: the teacher's order
    unified = meters[2].seen[0]
    assert unified.shape == (2, len(space)) and (unified[:, space.names.index("is_bag")] == IGNORE).all()


def test_a_sets_one_dimensional_numpy_target_is_an_images_value_and_maps_are_still_resized():
    # a trial: a multi-hot label given as a numpy array was taken for a map and resized: an albumentations
    # error ("not enough values to unpack") named neither the set nor the target
    import numpy as np

    from amalgam.data.image_set import ImageSet

    class Attrs(ImageSet):
        classes, target_keys = SET, frozenset({"label", "mask"})

        def __len__(self):
            return 1

        def load(self, index):
            rgb = np.zeros((20, 30, 3), dtype=np.uint8)
            return rgb, {"label": np.array([1, 0, 0, 1]), "mask": np.ones((20, 30), dtype=np.uint8)}

    sample = Attrs().configure((10, 15), with_targets=True)[0]
    assert torch.equal(sample["label"], torch.tensor([1, 0, 0, 1])) and sample["label"].dtype == torch.int64
    assert sample["mask"].shape == (10, 15) and sample["image"].shape == (3, 10, 15)

    class ChannelsFirst(Attrs):
        def load(self, index):
            rgb, targets = super().load(index)
            return rgb, {**targets, "mask": np.ones((4, 20, 30), dtype=np.uint8)}  # resized, it was cut across

    with pytest.raises(AmalgamError, match=r"target .mask. is a \[C, H, W\] map \[4, 20, 30\]: give maps channels"):
        ChannelsFirst().configure((10, 15), with_targets=True)[0]


def test_an_eval_set_whose_targets_a_multi_label_task_cannot_read_stops_before_training():
    # a trial: class indices (an image folder) as a multi-label teacher's eval set passed inspect and the
    # whole schedule, then stopped at evaluation
    import numpy as np

    from amalgam.data.image_set import ImageSet
    from amalgam.distill.eval_checks import check_eval_set
    from amalgam.errors import RecipeError

    class Folder(ImageSet):
        classes, target_keys = SET, frozenset({"label"})

        def __len__(self):
            return 2

        def load(self, index):
            return np.zeros((8, 8, 3), dtype=np.uint8), {"label": np.int64(index)}

    space = LabelSpace(["has_sleeves", "footwear"])
    teacher = SimpleNamespace(name="attrs", eval_name="folder", task=Attributes(), space=space)
    data = Folder().configure((8, 8), with_targets=True)
    with pytest.raises(RecipeError, match=r"teachers.attrs.eval: eval set 'folder': task attributes: an eval set's"):
        check_eval_set(teacher, data, None, log=lambda line: None)

    class MultiHot(Folder):
        def load(self, index):
            return np.zeros((8, 8, 3), dtype=np.uint8), {"label": np.array([1, 0, 0, 1])}

    check_eval_set(teacher, MultiHot().configure((8, 8), with_targets=True), None, log=lambda line: None)  # readable
