"""Label taxonomies: VOC, COCO and a coarse teacher related by the recipe, trained and scored pixel by pixel."""

from __future__ import annotations

import pytest
import torch
import yaml
from taxonomy_world import CLASSES, COARSE, COCO, VOC, taxonomy_world
from torch import nn

from amalgam.config.label_entries import space_of
from amalgam.config.recipe import load_recipe
from amalgam.distill.plan import build_plan
from amalgam.errors import AmalgamError
from amalgam.evaluation.evaluate import evaluate
from amalgam.labels import IGNORE, LabelSpace, extents, lookup, partial_label_kl, projection, unify


class TableStudent(nn.Module):
    """One logit vector per palette colour: the smallest student that can be right on every pixel."""

    def __init__(self, palette_index, classes: int):
        super().__init__()
        self.palette_index = palette_index
        self.table = nn.Parameter(torch.zeros(5, classes))

    def forward(self, x):
        return {"segmentation": self.table[self.palette_index(x)].permute(0, 3, 1, 2)}


def fit(plan, steps: int = 150) -> TableStudent:
    """The student fitted to every teacher with the partial-label loss and the plan's projections."""
    import models  # the world's factory module (the recipe folder is on sys.path after build_plan)

    student = TableStudent(models.palette_index, len(plan.spaces["segmentation"]))
    images = torch.stack([plan.sources[i]["image"] for i in range(len(plan.sources))])
    targets = {name: t(images) for name, t in plan.teachers.items()}
    opt = torch.optim.Adam(student.parameters(), lr=0.1)
    for _ in range(steps):
        out = student(images)["segmentation"]
        loss = sum(partial_label_kl(out, targets[n], plan.projections[n]) for n in plan.teachers)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return student


def val_pixels(plan) -> tuple[torch.Tensor, torch.Tensor]:
    val = plan.eval_sets["val"]
    images = torch.stack([val[i]["image"] for i in range(len(val))])
    masks = torch.stack([val[i]["mask"] for i in range(len(val))]).long()
    return images, masks


@pytest.fixture
def on_path(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, "models", raising=False)
    return tmp_path


def test_voc_coco_coarse_trained_on_a_tiny_world_are_right_on_every_pixel(on_path):
    plan = build_plan(load_recipe(taxonomy_world(on_path)), log=lambda m: None)
    unified = plan.spaces["segmentation"]
    assert unified.names == ("background", "tv", "person", "car", "bus")  # one tv, no vehicle class
    student = fit(plan)
    images, masks = val_pixels(plan)
    pred = student(images)["segmentation"].argmax(1)
    # the dense set's classes are the unified names in the same order: label == unified index
    assert torch.equal(pred, masks), f"{int((pred != masks).sum())} of {masks.numel()} pixels wrong"
    result = evaluate(plan, student, torch.device("cpu"), log=lambda m: None)
    rows = {r.teacher: r for r in result.tasks}
    for name in ("voc", "coco", "coarse"):  # ground truth read through each teacher's relation
        assert rows[name].teacher_metrics["miou"] == pytest.approx(1.0), name
        assert rows[name].student_metrics["miou"] == pytest.approx(1.0), name
    assert len(rows["coarse"].teacher_metrics["iou"]) == 2  # scored on background / vehicle
    assert result.unified[0]["metrics"]["miou"] == pytest.approx(1.0)


def test_without_relations_the_same_teachers_give_a_wrong_student(on_path):
    plan = build_plan(load_recipe(taxonomy_world(on_path, related=False)), log=lambda m: None)
    unified = plan.spaces["segmentation"]
    assert unified.names == ("background", "tvmonitor", "person", "tv", "car", "bus", "vehicle")
    student = fit(plan)
    images, masks = val_pixels(plan)
    pred = student(images)["segmentation"].argmax(1)
    truth = torch.tensor([unified.names.index(c) for c in CLASSES])[masks]
    wrong = pred != truth
    assert wrong.any()  # tv pixels split between tv and tvmonitor, car/bus with vehicle
    assert not wrong[masks == CLASSES.index("person")].any()  # the one class all names agree on


def test_projection_and_ground_truth_follow_the_relations():
    voc = space_of(["background", *VOC], "background")
    coco = space_of(["background", *COCO], "background")
    coarse = space_of(["background", *COARSE], "background")
    unified = unify([voc, coco, coarse], "background")
    assert projection(voc, unified).int().tolist() == [[1, 0, 0, 1, 1], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0]]
    assert projection(coarse, unified).int().tolist() == [[1, 1, 1, 0, 0], [0, 0, 0, 1, 1]]
    ext = extents([voc, coco, coarse])
    names = ["background", "tvmonitor", "tv", "person", "car", "bus", "vehicle", "zebra"]
    # a VOC-named set scores COCO (tvmonitor -> tv); a fine set scores the coarse teacher (car -> vehicle)
    assert lookup(names, coco, ext).tolist() == [0, 1, 1, 2, 3, 4, IGNORE, 0]  # a vehicle pixel is no car
    assert lookup(names, coarse, ext).tolist() == [0, 0, 0, 0, 1, 1, 1, 0]
    assert lookup(names, voc, ext).tolist() == [0, 1, 1, 2, 0, 0, 0, 0]
    assert lookup(names, unified, ext).tolist() == [0, 1, 1, 2, 3, 4, IGNORE, 0]


def test_one_pixel_fit_keeps_a_tv_pixel_a_tv_for_the_voc_teacher():
    """The issue's case: VOC says tvmonitor, COCO says tv; related, the student agrees with both."""
    voc = space_of(["background", *VOC], "background")
    coco = space_of(["background", *COCO], "background")
    unified = unify([voc, coco], "background")
    logits = torch.zeros(1, len(unified), requires_grad=True)
    targets = {"voc": torch.tensor([[0.0, 6.0, 0.0]]), "coco": torch.tensor([[0.0, 6.0, 0.0, 0.0, 0.0]])}
    opt = torch.optim.Adam([logits], lr=0.1)
    for _ in range(200):
        loss = partial_label_kl(logits, targets["voc"], projection(voc, unified))
        loss = loss + partial_label_kl(logits, targets["coco"], projection(coco, unified))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert unified.names[logits.argmax(1).item()] == "tv"
    restricted = projection(voc, unified).float() @ logits.detach().softmax(1)[0]
    assert voc.names[restricted.argmax().item()] == "tvmonitor"


def test_label_entries_are_checked():
    with pytest.raises(AmalgamError, match=r"^1: the background 'bg' covers every class"):
        space_of(["a", {"bg": "x"}], "bg")
    with pytest.raises(AmalgamError, match=r"^'car' is covered by both 'vehicle' and 'car'$"):
        space_of([{"vehicle": ["car", "bus"]}, "car"], None)
    with pytest.raises(AmalgamError, match=r"^0: expected a name"):
        space_of([{"a": "x", "b": "y"}], None)
    assert space_of(["a", "b"], None) == LabelSpace(("a", "b"))  # plain names: no relation stored


def test_a_teacher_is_scored_on_the_classes_its_eval_set_holds(on_path):
    recipe = taxonomy_world(on_path)
    overrides = [  # coco learns a 'zebra' the set lacks, and calls every bus a zebra
        "teachers.coco.labels=[background, tv, person, car, bus, zebra]",
        "teachers.coco.model.classes=6",
        "teachers.coco.model.mapping=[0, 1, 2, 3, 5]",
    ]
    lines: list[str] = []
    plan = build_plan(load_recipe(recipe, overrides), log=lines.append)
    absent = [line for line in lines if "absent" in line]
    assert absent == ["teacher 'coco' is scored on 4 of its 5 labels on 'val'; absent from the set: zebra"]
    result = evaluate(plan, fit(plan, steps=1), torch.device("cpu"), log=lambda m: None)
    coco = next(r for r in result.tasks if r.teacher == "coco")
    # background, tv, person, car right (IoU 1), bus never found (0); zebra, absent from the set, has no IoU
    assert coco.teacher_metrics["miou"] == pytest.approx(4 / 5)
    assert coco.teacher_metrics["iou"][5] is None  # absent from the set: n/a, not a near-blind 0


def test_labels_file_and_a_classes_file_of_folder_ids(fresh_world):
    root = fresh_world.parent
    # both files begin with a UTF-8 byte-order mark (Windows editors write one): it was read as part of
    # the first name, which then matched nothing
    (root / "cls_labels.txt").write_text("\ufeffcat\n dog \n\n", encoding="utf-8")  # blank lines at the end only
    ids = {"bird": "n01503061", "cat": "n02121808", "dog": "n02084071"}
    for name, wnid in ids.items():  # the eval set's folders are WordNet ids, as ImageNet's are
        (root / "items" / "val" / name).rename(root / "items" / "val" / wnid)
    (root / "wnids.txt").write_text("\ufeff" + "".join(f"{w} {n}\n" for n, w in ids.items()), encoding="utf-8")
    raw = yaml.safe_load(fresh_world.read_text())
    del raw["teachers"]["cls"]["labels"]
    raw["teachers"]["cls"]["labels_file"] = "cls_labels.txt"
    raw["data"]["eval"]["items-val"]["classes_file"] = "wnids.txt"
    fresh_world.write_text(yaml.safe_dump(raw))
    plan = build_plan(load_recipe(fresh_world), log=lambda m: None)
    assert plan.teachers["cls"].space.names == ("cat", "dog")
    assert plan.eval_sets["items-val"].classes == ["bird", "dog", "cat"]  # folders n015.., n020.., n021..
    (root / "wnids.txt").write_text("n01503061 bird\n")
    with pytest.raises(AmalgamError, match=r"^data\.eval\.items-val: classes_file .* does not name 2 of the set's"):
        build_plan(load_recipe(fresh_world), log=lambda m: None)


def test_a_numbered_labels_file_is_read_by_its_numbers(fresh_world):
    # "0 background" lines were read as names, which then matched no label; 1-based ones would shift every class
    root = fresh_world.parent
    raw = yaml.safe_load(fresh_world.read_text())
    del raw["teachers"]["cls"]["labels"]
    raw["teachers"]["cls"]["labels_file"] = "cls_labels.txt"
    fresh_world.write_text(yaml.safe_dump(raw))
    (root / "cls_labels.txt").write_text("1: dog\n0: cat\n")
    assert load_recipe(fresh_world).teachers["cls"].labels == ["cat", "dog"]
    (root / "cls_labels.txt").write_text("0 - cat\n1 - dog\n")  # torchvision's MNIST style: names, not numbered
    assert load_recipe(fresh_world).teachers["cls"].labels == ["0 - cat", "1 - dog"]
    (root / "cls_labels.txt").write_text("1 cat\n2 dog\n")
    with pytest.raises(
        AmalgamError,
        match=r"^teachers\.cls\.labels_file: every line of .*cls_labels.txt starts with a number \(1, 2\), but",
    ):
        load_recipe(fresh_world)


def test_a_label_with_a_trailing_space_is_quoted_in_the_relation_matrix():
    # a trial: 'dog ' showed as 'dog' in the matrix, its space invisible (the labels line quoted it)
    from amalgam.labels import LabelSpace, unify
    from amalgam.labels.taxonomy import relation_lines

    a, b = LabelSpace(("cat", "dog ")), LabelSpace(("cat", "bird"))
    lines = relation_lines({"t1": a, "t2": b}, unify([a, b]))
    assert lines[0] == "    columns: 0 cat, 1 'dog ', 2 bird"
    assert "    t1.'dog '  . x ." in lines
