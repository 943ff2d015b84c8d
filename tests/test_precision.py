"""train.precision: what the student's forward trains in, decided per device and said in the log."""

from __future__ import annotations

import pytest
import torch
from world import trainer_for

from amalgam.errors import AmalgamError
from amalgam.training import runtime
from amalgam.training.runtime import autocast_dtype, autocast_for, grad_scaler_for, precision_text

CPU = torch.device("cpu")


@pytest.mark.parametrize("units, expected", [("amx", torch.bfloat16), ("avx512_bf16", None), ("", None)])
def test_auto_on_a_cpu_is_bf16_only_where_the_cpu_has_amx(monkeypatch, units, expected):
    monkeypatch.setattr(runtime, "cpu_bf16_units", lambda: units)
    assert autocast_dtype(CPU, "auto") is expected
    assert ("bf16 autocast" in precision_text(CPU)) is (units == "amx")
    assert precision_text(CPU).startswith("precision: ")
    if units == "avx512_bf16":  # measured on AMX only: bf16 there is the user's call, and allowed
        assert autocast_dtype(CPU, "bf16") is torch.bfloat16
        assert "only AVX512-BF16" in precision_text(CPU)


def test_the_units_are_read_from_torch_cpu(monkeypatch):
    real = runtime.cpu_bf16_units.host.__wrapped__  # conftest's pin keeps the detection; no per-process cache
    for amx, avx, expected in ((True, True, "amx"), (False, True, "avx512_bf16"), (False, False, "")):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx: v, raising=False)
        assert real() == expected


@pytest.mark.parametrize("capability, auto", [((8, 0), torch.bfloat16), ((7, 5), torch.float16)])
def test_auto_on_cuda_is_bf16_from_ampere_and_fp16_before(monkeypatch, capability, auto):
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert autocast_dtype(cuda, "auto") is auto
    assert autocast_dtype(cuda, "fp16") is torch.float16
    assert "mixed precision on CUDA" in precision_text(cuda)
    if auto is torch.float16:  # emulated bf16 is refused, and fp16 gets its loss scaler
        with pytest.raises(AmalgamError, match="no native bf16"):
            autocast_dtype(cuda, "bf16")
        assert runtime.autocast_dtype(cuda, "auto") is torch.float16


def test_fp32_is_never_autocast(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_bf16_units", lambda: "amx")
    assert autocast_dtype(CPU, "fp32") is None
    assert not torch.is_autocast_enabled("cpu")
    with autocast_for(CPU, "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    assert precision_text(CPU, "fp32") == "precision: fp32 (train.precision: fp32)"


def test_bf16_autocasts_a_cpu_with_units_and_keeps_no_loss_scaler(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_bf16_units", lambda: "amx")
    layer = torch.nn.Linear(4, 4)
    with autocast_for(CPU, "bf16"):
        out = layer(torch.randn(2, 4))
    assert out.dtype is torch.bfloat16 and layer.weight.dtype is torch.float32
    assert not grad_scaler_for(CPU, "bf16").is_enabled()


def test_inspect_says_a_precision_this_machine_cannot_compute_instead_of_failing(world, capsys, monkeypatch):
    from amalgam.cli import main

    monkeypatch.setattr(runtime, "cpu_bf16_units", lambda: "")
    assert main(["inspect", str(world), "--set", "train.precision=bf16", "--set", "device=cpu"]) == 0
    said = capsys.readouterr().out  # said as a warning: a build here stops there
    assert "warning: precision: train.precision: this CPU has no bf16 units" in said and "build on this machine" in said


@pytest.mark.parametrize(
    "precision, units, said",
    [
        ("fp16", True, "fp16 autocast is for CUDA"),
        ("bf16", False, "no bf16 units"),
        ("fp8", True, "expected auto, fp32, bf16, fp16"),
    ],
)
def test_what_the_device_cannot_compute_is_refused_not_emulated(monkeypatch, precision, units, said):
    monkeypatch.setattr(runtime, "cpu_bf16_units", lambda: units)
    with pytest.raises(AmalgamError, match=said):
        autocast_dtype(CPU, precision)


def test_the_build_says_and_reports_its_precision(world, tmp_path, capsys):
    import json

    from amalgam.cli import main

    run = tmp_path / "run"
    args = ["--set", "train.epochs=1", "--set", "train.samples_per_epoch=8", "--set", "train.batch_size=4"]
    args += ["--set", "train.precision=fp32"]
    assert main(["inspect", str(world), *args]) == 0
    said = capsys.readouterr().out
    assert "precision: fp32 (train.precision: fp32)" in said
    threads = torch.get_num_threads()
    assert f"device: cpu, {threads} CPU thread{'s' * (threads != 1)} (device: cpu;" in said  # the world's device
    assert main(["build", str(world), "--output", str(run), *args]) == 0
    assert "precision: fp32 (train.precision: fp32)" in capsys.readouterr().out
    assert json.loads((run / "report.json").read_text())["train"]["precision"] == "fp32"
    assert "images/s, fp32." in (run / "report.md").read_text()


def test_a_build_trains_in_bf16_on_a_cpu_with_bf16_units(world, tmp_path, monkeypatch):
    """Where the CPU has no units, bf16 is emulated (slow) but computes the same: the path runs everywhere."""
    import json

    from amalgam.cli import main

    monkeypatch.setattr(runtime, "cpu_bf16_units", lambda: "amx")
    run = tmp_path / "run"
    args = ["--set", "train.epochs=1", "--set", "train.samples_per_epoch=8", "--set", "train.batch_size=4"]
    assert main(["build", str(world), "--output", str(run), *args, "--set", "train.precision=bf16"]) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["train"]["precision"] == "bf16"
    assert all(t["student_value"] == t["student_value"] for t in report["tasks"])  # no NaN from bf16 losses
    saved = torch.load(run / "student.pt", map_location="cpu", weights_only=False)
    state = saved["state_dict"] if "state_dict" in saved else saved
    assert all(v.dtype != torch.bfloat16 for v in state.values() if torch.is_tensor(v))  # weights stay fp32


def _trainer(world, tmp_path, precision: str, log):
    return trainer_for(world, tmp_path, [f"train.precision={precision}"], log)


def test_a_resume_in_another_precision_is_said_and_reported_mixed(world, tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "cpu_bf16_units", lambda: "amx")  # a run moved to a machine with AMX
    first = _trainer(world, tmp_path / "a", "fp32", lambda m: None)
    first.callbacks.clear()
    first.train_one_epoch(1)
    state = first.state_dict()
    assert state["precision"] == "fp32"
    said = []
    second = _trainer(world, tmp_path / "b", "auto", said.append)
    second.load_state_dict(state)
    assert "precision: this run trained in fp32 before the resume and continues in bf16" in said
    assert second.result.precision == "mixed"
    # a checkpoint from before the key trained in fp32 on a CPU: resuming it in fp32 says nothing
    del state["precision"]
    said.clear()
    third = _trainer(world, tmp_path / "c", "fp32", said.append)
    third.load_state_dict(state)
    assert third.result.precision == "fp32" and not [m for m in said if "before the resume" in m]


def test_a_resume_of_a_run_that_trained_on_another_resize_says_so(world, tmp_path):
    # a checkpoint from before the student's image was resized as the teachers' views are (8 bits,
    # antialiased) was resumed without a word: its rest trained on other pixels
    from amalgam.data.views import RESIZE_VERSION

    first = _trainer(world, tmp_path / "a", "fp32", lambda m: None)
    first.callbacks.clear()
    first.train_one_epoch(1)
    state = first.state_dict()
    assert state["resize_version"] == RESIZE_VERSION
    said: list[str] = []
    _trainer(world, tmp_path / "b", "fp32", said.append).load_state_dict(state)
    assert not [m for m in said if m.startswith("resize:")]
    del state["resize_version"]  # a checkpoint from before the key: its resize is not known, not guessed
    _trainer(world, tmp_path / "c", "fp32", said.append).load_state_dict(state)
    (line,) = [m for m in said if m.startswith("resize:")]
    assert line.startswith("resize: the epochs before the resume trained on a resize the checkpoint does not record")
    assert f"the rest trains on version {RESIZE_VERSION} (bilinear, antialiased when shrinking" in line
