"""Label taxonomies: VOC, COCO and a coarse teacher related by the recipe, trained and scored pixel by pixel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from amalgam.config.label_entries import space_of
from amalgam.config.recipe import load_recipe
from amalgam.distill.plan import build_plan
from amalgam.errors import AmalgamError
from amalgam.evaluation.evaluate import evaluate
from amalgam.labels import IGNORE, LabelSpace, extents, lookup, partial_label_kl, projection, unify

VOC = [{"tvmonitor": "tv"}, "person"]
COCO = ["tv", "person", "car", "bus"]
COARSE = [{"vehicle": ["car", "bus"]}]
CLASSES = ["background", "tv", "person", "car", "bus"]  # the palette's order: black, red, green, blue, yellow

MODELS = '''
import torch
import torch.nn.functional as F
from torch import nn

PALETTE = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], dtype=torch.float)


def palette_index(x):
    """The palette colour nearest each pixel: the true class of the tiny world."""
    return ((x.unsqueeze(1) - PALETTE.view(1, 5, 3, 1, 1)) ** 2).sum(2).argmin(1)


class PaletteTeacher(nn.Module):
    """An oracle in its own label space: palette class -> its label (``mapping``), confident logits."""

    def __init__(self, mapping, classes):
        super().__init__()
        self.register_buffer("lut", torch.tensor(mapping))
        self.classes = classes
        self.scale = nn.Parameter(torch.tensor(6.0))

    def forward(self, x):
        return self.scale * F.one_hot(self.lut[palette_index(x)], self.classes).permute(0, 3, 1, 2).float()


def teacher(mapping, classes):
    return PaletteTeacher(mapping, classes)
'''


def write_scenes(root: Path, count: int, seed: int) -> None:
    """Images of palette rectangles; labels are the palette index (one class per colour)."""
    rng = np.random.default_rng(seed)
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=np.uint8)
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for i in range(count):
        label = np.zeros((32, 32), dtype=np.uint8)
        for cls in range(1, 5):
            y, x = rng.integers(0, 24, 2)
            label[y : y + 8, x : x + 8] = cls
        Image.fromarray(palette[label]).save(root / "images" / f"{i:03d}.png")
        Image.fromarray(label).save(root / "labels" / f"{i:03d}.png")


def teacher_block(labels: list, mapping: list[int]) -> dict:
    return {
        "task": "segmentation",
        "model": {"from": "python", "factory": "models:teacher", "mapping": mapping, "classes": len(labels) + 1},
        "input": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
        "labels": ["background", *labels],
        "background": "background",
        "eval": "val",
    }


def taxonomy_world(root: Path, related: bool = True) -> Path:
    """Three oracle teachers in VOC, COCO and coarse names; ``related=False`` names only (no relations)."""
    (root / "models.py").write_text(MODELS)
    write_scenes(root / "train", 8, seed=0)
    write_scenes(root / "val", 4, seed=1)
    voc = VOC if related else ["tvmonitor", "person"]
    coarse = COARSE if related else ["vehicle"]
    recipe = {
        "name": "taxonomy",
        "device": "cpu",
        "data": {
            "image_size": [32, 32],
            "sources": {"train": {"type": "folder", "path": "train/images"}},
            "eval": {"val": {"type": "dense", "path": "val"}},
        },
        "teachers": {  # mapping: palette class -> the teacher's label index
            "voc": teacher_block(voc, [0, 1, 2, 0, 0]),
            "coco": teacher_block(COCO, [0, 1, 2, 3, 4]),
            "coarse": teacher_block(coarse, [0, 0, 0, 1, 1]),
        },
        "student": {"encoder": "tu-test_resnet"},
        "train": {"workers": 0},
    }
    if not related:  # by name alone the coarse teacher's vehicle is in no eval set (only coco is scored)
        del recipe["teachers"]["voc"]["eval"], recipe["teachers"]["coarse"]["eval"]
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return root / "recipe.yaml"


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
    import models  # the world's factory module (the recipe folder is on sys.path after prepare)

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
    # background, tv, person, car right (IoU 1), bus never found (0); zebra's 0 IoU is not averaged in
    assert coco.teacher_metrics["miou"] == pytest.approx(4 / 5)
    assert coco.teacher_metrics["iou"][5] == 0.0


def test_labels_file_and_a_classes_file_of_folder_ids(fresh_world):
    root = fresh_world.parent
    (root / "cls_labels.txt").write_text("cat\n\n dog \n")
    ids = {"bird": "n01503061", "cat": "n02121808", "dog": "n02084071"}
    for name, wnid in ids.items():  # the eval set's folders are WordNet ids, as ImageNet's are
        (root / "items" / "val" / name).rename(root / "items" / "val" / wnid)
    (root / "wnids.txt").write_text("".join(f"{w} {n}\n" for n, w in ids.items()))
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


def test_inspect_warns_about_look_alike_names_and_prints_the_relation_matrix(on_path, capsys):
    from amalgam.cli import main
    from amalgam.taxonomy import likeness, near_duplicates

    assert likeness("tvmonitor", "tv monitor") == "the same name up to case, spacing and plural"
    assert likeness("TV", "tvmonitor") == "'tv' begins or ends 'tvmonitor'"
    assert likeness("Sneakers", "sneaker") == "the same name up to case, spacing and plural"
    assert likeness("colour", "color") == "1 edit apart"
    assert likeness("car", "bus") is None and likeness("person", "bicycle") is None
    spaces = {"voc": LabelSpace(("tvmonitor",)), "other": LabelSpace(("tv monitor", "tv"))}
    warned = near_duplicates(spaces, unify(list(spaces.values())))
    assert len(warned) == 3  # every pair of the three
    assert warned[0].startswith("warning: unified classes 'tvmonitor' (voc) and 'tv monitor' (other) look alike")

    recipe = taxonomy_world(on_path, related=False)
    assert main(["inspect", str(recipe), "--quiet", "--no-data"]) == 0
    out = capsys.readouterr().out
    assert "warning: unified classes 'tvmonitor' (voc) and 'tv' (coco) look alike" in out


def test_inspect_prints_the_matrix_it_will_use(on_path, capsys):
    from amalgam.cli import main

    assert main(["inspect", str(taxonomy_world(on_path)), "--quiet", "--no-data"]) == 0
    out = capsys.readouterr().out
    assert "look alike" not in out  # related: no look-alike classes left
    matrix = out[out.index("label relations:") :].splitlines()
    assert matrix[2] == "    columns: 0 background, 1 tv, 2 person, 3 car, 4 bus"
    assert matrix[3:6] == [
        "    voc.background     x . . x x",
        "    voc.tvmonitor      . x . . .",
        "    voc.person         . . x . .",
    ]
    assert "    coarse.vehicle     . . . x x" in matrix


def test_suggest_labels_proposes_the_renames_and_groups_the_recipe_lacks(on_path, capsys):
    from amalgam.cli import main

    recipe = taxonomy_world(on_path, related=False)
    assert main(["inspect", str(recipe), "--quiet", "--suggest-labels", "8"]) == 0
    out = capsys.readouterr().out
    proposals = [
        line.split("  (vs")[0].strip() for line in out.splitlines() if line.startswith(("  rename", "  group"))
    ]
    # the mirrored tvmonitor/tv rename is kept once: the later teacher takes the earlier one's name
    assert proposals == [
        "rename: teachers.coco.labels {tv: tvmonitor}",
        "group: teachers.coarse.labels {vehicle: [car, bus]}",
    ]
    assert "  coarse:\n    labels: [background, {vehicle: [car, bus]}]" in out
    # applied, the recipe has nothing left to propose
    fixed = ["--set", "teachers.coarse.labels=[background, {vehicle: [car, bus]}]"]
    assert (
        main(
            [
                "inspect",
                str(recipe),
                "--quiet",
                "--suggest-labels",
                "8",
                *fixed,
                "--set",
                "teachers.voc.labels=[background, {tvmonitor: tv}, person]",
            ]
        )
        == 0
    )
    assert "no relation to propose" in capsys.readouterr().out


def test_propose_needs_both_directions_of_evidence_and_skips_unsure_samples():
    from amalgam.suggest_labels import cooccurrence, propose

    b = LabelSpace(("shirt", "coat", "bag"))
    # a coarse 'top' that is B's shirt and coat together; bag lands in top too rarely to join
    coarse = LabelSpace(("top", "bag"))
    counts = torch.tensor([[95, 90, 5], [5, 10, 95]])
    assert [(x, c) for x, c, _ in propose(counts, coarse, b)] == [("top", ("shirt", "coat"))]
    assert propose(counts, coarse, b)[0][2] == "95% of shirt (100), 90% of coat (100) are top; they are 97% of its 190"
    # half of top's samples are something B calls bag, half of B's bags are elsewhere: no group
    assert propose(torch.tensor([[100, 0, 100], [0, 100, 100]]), coarse, b) == []
    # a sample a teacher is unsure of (-1) is not counted
    assert cooccurrence(torch.tensor([0, 1, -1]), torch.tensor([2, -1, 0]), 2, 3).tolist() == [[0, 0, 1], [0, 0, 0]]


def test_proposals_become_one_coherent_edit():
    from amalgam.suggest_labels import Suggestion, consistent

    spaces = {
        "fine": LabelSpace(("Trouser", "T-shirt", "Coat")),
        "renamed": LabelSpace(("trousers", "tee", "Coat")),
        "coarse": LabelSpace(("Trouser", "top")),
    }

    def s(teacher, label, covers, other):
        return Suggestion("classification", teacher, label, tuple(covers), other, f"{teacher}/{other}")

    found = [
        s("fine", "T-shirt", ["tee"], "renamed"),  # the mirror of renamed's tee
        s("renamed", "tee", ["T-shirt"], "fine"),
        s("coarse", "Trouser", ["trousers"], "renamed"),  # would split Trouser in two if applied as is
        s("renamed", "trousers", ["Trouser"], "coarse"),
        s("coarse", "top", ["T-shirt", "Coat"], "fine"),
        s("coarse", "top", ["tee", "Coat"], "renamed"),  # the same group in renamed's names
    ]
    edit = [(x.teacher, x.entry()) for x in consistent(found, spaces, list(spaces))]
    assert edit == [
        ("renamed", "{trousers: Trouser}"),
        ("renamed", "{tee: T-shirt}"),
        ("coarse", "{top: [T-shirt, Coat]}"),
    ]
