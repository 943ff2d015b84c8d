"""Faults a demanding user meets (issue #17): each numbered item of the issue, tried on purpose.

Every test here failed on the code before the fix. The tiny world (tests/world.py) keeps each
one to a second or two; builds use 1 epoch of 8 images unless a test needs more.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from amalgam.cli import main

TINY = ["--set", "train.epochs=1", "--set", "train.samples_per_epoch=8", "--quiet"]


def one_error_line(capsys) -> str:
    """The single ``amalgam: error:`` line the last command printed (fails on a traceback or more lines)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("amalgam: error: "), "\n".join(err[-20:])
    return err[0][len("amalgam: error: ") :]


def edit_recipe(path: Path, edit) -> None:
    raw = yaml.safe_load(path.read_text())
    edit(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


# 10. what a recipe may execute -------------------------------------------------------------------


def test_a_factory_outside_the_recipe_folder_is_refused_before_it_runs(fresh_world, tmp_path, capsys):
    marker = tmp_path / "ran"

    def evil(raw):
        raw["teachers"]["cls"]["model"] = {"from": "python", "factory": "os:system", "command": f"touch {marker}"}

    edit_recipe(fresh_world, evil)
    assert main(["inspect", str(fresh_world), "--no-data"]) == 2
    line = one_error_line(capsys)
    assert line.startswith("teachers.cls.model.factory: module 'os' is not in the recipe's folder"), line
    assert not marker.exists()


def test_only_modules_beside_the_recipe_plugins_or_allowed_ones_run(fresh_world, tmp_path, monkeypatch, capsys):
    from amalgam.teachers.model_sources import build_model

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "faults_outside.py").write_text("from torch import nn\ndef make():\n    return nn.Linear(2, 2)\n")
    monkeypatch.syspath_prepend(str(elsewhere))  # importable, but not from the recipe's folder
    edit_recipe(fresh_world, lambda raw: raw["teachers"]["cls"]["model"].update(factory="faults_outside:make"))
    assert main(["inspect", str(fresh_world), "--no-data"]) == 2
    assert "module 'faults_outside' is not in the recipe's folder" in one_error_line(capsys)
    monkeypatch.setenv("AMALGAM_ALLOW_MODULES", "numpy, faults_outside")
    model = build_model("python", {"factory": "faults_outside:make"}, fresh_world.parent)
    assert model.in_features == 2


def test_readme_says_a_recipe_naming_a_factory_is_code():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "a recipe that names a factory is code" in readme.lower()


# 11. YAML alias bombs -------------------------------------------------------------------------------


def alias_bomb(levels: int = 9) -> str:
    """A flow list of anchored lists, each holding the previous one 9 times: 9^levels strings expanded."""
    items = ["&a0 [x, x, x, x, x, x, x, x, x]"]
    items += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "[" + ", ".join(items) + "]"


def test_an_alias_bomb_is_refused_quickly(fresh_world, capsys):
    edit_recipe(fresh_world, lambda raw: raw["teachers"]["cls"]["model"].update(bomb="BOMB"))
    fresh_world.write_text(fresh_world.read_text().replace("BOMB", alias_bomb()))  # 9^9 = 387M strings
    start = time.perf_counter()
    assert main(["inspect", str(fresh_world), "--no-data"]) == 2
    assert time.perf_counter() - start < 5
    assert "expands to more than 100,000 nodes" in one_error_line(capsys)


def test_a_bomb_in_an_override_and_a_recursive_alias_are_refused(fresh_world, capsys):
    assert main(["inspect", str(fresh_world), "--no-data", "--set", f"train.bomb={alias_bomb(7)}"]) == 2
    assert "expands to more than" in one_error_line(capsys)
    fresh_world.write_text(fresh_world.read_text() + "loop: &loop [*loop]\n")
    assert main(["inspect", str(fresh_world), "--no-data"]) == 2
    assert "recursive YAML alias" in one_error_line(capsys)


# 9. one line instead of a traceback --------------------------------------------------------------


def test_a_factory_returning_a_non_module_gives_one_line(fresh_world, capsys):
    models = fresh_world.parent / "models.py"
    models.write_text(models.read_text() + "\n\ndef not_a_model(num_classes, in_channels=3):\n    return 'resnet'\n")
    edit_recipe(fresh_world, lambda raw: raw["teachers"]["cls"]["model"].update(factory="models:not_a_model"))
    assert main(["inspect", str(fresh_world), "--no-data"]) == 2
    line = one_error_line(capsys)
    assert "'models:not_a_model' returned a str, not a torch.nn.Module" in line, line
