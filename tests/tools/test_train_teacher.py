"""tools/train_teacher.py: each kind of teacher trains a couple of steps and its artefact loads."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import yaml
from train_teacher import init_from, load_zoo, main, train_zoo, val_summary

from amalgam.errors import AmalgamError
from amalgam.task import get_task
from amalgam.teachers.model_sources import build_model, load_checkpoint

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
SMALL_TRAIN = {"epochs": 1, "batch_size": 4, "workers": 0, "eval_batch_size": 8}


def write_zoo(tmp_path: Path, teachers: dict) -> Path:
    """Writes a zoo file whose python factories come from the repository's recipes/ folder."""
    path = tmp_path / "zoo.yaml"
    path.write_text(yaml.safe_dump({"recipe_dir": str(RECIPES), "device": "cpu", "teachers": teachers}))
    return path


def cls_teacher(items: Path) -> dict:
    return {
        "task": "classification",
        "model": {"from": "python", "factory": "demo_models:small_resnet", "num_classes": 2, "width": 4},
        "input": {"size": [28, 28], "channels": 1, "mean": [0.5], "std": [0.25]},
        "labels": ["cat", "dog"],  # 'bird' images must be dropped, not taught as a class
        "train": {
            **SMALL_TRAIN,
            "data": {"type": "imagefolder", "path": str(items)},
            "val": {"type": "imagefolder", "path": str(items)},
        },
        "save": "out/cls.pt",
    }


def test_classification_with_label_subset(tmp_path: Path, tiny_items: Path, capsys) -> None:
    zoo = write_zoo(tmp_path, {"cls": cls_teacher(tiny_items)})
    result = train_zoo(zoo)["cls"]
    model = build_model("python", {"factory": "demo_models:small_resnet", "num_classes": 2, "width": 4}, RECIPES)
    load_checkpoint(model, tmp_path / "out" / "cls.pt", "cls")
    assert result["val"]["count"] == 8  # 4 cats + 4 dogs scored; the birds were left out
    per_class = result["val"]["per_class"]
    assert list(per_class) == ["cat", "dog"] and [r["support"] for r in per_class.values()] == [4, 4]
    assert all(0.0 <= r["recall"] <= 1.0 for r in per_class.values())
    out = capsys.readouterr().out
    assert "[cls]   class" in out and "[cls]   dog" in out  # the per-class table
    assert "8 training images" in out
    assert "checkpoint: " in out and "labels: [cat, dog]" in out


def test_segmentation_with_background(tmp_path: Path, tiny_dense: Path) -> None:
    model_cfg = {
        "from": "smp",
        "arch": "unet",
        "encoder": "resnet18",
        "classes": 3,
        "encoder_depth": 3,
        "decoder_channels": [8, 8, 8],
    }
    zoo = write_zoo(
        tmp_path,
        {
            "seg": {
                "task": "segmentation",
                "model": model_cfg,
                "input": {"size": [32, 32]},
                "labels": ["other", "disc", "bar"],  # 'background' and 'square' both fall into 'other'
                "background": "other",
                "train": {
                    **SMALL_TRAIN,
                    "data": {"type": "dense", "path": str(tiny_dense)},
                    "val": {"type": "dense", "path": str(tiny_dense), "limit": 4},
                },
                "save": "out/seg.pt",
            }
        },
    )
    result = train_zoo(zoo)["seg"]
    model = build_model("smp", {k: v for k, v in model_cfg.items() if k != "from"}, tmp_path)
    load_checkpoint(model, tmp_path / "out" / "seg.pt", "seg")
    assert 0.0 <= result["val"]["miou"] <= 1.0
    assert len(result["val"]["iou"]) == 3
    assert list(result["val"]["per_class"]) == ["other", "disc", "bar"]
    for k, row in enumerate(result["val"]["per_class"].values()):
        assert row["iou"] == pytest.approx(result["val"]["iou"][k], abs=1e-4) or row["iou"] != row["iou"]

    # A teacher with other labels starts from this one's weights: all but the 3-class head load.
    other = build_model("smp", {k: v for k, v in {**model_cfg, "classes": 2}.items() if k != "from"}, tmp_path)
    loaded = init_from(other, tmp_path / "out" / "seg.pt")
    assert loaded == len(other.state_dict()) - 2
    torch.testing.assert_close(other.encoder.state_dict(), model.encoder.state_dict())
    with pytest.raises(AmalgamError, match="no tensor matches"):
        init_from(torch.nn.Linear(3, 3), tmp_path / "out" / "seg.pt")


def test_depth_saved_as_torchscript(tmp_path: Path, tiny_dense: Path) -> None:
    zoo = write_zoo(
        tmp_path,
        {
            "depth": {
                "task": "depth",
                "model": {"from": "torchscript", "path": "out/depth.ts"},
                "build": {
                    "from": "smp",
                    "arch": "unet",
                    "encoder": "resnet18",
                    "classes": 1,
                    "encoder_depth": 3,
                    "decoder_channels": [8, 8, 8],
                },
                "input": {"size": [32, 32]},
                "train": {**SMALL_TRAIN, "data": {"type": "dense", "path": str(tiny_dense)}},
            }
        },
    )
    train_zoo(zoo)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(str(tmp_path / "out" / "depth.ts"))
    with torch.no_grad():
        out = scripted(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, 1, 32, 32)
    assert bool((out > 0).all())


def test_existing_checkpoint_is_skipped_unless_forced(tmp_path: Path, tiny_items: Path, capsys) -> None:
    zoo = write_zoo(tmp_path, {"cls": cls_teacher(tiny_items)})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "cls.pt").write_bytes(b"old")
    assert main([str(zoo), "--teacher", "cls"]) == 0
    assert "skipped" in capsys.readouterr().out
    assert (tmp_path / "out" / "cls.pt").read_bytes() == b"old"
    assert main([str(zoo), "--all", "--force", "--limit", "8"]) == 0
    assert (tmp_path / "out" / "cls.pt").read_bytes() != b"old"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t["train"].update(epochz=3), "teachers.cls.train.epochz: unknown key"),
        (lambda t: t.pop("save"), "teachers.cls.save: required"),
        (lambda t: t.update(labels=["cat", "cat"]), "teachers.cls.labels: duplicate"),
        (lambda t: t["model"].update(factory="demo_models:nope"), "teachers.cls.model.factory"),
    ],
)
def test_zoo_errors_name_the_key(tmp_path: Path, tiny_items: Path, change, message: str) -> None:
    teacher = cls_teacher(tiny_items)
    change(teacher)
    with pytest.raises(AmalgamError, match=message.replace(".", r"\.")):
        load_zoo(write_zoo(tmp_path, {"cls": teacher}))


def test_unet_starts_from_the_item_classifier(tmp_path: Path) -> None:
    """demo_models.resnet_unet takes a grey small_resnet classifier as its pretrained RGB backbone."""
    classifier = build_model("python", {"factory": "demo_models:small_resnet", "num_classes": 4, "width": 4}, RECIPES)
    torch.save(classifier.state_dict(), tmp_path / "cls.pt")
    unet_cfg = {"factory": "demo_models:resnet_unet", "num_classes": 3, "width": 4, "blocks": 2}
    unet = build_model("python", unet_cfg, RECIPES)
    assert unet(torch.randn(2, 3, 40, 48)).shape == (2, 3, 40, 48)
    encoder = [k for k in unet.state_dict() if not k.startswith(("decoder.", "head."))]
    assert init_from(unet, tmp_path / "cls.pt") == len(encoder)
    torch.testing.assert_close(unet.layer4.state_dict(), classifier.layer4.state_dict())
    torch.testing.assert_close(unet.conv1.weight, classifier.conv1.weight.repeat(1, 3, 1, 1) / 3)


def test_smp_encoder_starts_from_a_timm_classifier(tmp_path: Path) -> None:
    """A timm ResNet classifier's tensors load into an smp network's ``encoder.`` (and under ``0.``)."""
    classifier = build_model("timm", {"name": "resnet18", "num_classes": 4}, RECIPES)
    torch.save(classifier.state_dict(), tmp_path / "cls.pt")
    unet = build_model("smp", {"arch": "unet", "encoder": "resnet18", "classes": 2}, RECIPES)
    encoder = [k for k in unet.state_dict() if k.startswith("encoder.")]
    assert init_from(unet, tmp_path / "cls.pt") == len(encoder)
    torch.testing.assert_close(unet.encoder.layer4.state_dict(), classifier.layer4.state_dict())
    wrapped = torch.nn.Sequential(unet, torch.nn.Identity())
    assert init_from(wrapped, tmp_path / "cls.pt") == len(encoder)


def test_unet_with_a_stride_2_stem_answers_at_the_input_size() -> None:
    """stem_stride=2 runs the encoder at half resolution; the logits come back at the input's size."""
    cfg = {"factory": "demo_models:resnet_unet", "num_classes": 3, "width": 4, "stem_stride": 2}
    unet = build_model("python", cfg, RECIPES)
    assert unet.conv1.stride == (2, 2)
    stages = []
    unet.layer1.register_forward_hook(lambda m, i, o: stages.append(o.shape[-2:]))
    assert unet(torch.randn(2, 3, 40, 48)).shape == (2, 3, 40, 48)
    assert stages == [(20, 24)]


def test_the_epoch_line_names_the_tasks_per_class_metric() -> None:
    """A classifier's worst class is named by its recall, a segmenter's by its IoU."""
    per_class = {"a": {"recall": 0.9, "iou": 0.2}, "b": {"recall": 0.5, "iou": 0.4}}
    cls = val_summary({"top1": 0.8, "per_class": per_class}, get_task("classification"))
    assert cls.endswith("worst class recall 0.5000 (b)")
    seg = val_summary({"miou": 0.3, "per_class": per_class}, get_task("segmentation"))
    assert seg.endswith("worst class IoU 0.2000 (a)")
