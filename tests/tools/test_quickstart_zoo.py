"""The quickstart zoo: the teachers shipped in zoo_weights/ match their MANIFEST and score as
measured on the first val scenes of the demo world (same seed as `make data`); teachers generated
into zoo/quickstart by `tools/train_teacher.py` (the MANIFEST's command) do their jobs."""

from __future__ import annotations

from pathlib import Path

import pytest
from get_data import DEBIAN_SOURCE, ensure_fashion_mnist, is_present
from make_scenes import make_scenes
from train_teacher import ZooTeacher, artefact_path, evaluate_saved, load_zoo
from zoo_manifest import check

from amalgam.config.recipe import SourceConfig
from amalgam.io import file_digest

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT / "zoo_weights"
ZOO = ROOT / "recipes" / "zoo" / "quickstart.yaml"
VAL_SCENES = 200
# The shipped files scored on the first VAL_SCENES val scenes / first 2000 test items (all of them:
# `python tools/train_teacher.py recipes/zoo/quickstart.yaml --all --evaluate` after `make zoo`).
SHIPPED = {
    "cls-items": ("top1", 0.9260),
    "items-backbone": ("top1", 0.8315),
    "items-resnet": ("top1", 0.9210),  # [24, 48, 96, 128] since stop 43 (0.9175 at [16, 32, 64, 128])
    "seg-scenes": ("miou", 0.6538),
    "depth": ("abs_rel", 0.0573),
}
# The competence a generated one must show there (issue #15 B's targets).
FLOORS = {"cls-items": ("top1", 0.90), "items-backbone": ("top1", 0.80), "items-resnet": ("top1", 0.88)}
FLOORS["seg-scenes"] = ("miou", 0.60)
CEILINGS = {"depth": ("abs_rel", 0.10)}
# Shirt, the hardest class, reached 0.29-0.31 (under issue #15's 0.35): no class may fall below this.
MIN_CLASS_IOU = 0.25


def test_shipped_files_match_the_manifest() -> None:
    assert check(WEIGHTS) == []
    manifest = (WEIGHTS / "MANIFEST").read_text()
    assert "OMP_NUM_THREADS=1 python tools/train_teacher.py recipes/zoo/quickstart.yaml --all --force" in manifest
    assert sorted(p.name for p in (WEIGHTS / "quickstart").iterdir()) == sorted(
        artefact_path(cfg, ZOO.parent).name for cfg in load_zoo(ZOO).teachers.values()
    )


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


def _score(name: str, world, path: Path) -> dict:
    """The zoo teacher ``name``, read from ``path``, scored on the fixture's val subset."""
    fashion, scenes = world
    zoo = load_zoo(ZOO)
    cfg: ZooTeacher = zoo.teachers[name]
    if cfg.task == "classification":
        val = SourceConfig(type="torchvision", name="FashionMNIST", root=fashion, split="test", limit=2000)
    else:
        val = SourceConfig(type="dense", path=scenes)
    update = {"train": cfg.train.model_copy(update={"val": val})}
    if cfg.model.source == "torchscript":
        update["model"] = cfg.model.model_copy(update={"path": str(path)})
    else:
        update["save"] = path
    zoo.teachers[name] = cfg.model_copy(update=update)
    return evaluate_saved(zoo, name, ZOO.parent, log=lambda line: None)


def _worst_class(metrics: dict) -> tuple[str, dict]:
    return min(metrics["per_class"].items(), key=lambda kv: kv[1]["iou"])


@pytest.mark.parametrize("name", list(SHIPPED))
def test_each_shipped_teacher_scores_as_measured(name: str, world) -> None:
    metrics = _score(name, world, WEIGHTS / "quickstart" / artefact_path(load_zoo(ZOO).teachers[name], ZOO.parent).name)
    metric, expected = SHIPPED[name]
    assert metrics[metric] == pytest.approx(expected, abs=0.01), (metric, metrics[metric])
    if load_zoo(ZOO).teachers[name].task == "segmentation":
        assert _worst_class(metrics)[1]["iou"] >= MIN_CLASS_IOU, _worst_class(metrics)


@pytest.mark.parametrize("name", [*FLOORS, *CEILINGS])
def test_each_generated_teacher_does_its_job(name: str, world) -> None:
    path = artefact_path(load_zoo(ZOO).teachers[name], ZOO.parent)
    if not path.is_file():
        pytest.skip(f"{name} not in zoo/quickstart: `make zoo` installs the shipped one or trains it")
    if file_digest(path) == file_digest(WEIGHTS / "quickstart" / path.name):
        pytest.skip(f"{name} is the shipped file, scored by test_each_shipped_teacher_scores_as_measured")
    metrics = _score(name, world, path)
    if name in FLOORS:
        metric, floor = FLOORS[name]
        assert metrics[metric] >= floor, (metric, metrics[metric])
    else:
        metric, ceiling = CEILINGS[name]
        assert metrics[metric] <= ceiling, (metric, metrics[metric])
    if "per_class" in metrics and load_zoo(ZOO).teachers[name].task == "segmentation":
        assert _worst_class(metrics)[1]["iou"] >= MIN_CLASS_IOU, _worst_class(metrics)
