"""Peer-learning recipes (DML, ONE, KDCL) through the CLI on the tiny world's labelled items."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from torch import nn
from world import ITEM_CLASSES

from amalgam.cli import main
from amalgam.config.recipe import load_recipe
from amalgam.errors import AmalgamError, RecipeError
from amalgam.training.peer_training import split_model


def peer_recipe(world, tmp_path, **peers) -> "Path":  # noqa: F821
    raw = yaml.safe_load(world.read_text())
    del raw["teachers"]
    raw.pop("amalgamation", None)
    raw["data"]["sources"] = {"items": raw["data"]["sources"]["items"]}
    raw["data"]["eval"] = {"items-val": raw["data"]["eval"]["items-val"]}
    raw["peers"] = {
        "strategy": "dml",
        "count": 2,
        "model": {"from": "python", "factory": "models:tiny_cnn", "num_classes": 3, "in_channels": 1},
        "input": {"size": [28, 28], "channels": 1, "mean": [0.5], "std": [0.25]},
        "labels": ITEM_CLASSES,
        "source": "items",
        "eval": "items-val",
        "split_at": "3",
        **peers,
    }
    raw["train"] = {"epochs": 2, "batch_size": 4, "lr": 1e-2, "samples_per_epoch": 8}
    path = world.parent / f"peers-{tmp_path.name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("strategy, count", [("dml", 2), ("one", 3), ("kdcl", 2)])
def test_peer_recipes_build_through_the_cli(world, tmp_path, strategy, count):
    recipe = peer_recipe(world, tmp_path, strategy=strategy, count=count)
    out = tmp_path / "run"
    assert main(["build", str(recipe), "--output", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["strategy"] == strategy and len(report["peers"]) == count
    assert all(0.0 <= p["top1"] <= 1.0 for p in report["peers"]) and 0.0 <= report["ensemble_top1"] <= 1.0
    assert report["train"]["epochs"] == 2
    assert (out / "peers.pt").exists() and (out / "checkpoint.pt").exists()
    state = torch.load(out / "peers.pt", weights_only=True)
    # every peer (or branch) was trained: none is still at its shared initial value
    if strategy == "one":
        assert any(k.startswith("branches.2.") for k in state) and any(k.startswith("gate.") for k in state)
    else:
        assert not torch.equal(state["peers.0.0.weight"], state["peers.1.0.weight"])


def test_peer_recipe_errors(world, tmp_path):
    with pytest.raises(RecipeError, match=r"peers\.strategy"):
        load_recipe(peer_recipe(world, tmp_path, strategy="okddip"))
    with pytest.raises(RecipeError, match=r"peers\.source: unknown source 'scenes'"):
        load_recipe(peer_recipe(world, tmp_path, source="scenes"))
    with pytest.raises(RecipeError, match=r"peers\.count"):
        load_recipe(peer_recipe(world, tmp_path, count=1))
    raw = yaml.safe_load(world.read_text())
    raw["teachers"] = {}
    bad = world.parent / f"none-{tmp_path.name}.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(RecipeError, match="teachers: required"):
        load_recipe(bad)


def test_split_model_names_the_children_and_adds_flatten():
    model = nn.Sequential()
    model.conv = nn.Conv2d(1, 4, 3)
    model.pool = nn.AdaptiveAvgPool2d(1)
    model.fc = nn.Linear(4, 2)
    trunk, head, channels = split_model(model, "pool")
    assert channels == 4 and head(trunk(torch.rand(2, 1, 5, 5))).shape == (2, 2)
    with pytest.raises(AmalgamError, match="no top-level module 'layer4' .*conv, pool, fc"):
        split_model(model, "layer4")


def test_a_resumed_peers_build_ends_where_an_uninterrupted_one_does(world, tmp_path, monkeypatch):
    from amalgam.training import peer_training

    recipe = peer_recipe(world, tmp_path, strategy="dml")
    args = ["build", str(recipe), "--quiet", "--set", "train.workers=0"]
    assert main([*args, "--output", str(tmp_path / "whole")]) == 0
    real_write = peer_training._write_csv

    def stop_after_epoch_1(path, rows):  # as if killed once epoch 1 is saved
        real_write(path, rows)
        raise KeyboardInterrupt

    monkeypatch.setattr(peer_training, "_write_csv", stop_after_epoch_1)
    try:
        main([*args, "--output", str(tmp_path / "cut")])
    except KeyboardInterrupt:
        pass
    monkeypatch.undo()
    assert not (tmp_path / "cut" / "report.json").exists()
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert main([*args, "--output", str(tmp_path / "cut"), "--resume"]) == 0
    whole, cut = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("whole", "cut"))
    assert cut["peers"] == whole["peers"] and cut["ensemble_top1"] == whole["ensemble_top1"]
    losses = [
        [row.split(",")[-1] for row in (tmp_path / d / "train_log.csv").read_text().split()[1:]]
        for d in ("whole", "cut")
    ]
    assert losses[0] == losses[1] and len(losses[0]) == 2


def test_report_and_export_of_a_peers_run_say_it_has_no_student(tmp_path, capsys):
    from amalgam.cli import main

    (tmp_path / "report.json").write_text(json.dumps({"recipe": "p", "strategy": "dml", "peers": []}))
    for verb in ("report", "export"):
        assert main([verb, str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert f"{tmp_path} is a peers run, which writes each peer's top-1" in err, err


def test_a_peer_recipe_under_torchrun_stops_before_every_rank_trains_it_all(world, tmp_path, monkeypatch, capsys):
    # each rank trained the whole run and wrote the same files; only rank 0 held the run lock
    monkeypatch.setenv("WORLD_SIZE", "2")
    out = tmp_path / "run"
    assert main(["build", str(peer_recipe(world, tmp_path)), "--output", str(out), "--quiet"]) == 2
    assert "peers: peer training runs in one process: run amalgam build without torchrun" in capsys.readouterr().err
    assert not out.exists()


def test_a_peers_build_scores_train_max_eval_images_and_says_its_unused_sections(world, tmp_path, capsys):
    # max_eval_images was accepted and every eval image scored; student: and amalgamation: went unsaid
    recipe = peer_recipe(world, tmp_path)
    out = tmp_path / "run"
    sets = ["--set", "train.max_eval_images=2", "--set", "amalgamation.temperature=3"]
    assert main(["build", str(recipe), "--output", str(out), *sets]) == 0
    report = json.loads((out / "report.json").read_text())
    assert all(p["top1"] in (0.0, 0.5, 1.0) for p in report["peers"]), report["peers"]  # of 2 images
    said = capsys.readouterr().out
    assert "student: not used by a peers build" in said and "amalgamation: not used by a peers build" in said


def test_inspect_of_a_peers_recipe_says_its_unused_sections_too(world, tmp_path, capsys):
    recipe = peer_recipe(world, tmp_path)
    assert main(["inspect", str(recipe), "--set", "amalgamation.temperature=3"]) == 0
    said = capsys.readouterr().out
    assert "student: not used by a peers build" in said and "amalgamation: not used by a peers build" in said
