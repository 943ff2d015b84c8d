"""tools/fashion_scenes_stages.py: fixed weights read from a run, stages skipped or resumed."""

from __future__ import annotations

import math

import fashion_scenes_stages as stages
import pytest
import torch
import yaml


def test_learned_weights_are_exp_minus_s_of_the_run(built_run):
    weights = yaml.safe_load(stages.learned_weights(built_run))
    state = torch.load(built_run / "checkpoint.pt", map_location="cpu", weights_only=False)["objective"]
    assert set(weights) == {"cls", "seg-a", "seg-b", "depth"}
    for name, value in weights.items():
        assert value == pytest.approx(math.exp(-float(state[f"log_vars.{name}"])), abs=0.006)


def test_a_done_stage_is_skipped_and_an_interrupted_one_resumed(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(stages.amalgam, "build", lambda recipe, overrides, **kw: calls.append((overrides, kw)))
    done, cut, fresh = tmp_path / "done", tmp_path / "cut", tmp_path / "fresh"
    for folder in (done, cut):
        folder.mkdir()
        (folder / "checkpoint.pt").write_bytes(b"")
    (done / "student.pt").write_bytes(b"")
    for folder in (done, cut, fresh):
        stages.build(folder, ["train.epochs=4"])
    assert "done: done, skipped" in capsys.readouterr().out
    assert [kw["output"] for _, kw in calls] == [cut, fresh]
    assert calls[0][1]["resume"] and not calls[1][1]["resume"]
    assert calls[1][0] == ["train.epochs=4"]

    def fail(recipe, overrides, **kw):
        raise stages.AmalgamError("train.epoch: unknown key")

    monkeypatch.setattr(stages.amalgam, "build", fail)
    with pytest.raises(SystemExit, match="fresh: amalgam build failed: train.epoch: unknown key"):
        stages.build(fresh, [])
