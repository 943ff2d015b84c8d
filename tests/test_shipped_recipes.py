"""Every recipe in recipes/ whose teachers ship with the repository resolves (``amalgam inspect``).

A change to a base recipe (``base:``) or to the shipped weights must not leave a derived recipe
broken: e.g. ``trees.yaml`` inherits the quickstart's student.encoder_weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from amalgam.cli import main

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
SHIPPED = ["quickstart.yaml", "trees.yaml"]  # teachers in zoo_weights/ (the others train theirs into zoo/)


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_recipe_resolves(name: str, capsys) -> None:
    assert main(["inspect", str(RECIPES / name), "--no-data", "--quiet"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "encoder weights (student.encoder_weights): 170 encoder tensors" in out


def test_the_shipped_list_is_every_recipe_on_zoo_weights() -> None:
    def on_zoo_weights(path: Path) -> bool:
        raw = yaml.safe_load(path.read_text())
        text = path.read_text()
        return "zoo_weights/" in text or raw.get("base") in SHIPPED

    assert sorted(p.name for p in RECIPES.glob("*.yaml") if on_zoo_weights(p)) == sorted(SHIPPED)
