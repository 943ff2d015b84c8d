"""amalgam export: TorchScript / ONNX files that give the student's outputs, whole or per task."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from amalgam.cli import main
from amalgam.io import file_digest
from amalgam.students.serialize import load_student


def test_torchscript_whole_student_matches(built_run, capsys):
    assert main(["export", str(built_run), "--format", "torchscript"]) == 0
    out = capsys.readouterr().out
    assert "parity on 3 random images: max diff" in out
    path = built_run / "student.ts"
    meta = json.loads((built_run / "student.ts.json").read_text())
    tasks = [o["task"] for o in meta["outputs"]]
    student, spaces = load_student(built_run / "student.pt")
    assert tasks == list(spaces)
    # the .json says what each output is, and how a grey image is given
    assert meta["input"]["grey"].startswith("a grey image must be repeated over the 3 channels")
    # how an image becomes the input: a deployer applying ImageNet's mean/std or 0-255 values got garbage
    assert meta["input"]["normalisation"].startswith("none outside: feed RGB floats in [0, 1]")
    assert meta["input"]["resize"].startswith(
        "stretch the whole image to the input's height and width, bilinear, antialiased when shrinking"
    )
    assert "resize every image to it, as in training" in meta["input"]["sizes"]
    cls, seg, depth = meta["outputs"]
    assert cls["labels"] == list(spaces["classification"].names) and cls["shape"] == ["batch", 2]
    assert cls["meaning"].startswith("classification logits [batch, 2] over the labels listed, in their order")
    assert seg["meaning"].startswith("segmentation logits [batch, 4, 32, 32] over the labels listed")
    assert seg["meaning"].endswith(", at the input's height and width")
    assert depth["meaning"].startswith("depth [batch, 1, 32, 32] in metres, as the student was trained")
    assert depth["teachers"] == [{"teacher": "depth", "output": "metric"}]  # how each teacher's answer was read
    assert {t["output"] for t in seg["teachers"]} == {"logits"}
    x = torch.rand(2, 3, 32, 32)
    exported = torch.jit.load(str(path))(x)
    with torch.no_grad():
        want = student(x)
    for name, got in zip(tasks, exported):
        torch.testing.assert_close(got, want[name], atol=1e-4, rtol=1e-4)


def test_one_task_path_only(built_run, tmp_path):
    path = tmp_path / "seg.ts"
    assert main(["export", str(built_run), "--task", "segmentation", "--output", str(path), "--quiet"]) == 0
    student, _ = load_student(built_run / "student.pt")
    x = torch.rand(1, 3, 32, 32)
    (got,) = torch.jit.load(str(path))(x)
    with torch.no_grad():
        torch.testing.assert_close(got, student(x)["segmentation"], atol=1e-4, rtol=1e-4)
    # the depth branch is not in the file: fewer parameters than the whole student
    whole = sum(p.numel() for p in student.parameters())
    assert sum(p.numel() for p in torch.jit.load(str(path)).parameters()) < whole


def test_export_errors(built_run, tmp_path, capsys):
    assert main(["export", str(built_run), "--task", "normals"]) == 2
    assert "--task: the student has no task 'normals' (it has:" in capsys.readouterr().err
    assert main(["export", str(tmp_path)]) == 2
    assert "student file not found" in capsys.readouterr().err
    # a trial: a mistyped run folder was left behind, created empty; a name without suffix crashed in a glob
    assert main(["export", str(tmp_path / "tpyo")]) == 2 and not (tmp_path / "tpyo").exists()
    assert main(["export", str(built_run), "--output", str(tmp_path / "new" / "model")]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(
            "no file suffix and no such folder: end the file's name in .ts, or make the folder first to write"
            " student.ts into it"
        )
    )
    assert not (tmp_path / "new").exists()


def test_export_into_an_existing_folder_writes_the_default_name_there(built_run, tmp_path):
    assert main(["export", str(built_run), "--output", str(tmp_path), "--quiet"]) == 0
    assert (tmp_path / "student.ts").is_file() and (tmp_path / "student.ts.json").is_file()


def test_parity_failure_exits_non_zero_and_keeps_the_previous_export(built_run, tmp_path, capsys, monkeypatch):
    # a trial: the export failing --tolerance had already replaced the checked one, and the exit code said so late
    from amalgam.evaluation import export as export_module

    path = tmp_path / "s.ts"
    assert main(["export", str(built_run), "--output", str(path), "--quiet"]) == 0
    before, meta = path.read_bytes(), Path(str(path) + ".json").read_text()
    monkeypatch.setattr(export_module, "parity", lambda module, run, images: 0.5)
    assert main(["export", str(built_run), "--output", str(path), "--tolerance", "1e-4"]) == 1
    out, err = capsys.readouterr()
    assert f"{path} differs from the PyTorch student by 5.00e-01 > 0.0001: not written" in err
    assert "wrote" not in out and "replaced" not in out  # a trial read "wrote" and "replacing it" before the refusal
    assert path.read_bytes() == before and Path(str(path) + ".json").read_text() == meta
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.ts", "s.ts.json"]  # no partial file left
    assert main(["export", str(built_run), "--output", str(path), "--tolerance", "-1"]) == 2
    assert "--tolerance: a max difference is 0 or more, got -1.0" in capsys.readouterr().err


def test_a_tolerance_asked_where_parity_cannot_be_checked_is_refused(tmp_path):
    from amalgam.errors import AmalgamError
    from amalgam.evaluation.export import _within

    _within(None, None, tmp_path / "s.onnx")  # not asked: exported unchecked, as the log says
    with pytest.raises(AmalgamError, match=r"parity cannot be checked here \(onnxruntime is not installed"):
        _within(None, 1e-9, tmp_path / "s.onnx")


def test_the_json_names_the_student_file_it_was_exported_from(built_run, tmp_path):
    # a stale export beside a rebuilt run could not be told apart: its .json named no student
    path = tmp_path / "s.ts"
    assert main(["export", str(built_run), "--output", str(path), "--quiet"]) == 0
    meta = json.loads(Path(str(path) + ".json").read_text())
    student = built_run / "student.pt"
    assert meta["student"] == {"file": str(student.resolve()), "sha256": file_digest(student)}


def test_an_unfinished_run_is_told_to_resume(tmp_path, capsys):
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    assert main(["export", str(tmp_path)]) == 2
    assert f"{tmp_path} is an unfinished run (a checkpoint.pt, no student.pt): finish it with amalgam build" in (
        capsys.readouterr().err
    )


def test_a_student_taught_only_by_relative_depth_teachers_is_exported_as_relative():
    # a trial's relative-depth student was exported as "depth in metres": read so, 0.32x the truth
    from amalgam.evaluation.export import _output_entry

    shape, size = (2, 1, 32, 32), (32, 32)
    relative = _output_entry("depth", None, shape, size, [{"teacher": "d", "output": "relative"}])
    assert relative["unit"] == "relative"
    assert relative["meaning"].startswith(
        "relative depth [batch, 1, 32, 32], not metres: every teacher of it was relative (output: relative), so it"
        " is known only up to a per-image scale and shift of its inverse (1 / depth)"
    )
    mixed = [{"teacher": "d", "output": "relative"}, {"teacher": "m", "output": "metric"}]
    assert _output_entry("depth", None, shape, size, mixed)["unit"] == "metres"  # a metric teacher gave the scale
    assert _output_entry("depth", None, shape, size, mixed)["meaning"].startswith("depth [batch, 1, 32, 32] in metres")
    assert "unit" not in _output_entry("segmentation", ["a", "b"], (2, 2, 32, 32), size, [])


def test_onnx_export_checked_with_onnxruntime_when_installed(built_run, tmp_path, capsys):
    pytest.importorskip("onnx")
    path = tmp_path / "student.onnx"
    with warnings.catch_warnings(record=True) as seen:  # a trial: a raw TracerWarning alarmed a user
        warnings.simplefilter("always")
        assert main(["export", str(built_run), "--format", "onnx", "--output", str(path)]) == 0
    assert not [w for w in seen if issubclass(w.category, torch.jit.TracerWarning)]
    assert path.stat().st_size > 0
    out = capsys.readouterr().out
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        assert "parity not checked (onnx runtime not installed" in out
    else:
        assert "parity on 3 random images: max diff" in out
        ort = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        student, _ = load_student(built_run / "student.pt")
        x = torch.rand(5, 3, 32, 32)
        got = ort.run(None, {"images": x.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(got[1]), student(x)["segmentation"], atol=1e-4, rtol=1e-4)
        # any size the student takes, not only the traced one (it was fixed at 32x32 before)
        x = torch.rand(2, 3, 96, 64)
        got = ort.run(None, {"images": x.numpy()})
        with torch.no_grad():
            want = student(x)
        assert got[1].shape == (2, 4, 96, 64) and got[2].shape == (2, 1, 96, 64)
        for name, answer in zip(["classification", "segmentation", "depth"], got):
            torch.testing.assert_close(torch.from_numpy(answer), want[name], atol=1e-4, rtol=1e-4)
        assert " at 64x64)" in out_line(out)  # the parity check's second size
        # 0-255 values (image 0) and a normalised image (image 2) read plausible answers without a word:
        # an ONNX graph cannot raise, so their rows come out NaN; the others are untouched
        x = torch.rand(4, 3, 32, 32)
        x[0] *= 255
        x[2] = (x[2] - 0.45) / 0.226
        x[3, 1, 16, 16] = float("nan")  # onnxruntime's min and max passed a NaN that was not first
        got = ort.run(None, {"images": x.numpy()})
        with torch.no_grad():
            want = student(x[1:2].clone())
        for name, answer in zip(["classification", "segmentation", "depth"], got):
            assert np.isnan(answer[[0, 2, 3]]).all() and not np.isnan(answer[1]).any()
            torch.testing.assert_close(torch.from_numpy(answer[1:2]), want[name], atol=1e-4, rtol=1e-4)
        meta = json.loads(Path(str(path) + ".json").read_text())
        assert meta["input"]["checks"].startswith("an image with values outside [-0.5, 1.5]")


def out_line(text: str) -> str:
    return next(line for line in text.splitlines() if "parity on 3 random images" in line)


def test_the_json_says_which_sizes_an_export_takes(built_run, tmp_path, capsys):
    path = tmp_path / "s.ts"
    assert main(["export", str(built_run), "--output", str(path)]) == 0
    meta = json.loads((tmp_path / "s.ts.json").read_text())
    assert meta["input"]["shape"] == ["batch", 3, 32, 32]
    assert meta["input"]["sizes"].startswith("any height and width that are multiples of 32 (nothing is padded);")
    # the same in fields a program reads (contract 4): the prose alone left a deployment to parse English
    assert (meta["input"]["trained_size"], meta["input"]["size_multiple"], meta["input"]["other_sizes"]) == (
        [32, 32],
        32,
        True,
    )
    assert " at 64x64)" in out_line(capsys.readouterr().out)  # parity checked at a second size too
    # the file and its .json are renamed one after the other: the .json names the file it belongs to
    assert meta["file"] == {"name": "s.ts", "sha256": file_digest(path)}


def test_export_refuses_a_suffix_of_another_format(built_run, tmp_path, capsys):
    # a TorchScript zip was written under an .onnx name without a word
    path = tmp_path / "model.onnx"
    assert main(["export", str(built_run), "--format", "torchscript", "--output", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"--output {path}: a .onnx file is onnx, not torchscript: pass --format onnx, or end it in .ts" in err
    assert not path.exists() and not (tmp_path / "model.onnx.json").exists()
    assert main(["export", str(built_run), "--format", "onnx", "--output", str(tmp_path / "model.pt")]) == 2
    assert "a .pt file is torchscript, not onnx" in capsys.readouterr().err


def test_a_student_taking_its_trained_size_only_exports_and_says_so(built_run, tmp_path, capsys, monkeypatch):
    # the second-size check crashed with a raw traceback for a fixed-size student (a ViT encoder)
    from amalgam.evaluation import export as export_module

    monkeypatch.setattr(export_module, "runs_at", lambda module, size: False)
    path = tmp_path / "s.ts"
    assert main(["export", str(built_run), "--output", str(path)]) == 0
    assert "(the student takes 32x32 only)" in capsys.readouterr().out
    meta = json.loads((tmp_path / "s.ts.json").read_text())
    assert meta["input"]["sizes"] == "only 32x32: the student does not run at another size"
    assert (meta["input"]["trained_size"], meta["input"]["size_multiple"], meta["input"]["other_sizes"]) == (
        [32, 32],
        None,
        False,
    )
    assert meta["file"] == {"name": "s.ts", "sha256": file_digest(path)}


def test_runs_at_tells_a_fixed_size_network():
    from amalgam.evaluation.export import runs_at

    class Fixed(torch.nn.Module):  # a ViT's position embeddings take one size
        def forward(self, x):
            if x.shape[-2:] != (32, 32):
                raise RuntimeError("Input height (64) doesn't match model (32).")
            return x.mean()

    assert runs_at(Fixed(), (32, 32)) and not runs_at(Fixed(), (64, 64))


def test_a_file_answering_other_sizes_wrong_is_said_to_take_its_trained_size_only(
    built_run, tmp_path, capsys, monkeypatch
):
    # a trace that baked the size in (MobileViT's unfold): the .json promised any multiple of 32
    from amalgam.evaluation import export as export_module

    diffs = iter([0.0, 0.5, 0.0])  # right at the trained size, wrong at the second; the file again
    monkeypatch.setattr(export_module, "parity", lambda module, run, images: next(diffs))
    path = tmp_path / "s.ts"
    assert main(["export", str(built_run), "--output", str(path)]) == 0  # usable at its size: not a failure
    out = capsys.readouterr().out
    assert "at 64x64 it differs from the student by 5.00e-01: the file takes 32x32 only (its .json says so)" in out
    meta = json.loads((tmp_path / "s.ts.json").read_text())
    why = "the exported file does not answer other sizes as the student does: it differs from the student by 5.00e-01"
    assert meta["input"]["sizes"] == f"only 32x32: {why}"
    assert meta["file"]["sha256"] == file_digest(path)  # of the file saved again at its size


def test_loading_an_export_or_a_run_folder_as_a_student_says_what_it_is(built_run, tmp_path):
    # a run folder read "not found", a TorchScript file got torch's weights_only story, an .onnx "damaged"
    from amalgam.errors import AmalgamError

    with pytest.raises(AmalgamError, match=r"is a folder: pass its student file, .*student\.pt"):
        load_student(built_run)
    scripted = tmp_path / "student.ts"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(scripted))
    said = r"is a TorchScript export, not a student\.pt: load it with torch\.jit\.load"
    with pytest.raises(AmalgamError, match=said):
        load_student(scripted)
    (tmp_path / "student.onnx").write_bytes(b"\x08\x07")
    with pytest.raises(AmalgamError, match=r"is an ONNX export, not a student\.pt: run it with onnxruntime"):
        load_student(tmp_path / "student.onnx")


def test_an_export_over_an_existing_file_says_it_replaces_it(built_run, tmp_path, capsys):
    path = tmp_path / "mine.ts"
    path.write_text("a file of the user's")
    assert main(["export", str(built_run), "--task", "segmentation", "--output", str(path)]) == 0
    assert "it replaced the previous export there (and its .json)" in capsys.readouterr().out
    torch.jit.load(str(path))  # the export, not the user's file


def test_an_onnx_file_that_answers_other_sizes_wrong_is_written_for_its_trained_size(
    built_run, tmp_path, capsys, monkeypatch
):
    # a user trial: its .json said 32x32 only, but the graph declared any height and width and ran 64x64
    # without an error, its classification 2.4e-2 off
    onnx = pytest.importorskip("onnx")
    from amalgam.evaluation import export as export_module

    diffs = iter([0.0, 0.5, 0.0])
    monkeypatch.setattr(export_module, "parity", lambda module, run, images: next(diffs))
    monkeypatch.setattr(export_module.EXPORTERS.get("onnx"), "run", lambda path: lambda x: [])
    path = tmp_path / "s.onnx"
    assert main(["export", str(built_run), "--format", "onnx", "--output", str(path)]) == 0
    (images,) = [i for i in onnx.load(str(path)).graph.input if i.name == "images"]
    dims = [d.dim_value or d.dim_param for d in images.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 32, 32]


def test_the_onnx_graph_declares_each_outputs_channels_and_ties_dense_outputs_to_the_input(built_run, tmp_path):
    # shape inference through the final resize gave segmentation (4) and depth (1) one channel symbol
    onnx = pytest.importorskip("onnx")
    path = tmp_path / "s.onnx"
    assert main(["export", str(built_run), "--format", "onnx", "--output", str(path), "--quiet"]) == 0
    shapes = {
        o.name: [d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim]
        for o in onnx.load(str(path)).graph.output
    }
    assert shapes == {
        "classification": ["batch", 2],
        "segmentation": ["batch", 4, "height", "width"],
        "depth": ["batch", 1, "height", "width"],
    }


@pytest.mark.parametrize(
    "images, said",
    [
        (torch.rand(1, 3, 48, 48), "input 48x48: height and width must be multiples of 32 (trained at 32x32"),
        (torch.rand(1, 3, 32, 32) * 255, "got values in [0, 255]: divide 0-255 values by 255"),
        ((torch.rand(1, 3, 32, 32) - 0.5) * 4, "pass the images before normalising them"),
        (torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8), "tensor of integers, bools or complex numbers"),
        (torch.rand(1, 3, 32, 32, dtype=torch.float64), "got float64: convert it with .float()"),
        (torch.rand(1, 3, 32, 32).half(), "got float16 or bfloat16: the file computes in float32"),
        (torch.rand(1, 3, 32, 32).bfloat16(), "got float16 or bfloat16: the file computes in float32"),
        (torch.full((1, 3, 32, 32), float("nan")), "got images holding NaN or inf"),
        (torch.rand(1, 1, 32, 32), "the student expects images [B, 3, H, W], got [1, 1, 32, 32]"),
    ],
)
def test_a_torchscript_file_refuses_input_it_would_misread(built_run, tmp_path, images, said):
    # a trace keeps no Python check: 0-255 or normalised images gave wrong answers without a word, and a
    # size off the stride failed deep inside the decoder; the file now says what it takes where it runs
    path = tmp_path / "s.ts"
    assert main(["export", str(built_run), "--output", str(path), "--quiet"]) == 0
    model = torch.jit.load(str(path))
    assert [tuple(o.shape) for o in model(torch.rand(2, 3, 64, 96))][0] == (2, 2)  # multiples of 32 still run
    with pytest.raises(torch.jit.Error) as caught:  # TorchScript's own error, naming ours
        model(images)
    assert said in str(caught.value)


def test_a_torchscript_file_taking_its_trained_size_only_refuses_others(built_run, tmp_path, monkeypatch):
    from amalgam.evaluation import export as export_module

    monkeypatch.setattr(export_module, "runs_at", lambda module, size: False)
    path = tmp_path / "s.ts"
    assert main(["export", str(built_run), "--output", str(path), "--quiet"]) == 0
    model = torch.jit.load(str(path))
    model(torch.rand(1, 3, 32, 32))
    with pytest.raises(torch.jit.Error) as caught:
        model(torch.rand(1, 3, 64, 64))
    assert "input 64x64: this file takes 32x32 only: resize every image to it, as in training" in str(caught.value)


def test_a_task_export_of_a_classifier_takes_sizes_off_the_dense_stride(built_run, tmp_path):
    # the whole student's stride (32, of its dense decoders) made the classification file refuse 48x40
    path = tmp_path / "cls.ts"
    assert main(["export", str(built_run), "--task", "classification", "--output", str(path), "--quiet"]) == 0
    (out,) = torch.jit.load(str(path))(torch.rand(1, 3, 48, 40))
    assert out.shape == (1, 2)
    meta = json.loads((tmp_path / "cls.ts.json").read_text())["input"]
    assert "any height and width; " in meta["sizes"] and (meta["size_multiple"], meta["other_sizes"]) == (None, True)


def test_the_onnx_gate_finds_a_nan_anywhere_in_an_image(tmp_path):
    # a review: onnxruntime's ReduceMin/Max passed a NaN that was not first in its row, so a per-pixel output kept
    # answers around it; the gate looks for NaN on its own
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from torch import nn

    from amalgam.evaluation.export_guard import ValueGate

    class PerPixel(nn.Module):  # an output that does not spread a NaN beyond its pixel
        def forward(self, x):
            return (x * 2,)

    x = torch.rand(2, 3, 8, 8)
    x[0, 1, 4, 4] = float("nan")
    path = tmp_path / "gate.onnx"
    with torch.no_grad():
        torch.onnx.export(ValueGate(PerPixel()).eval(), (x,), str(path), input_names=["images"], dynamo=False)
    (out,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})
    assert np.isnan(out[0]).all() and not np.isnan(out[1]).any()


def test_an_export_interrupted_before_its_check_leaves_the_previous_one_whole(built_run, tmp_path, monkeypatch):
    # it wrote in place: a Ctrl-C left a new file that was never checked beside the previous export's .json
    from amalgam.evaluation import export as export_module

    path = tmp_path / "student.ts"
    assert main(["export", str(built_run), "--output", str(path), "--quiet"]) == 0
    before = (path.read_bytes(), export_module.meta_path(path).read_text())

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(export_module, "parity", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_module.export(built_run, "torchscript", output=path, log=lambda m: None)
    assert (path.read_bytes(), export_module.meta_path(path).read_text()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student.ts", "student.ts.json"]  # no partial file left


def test_the_python_api_exports_as_the_cli(built_run, tmp_path):
    # a trial fine-tuned a student in Python and found no export there ("the same verbs are functions")
    import amalgam
    from amalgam.errors import AmalgamError

    path, diff = amalgam.export(built_run, "torchscript", output=tmp_path / "a.ts", quiet=True)
    assert path == tmp_path / "a.ts" and diff is not None and diff < 1e-4
    assert json.loads(Path(str(path) + ".json").read_text())["format"] == "torchscript"
    with pytest.raises(AmalgamError, match=r"^format: torchscript or onnx, got 'tflite'$"):
        amalgam.export(built_run, "tflite")


def test_a_quiet_torchscript_export_shows_no_torch_deprecation_notice(built_run, tmp_path):
    # a trial's --quiet export printed 8 lines of torch's "torch.jit.trace is deprecated" FutureWarnings
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main(["export", str(built_run), "--output", str(tmp_path / "q.ts"), "--quiet"]) == 0
    assert not [w for w in seen if "is deprecated" in str(w.message)], [str(w.message) for w in seen]


def test_partial_files_of_a_killed_export_are_removed_by_the_next(built_run, tmp_path, capsys):
    # a SIGKILL runs no cleanup: a trial found .student.partial-PID files of 5 MB each left for good
    import subprocess
    import sys

    from amalgam.evaluation.export import _partial_prefix

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(gone.stdout)  # a process that has ended
    prefix = _partial_prefix(tmp_path / "q[1].ts")  # a glob character in the name: escaped
    orphans = [tmp_path / f"{prefix}{pid}.ts", tmp_path / f"{prefix}{pid}.ts.json"]
    for orphan in orphans:
        orphan.write_bytes(b"partial")
    running = tmp_path / f"{prefix}{os.getppid()}.ts"  # another export of a process that still runs
    elsewhere = tmp_path / f".q[1].partial-otherhost-{pid}.ts"  # another machine's, on a shared folder
    for kept in (running, elsewhere):
        kept.write_bytes(b"partial")
    assert main(["export", str(built_run), "--output", str(tmp_path / "q[1].ts")]) == 0
    assert not any(o.exists() for o in orphans) and running.exists() and elsewhere.exists()
    said = capsys.readouterr().out
    assert f"removed {prefix}{pid}.ts: the partial export of a process that no longer runs" in said


def test_a_file_answering_nan_fails_the_parity_check(tmp_path):
    # a review: parity NaN passed (nan > limit is False) and the file was written, exit 0
    from amalgam.evaluation.export import ParityError, _within, parity

    module = torch.nn.Sequential(torch.nn.Conv2d(3, 1, 1)).eval()
    nan = parity(lambda x: [module(x)], lambda x: [torch.full((1, 1, 4, 4), float("nan"))], torch.rand(1, 3, 4, 4))
    assert nan == float("inf")
    with pytest.raises(ParityError, match=r"differs from the PyTorch student by nan > 0.0001: not written") as info:
        _within(float("nan"), None, tmp_path / "s.ts")
    assert "--tolerance" not in str(info.value)  # NaN is no rounding


def test_a_parity_miss_of_float_rounding_names_the_tolerance_that_takes_it(tmp_path):
    # a trial: a student answering in the thousands missed 1e-4 by 4% (1.04e-04) and the error named no option
    from amalgam.evaluation.export import ParityError, _within

    with pytest.raises(ParityError) as info:
        _within(1.04e-4, None, tmp_path / "s.onnx")
    assert str(info.value).endswith(
        "not written (a previous export there is left as it was); a difference this small may be float rounding"
        " (larger where the student answers far from +-1): --tolerance 0.001 exports it"
    )
    with pytest.raises(ParityError) as info:
        _within(2e-3, None, tmp_path / "s.onnx")  # more likely a wrong resize or op than rounding
    assert "--tolerance" not in str(info.value)


def test_parity_is_relative_where_the_student_answers_beyond_one():
    # a faithful export of metric depth in metres of a street (up to 80) differs by float32 rounding of
    # the order of 1e-5 relative: an absolute 1e-4 limit refused it
    from amalgam.evaluation.export import DEFAULT_TOLERANCE, output_difference

    want = torch.tensor([[0.5, 80.0, -200.0]])
    faithful = want * (1 + 2e-6) + torch.tensor([[3e-5, 0.0, 0.0]])
    assert (faithful - want).abs().max().item() > DEFAULT_TOLERANCE  # refused by the absolute limit
    assert output_difference(want, faithful) <= DEFAULT_TOLERANCE
    assert output_difference(want, want + torch.tensor([[2e-4, 0.0, 0.0]])) > DEFAULT_TOLERANCE  # absolute
    assert output_difference(want, want * torch.tensor([[1.0, 1.001, 1.0]])) > DEFAULT_TOLERANCE  # 0.1% off is no match
    # the same inf on both sides matches (a student answering inf itself); one side only does not
    inf = torch.tensor([float("inf"), 1.0])
    assert output_difference(inf, inf.clone()) == 0.0
    assert output_difference(inf, torch.tensor([1e30, 1.0])) == float("inf")
    assert output_difference(torch.tensor([1.0]), torch.tensor([float("-inf")])) == float("inf")


def test_amalgam_eval_scores_a_torchscript_export_as_the_student_it_was_made_from(world, built_run, tmp_path, capsys):
    # a trial: the file that ships could not be scored ("a TorchScript export, not a student.pt")
    path = tmp_path / "student.ts"
    assert main(["export", str(built_run), "--output", str(path), "--quiet"]) == 0
    meta = json.loads((tmp_path / "student.ts.json").read_text())
    assert all("background" in o for o in meta["outputs"] if o["labels"])  # the spaces, rebuilt exactly
    report = json.loads((built_run / "report.json").read_text())
    assert main(["eval", str(world), "--student", str(path), "--json", str(tmp_path / "e.json"), "--quiet"]) == 0
    again = json.loads((tmp_path / "e.json").read_text())
    for ours, theirs in zip(again["tasks"], report["tasks"]):
        for key, value in theirs["student_metrics"].items():
            assert ours["student_metrics"][key] == pytest.approx(value, abs=1e-4), (ours["teacher"], key)
    # an export's .json from before it named each space's background cannot rebuild the labels: said
    for output in meta["outputs"]:
        output.pop("background", None)
    (tmp_path / "student.ts.json").write_text(json.dumps(meta))
    assert main(["eval", str(world), "--student", str(path), "--quiet"]) == 2
    assert "names no background for its labels (an export of an earlier amalgam)" in capsys.readouterr().err


def test_the_json_records_the_parity_check_orientation_bit_depth_and_its_contract(built_run, tmp_path):
    # a trial: an unchecked export's .json read as a checked one's; EXIF orientation and 16-bit images, which
    # amalgam reads upright and as value / 257, were in no field; the TorchScript checks named RuntimeError
    path = tmp_path / "s.ts"
    assert main(["export", str(built_run), "--output", str(path), "--quiet"]) == 0
    meta = json.loads(Path(str(path) + ".json").read_text())
    assert meta["contract"] == 4 and meta["parity"]["checked"] and meta["parity"]["tolerance"] > 0
    assert 0 <= meta["parity"]["max_diff"] <= meta["parity"]["tolerance"]
    assert "exif_transpose" in meta["input"]["orientation"] and "value / 257" in meta["input"]["bit_depth"]
    assert meta["input"]["checks"].startswith("raises torch.jit.Error naming the problem (not a RuntimeError")
    assert not issubclass(torch.jit.Error, RuntimeError)  # why it says so (torch 2.x)


@pytest.mark.parametrize("size", [(24, 20), (80, 72)])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_the_jsons_interpolate_arguments_are_amalgams_own_resize(size, dtype):
    # a deployment resizing with input.interpolate feeds the export what amalgam fed the student, shrinking or not
    from amalgam.data.views import resize
    from amalgam.evaluation.export import INTERPOLATE

    image = torch.randint(0, 256, (1, 3, 37, 45), dtype=torch.uint8)
    image = image if dtype == torch.uint8 else image / 255.0
    theirs = torch.nn.functional.interpolate(image, size=size, **INTERPOLATE)
    assert torch.allclose(theirs.float(), resize(image, size).float(), rtol=0, atol=1e-5)  # uint8: equal


def test_amalgam_eval_refuses_an_export_beside_another_exports_json(world, built_run, tmp_path, capsys):
    # a trial: a .ts beside another run's .json was scored in that run's label order (top-1 0.03), rc 0
    path = tmp_path / "student.ts"
    assert main(["export", str(built_run), "--output", str(path), "--quiet"]) == 0
    meta = json.loads((tmp_path / "student.ts.json").read_text())
    meta["file"]["sha256"] = "0" * 64
    (tmp_path / "student.ts.json").write_text(json.dumps(meta))
    assert main(["eval", str(world), "--student", str(path), "--quiet"]) == 2
    assert "student.ts.json belongs to another file (its file.sha256 is not student.ts's)" in capsys.readouterr().err
    (tmp_path / "student.ts.json").unlink()  # without it: said what is missing, not only torch.jit.load
    assert main(["eval", str(world), "--student", str(path), "--quiet"]) == 2
    assert "(student.ts.json, which amalgam eval needs to score it, is not beside it)" in capsys.readouterr().err
    (tmp_path / "student.ts.json").write_text(json.dumps(meta))  # the .json passed for the file
    assert main(["eval", str(world), "--student", str(tmp_path / "student.ts.json"), "--quiet"]) == 2
    assert "student.ts.json is the .json of an export: pass the export file, student.ts" in capsys.readouterr().err


def test_a_task_export_is_scored_beside_its_tasks_teachers_only(world, built_run, tmp_path, capsys):
    # a trial: a --task file was refused ("has tasks ['segmentation'], the recipe's teachers ...") with no way on
    path = tmp_path / "seg.ts"
    assert main(["export", str(built_run), "--task", "segmentation", "--output", str(path), "--quiet"]) == 0
    assert main(["eval", str(world), "--student", str(path), "--json", str(tmp_path / "e.json")]) == 0
    out = capsys.readouterr().out
    assert f"student {path} answers segmentation only: scored beside seg-a, seg-b; cls, depth left out" in out
    report = json.loads((tmp_path / "e.json").read_text())
    assert {r["teacher"] for r in report["tasks"]} == {"seg-a", "seg-b"}
    assert "no teacher's eval names it" not in out  # the left-out teachers' eval sets left out too (a review)


def test_a_student_file_moved_out_of_its_run_is_exported_beside_it(built_run, tmp_path):
    # a trial: `amalgam export moved/student.pt` said "student file not found: moved/student.pt/student.pt"
    import shutil

    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(built_run / "student.pt", moved / "student.pt")
    assert main(["export", str(moved / "student.pt"), "--quiet"]) == 0
    assert (moved / "student.ts").is_file() and (moved / "student.ts.json").is_file()


def test_eval_of_an_unfinished_run_folder_is_told_to_resume(world, tmp_path, capsys):
    # a trial: it was told to pass <run>/student.pt, a file that does not exist
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"")
    assert main(["eval", str(world), "--student", str(run), "--quiet"]) == 2
    assert "is an unfinished build (a checkpoint.pt, no student.pt): finish it with" in capsys.readouterr().err


def test_an_export_to_a_full_disk_stops_in_one_line_and_leaves_nothing(built_run, tmp_path, capsys, monkeypatch):
    # a trial: TorchScript's writer on a full disk aborted the process with a C++ dump and left a partial file;
    # ONNX's gave a traceback
    import errno
    from collections import namedtuple

    from amalgam.evaluation import export as export_module

    usage = namedtuple("usage", "total used free")
    real = export_module.shutil.disk_usage
    monkeypatch.setattr(export_module.shutil, "disk_usage", lambda path: usage(2**30, 2**30 - 1000, 1000))
    assert main(["export", str(built_run), "--output", str(tmp_path / "s.ts")]) == 2
    assert "disk full (1,000 bytes free, the export needs about" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(export_module.shutil, "disk_usage", real)

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export_module, "_write_checked", full)
    assert main(["export", str(built_run), "--output", str(tmp_path / "s.ts")]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {tmp_path / 's.ts'}: disk full (" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_loaded_torchscript_export_says_another_size_as_a_loaded_student_does(built_run, tmp_path):
    # a trial: load_student('student.ts') at 128 px ran without a word where student.pt's warned (README: the
    # exported file carries the same checks)
    import warnings

    import amalgam
    from amalgam.students.serialize import OtherSizeWarning

    path, _ = amalgam.export(built_run, output=tmp_path / "s.ts", quiet=True)
    student, _ = amalgam.load_student(path)
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("default")
        student(torch.rand(1, 3, 32, 32))  # its trained size: nothing said
        student(torch.rand(1, 3, 64, 64))
    said = [str(w.message) for w in caught if w.category is OtherSizeWarning]
    assert said == [
        "input 64x64: the student was trained at 32x32; at another size things sit at another scale than it"
        " learnt and its answers can be far worse: resize every image to it, as in training"
    ]
