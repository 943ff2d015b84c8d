"""train.precision: what the student's forward trains in, decided per device and said in the log."""

from __future__ import annotations

import pytest
import torch

from amalgam.errors import AmalgamError
from amalgam.training import runtime
from amalgam.training.runtime import autocast_dtype, autocast_for, grad_scaler_for, precision_text

CPU = torch.device("cpu")


@pytest.mark.parametrize("units, expected", [(True, torch.bfloat16), (False, None)])
def test_auto_on_a_cpu_is_bf16_only_where_the_cpu_has_bf16_units(monkeypatch, units, expected):
    monkeypatch.setattr(runtime, "cpu_computes_bf16", lambda: units)
    assert autocast_dtype(CPU, "auto") is expected
    assert ("bf16 autocast" in precision_text(CPU)) is units
    assert precision_text(CPU).startswith("precision: ")


def test_fp32_is_never_autocast(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_computes_bf16", lambda: True)
    assert autocast_dtype(CPU, "fp32") is None
    assert not torch.is_autocast_enabled("cpu")
    with autocast_for(CPU, "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    assert precision_text(CPU, "fp32") == "precision: fp32 (train.precision: fp32)"


def test_bf16_autocasts_a_cpu_with_units_and_keeps_no_loss_scaler(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_computes_bf16", lambda: True)
    layer = torch.nn.Linear(4, 4)
    with autocast_for(CPU, "bf16"):
        out = layer(torch.randn(2, 4))
    assert out.dtype is torch.bfloat16 and layer.weight.dtype is torch.float32
    assert not grad_scaler_for(CPU, "bf16").is_enabled()


def test_inspect_says_a_precision_this_machine_cannot_compute_instead_of_failing(world, capsys, monkeypatch):
    from amalgam.cli import main

    monkeypatch.setattr(runtime, "cpu_computes_bf16", lambda: False)
    assert main(["inspect", str(world), "--set", "train.precision=bf16", "--set", "device=cpu"]) == 0
    assert "precision: train.precision: this CPU has no bf16 units" in capsys.readouterr().out


@pytest.mark.parametrize(
    "precision, units, said",
    [
        ("fp16", True, "fp16 autocast is for CUDA"),
        ("bf16", False, "no bf16 units"),
        ("fp8", True, "expected auto, fp32, bf16, fp16"),
    ],
)
def test_what_the_device_cannot_compute_is_refused_not_emulated(monkeypatch, precision, units, said):
    monkeypatch.setattr(runtime, "cpu_computes_bf16", lambda: units)
    with pytest.raises(AmalgamError, match=said):
        autocast_dtype(CPU, precision)


def test_the_build_says_and_reports_its_precision(world, tmp_path, capsys):
    import json

    from amalgam.cli import main

    run = tmp_path / "run"
    args = ["--set", "train.epochs=1", "--set", "train.samples_per_epoch=8", "--set", "train.batch_size=4"]
    args += ["--set", "train.precision=fp32"]
    assert main(["inspect", str(world), *args]) == 0
    assert "precision: fp32 (train.precision: fp32)" in capsys.readouterr().out
    assert main(["build", str(world), "--output", str(run), *args]) == 0
    assert "precision: fp32 (train.precision: fp32)" in capsys.readouterr().out
    assert json.loads((run / "report.json").read_text())["train"]["precision"] == "fp32"
    assert "images/s, fp32." in (run / "report.md").read_text()


@pytest.mark.skipif(not runtime.cpu_computes_bf16(), reason="this CPU has no bf16 units")
def test_a_build_trains_in_bf16_on_a_cpu_with_bf16_units(world, tmp_path):
    import json

    from amalgam.cli import main

    run = tmp_path / "run"
    args = ["--set", "train.epochs=1", "--set", "train.samples_per_epoch=8", "--set", "train.batch_size=4"]
    assert main(["build", str(world), "--output", str(run), *args, "--set", "train.precision=bf16"]) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["train"]["precision"] == "bf16"
    assert all(t["student_value"] == t["student_value"] for t in report["tasks"])  # no NaN from bf16 losses
    saved = torch.load(run / "student.pt", map_location="cpu", weights_only=False)
    state = saved["state_dict"] if "state_dict" in saved else saved
    assert all(v.dtype != torch.bfloat16 for v in state.values() if torch.is_tensor(v))  # weights stay fp32
