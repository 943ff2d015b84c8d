"""The shipped quickstart teachers (zoo_weights/): the files match their MANIFEST and each teacher
still does its job on the first val scenes of the demo world (same seed as `make data`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from get_data import DEBIAN_SOURCE, ensure_fashion_mnist, is_present
from make_scenes import make_scenes
from train_teacher import evaluate_saved, load_zoo
from zoo_manifest import check

from amalgam.config.recipe import SourceConfig

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT / "zoo_weights"
ZOO = ROOT / "recipes" / "zoo" / "quickstart.yaml"
VAL_SCENES = 200
# Measured on these weights and the first VAL_SCENES val scenes / first 2000 test items
# (`python tools/train_teacher.py recipes/zoo/quickstart.yaml --all --evaluate` scores all of them).
EXPECTED = {
    "cls-items": ("top1", 0.9260),
    "items-backbone": ("top1", 0.8315),
    "seg-scenes": ("miou", 0.6538),
    "depth": ("abs_rel", 0.0573),
}
# No class of the segmenter may fall below this IoU on the subset (Shirt, the hardest, is at 0.31).
MIN_CLASS_IOU = 0.25


def test_shipped_files_match_the_manifest() -> None:
    assert check(WEIGHTS) == []
    assert "train_teacher.py recipes/zoo/quickstart.yaml --all --force" in (WEIGHTS / "MANIFEST").read_text()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, Path]:
    """A Fashion-MNIST root and a folder of the first val scenes."""
    own = ROOT / "data" / "fashion"
    root = own if is_present(own) else tmp_path_factory.mktemp("fashion")
    if not is_present(root):
        if not DEBIAN_SOURCE.is_dir():
            pytest.skip(f"needs Fashion-MNIST ({DEBIAN_SOURCE} or data/fashion; `make data`)")
        ensure_fashion_mnist(root)
    out = tmp_path_factory.mktemp("scenes")
    make_scenes(root, out, "val", VAL_SCENES, 64, seed=0)
    return root, out / "val"


@pytest.mark.parametrize("name", list(EXPECTED))
def test_shipped_teacher_still_does_its_job(name: str, world) -> None:
    fashion, scenes = world
    zoo = load_zoo(ZOO)
    cfg = zoo.teachers[name]
    if cfg.task == "classification":
        val = SourceConfig(type="torchvision", name="FashionMNIST", root=fashion, split="test", limit=2000)
    else:
        val = SourceConfig(type="dense", path=scenes)
    zoo.teachers[name] = cfg.model_copy(update={"train": cfg.train.model_copy(update={"val": val})})
    metrics = evaluate_saved(zoo, name, ZOO.parent, log=lambda line: None)
    metric, expected = EXPECTED[name]
    assert metrics[metric] == pytest.approx(expected, abs=0.01)
    if "per_class" in metrics and cfg.task == "segmentation":
        worst = min(metrics["per_class"].items(), key=lambda kv: kv[1]["iou"])
        assert worst[1]["iou"] >= MIN_CLASS_IOU, worst
