"""End to end: the `amalgam` command on the tiny world (tests/world.py)."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from world import TINY_BUILD

from amalgam.cli import main
from amalgam.errors import AmalgamError
from amalgam.evaluation.report import teacher_cell

TASK_ROW_KEYS = {
    "teacher",
    "teacher_wrap",  # added in 0.2: the wrap that shaped the targets (the baseline is the plain model)
    "teacher_wrap_args",  # added with describe(): that wrap's arguments (None without a wrap)
    "task",
    "eval",
    "metric",
    "higher_is_better",
    "teacher_value",
    "student_value",
    "ratio",
    "relative",  # added in 0.2: ratio, turned over where lower is better (1 = the teacher's, higher is better)
    "teacher_metrics",
    "student_metrics",
    "images",  # added 2026-12-05: the eval images the row scored
}


def read_log(run: Path) -> list[dict]:
    with open(run / "train_log.csv") as f:
        return list(csv.DictReader(f))


def test_tasks_lists_the_builtins_with_their_origin(capsys):
    assert main(["tasks"]) == 0
    rows = dict(line.split("\t") for line in capsys.readouterr().out.strip().splitlines())
    assert set(rows) >= {"classification", "segmentation", "depth"}
    for name in ("classification", "segmentation", "depth"):
        assert f"amalgam_tasks.{name}:" in rows[name]
        # the distribution is amalgam-kd; a venv that had the package under its old name may list that one
        assert rows[name].startswith(("amalgam-kd ", "amalgam "))


def test_inspect_prints_the_unified_label_spaces(world, capsys):
    assert main(["inspect", str(world), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "  classification: ['cat', 'dog']" in out
    assert "  segmentation: ['background', 'disc', 'square', 'bar']" in out
    assert "  depth: (no labels)" in out
    assert "seg-b: segmentation, python model" in out and "(background: other)" in out
    assert "eval items-val: imagefolder, 12 images" in out
    assert not (world.parent / "runs").exists(), "inspect writes nothing"


def test_inspect_warns_when_the_student_outgrows_its_teachers(world, capsys):
    assert main(["inspect", str(world), "--quiet", "--no-data"]) == 0
    out = capsys.readouterr().out
    # the tiny world's teachers have a few thousand parameters, its student 0.4M
    assert "warning: the student has more parameters than all teachers together" in out
    # each teacher's whole input spec, defaults said as such
    assert "    input: size 28x28, 1 channel, mean [0.500], std [0.250], resize stretch (default)" in out
    # a depth net trained at 64 and fed 96 by this default answered rmse 0.85 against 0.43 (a trial): the line says so
    default_size = "size 32x32 (default: data.image_size; set input.size to the size it was trained at)"
    assert f"    input: {default_size}, 3 channels (default), mean [0.485, 0.456, 0.406] (default)" in out
    # a --set mapping merges key by key: the 1-channel input's mean and std are replaced too
    big_teacher = [
        "--set", "teachers.cls.model={from: timm, name: resnet18, num_classes: 2}",
        "--set", "teachers.cls.checkpoint=null",
        "--set", "teachers.cls.input={channels: 3, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}",
    ]  # fmt: skip
    assert main(["inspect", str(world), "--quiet", "--no-data", *big_teacher]) == 0
    assert "warning: the student has more parameters" not in capsys.readouterr().out


def test_build_writes_the_run_folder(built_run):
    for name in ("student.pt", "report.json", "report.md", "train_log.csv", "checkpoint.pt"):
        assert (built_run / name).is_file(), name


def test_report_json_has_exactly_the_contract_keys(built_run):
    report = json.loads((built_run / "report.json").read_text())
    assert set(report) == {"name", "student", "teachers", "tasks", "unified", "train", "warnings", "tree"}
    assert report["name"] == "tiny"
    assert set(report["tree"]) == {"branch_at", "structure", "budget", "over_budget", "search"}
    assert report["tree"]["branch_at"] == {"classification": 3, "segmentation": 3, "depth": 3}
    assert report["student"]["decoders"] == {"segmentation": [16, 16, 8, 8, 8], "depth": [16, 16, 8, 8, 8]}
    for who in ("student", "teachers"):
        own = {"decoders", "budget"} if who == "student" else {"reading"}
        assert set(report[who]) == {"params", "latency_ms"} | own
        assert set(report[who]["latency_ms"]) == {"b1", "b32"}
        assert report[who]["params"] > 0
        assert all(v > 0 and math.isfinite(v) for v in report[who]["latency_ms"].values())
    assert report["teachers"]["params"] < report["student"]["params"]  # the world's teachers are tiny
    budget = report["student"]["budget"]  # every student type's verdict, a compact one's too
    assert set(budget) == {"params", "latency_ms", "share", "over"} and budget["over"] == report["tree"]["over_budget"]
    reading = report["teachers"]["reading"]  # how each teacher was read, as the log says it
    assert sorted(reading) == ["cls", "depth", "seg-a", "seg-b"] and set(reading["cls"]) == {"input", "output"}
    assert reading["cls"]["input"].startswith("size ") and "output" in reading["depth"]["output"]
    markdown = (built_run / "report.md").read_text()
    assert f"Teacher seg-a: {reading['seg-a']['input']}; distilling {reading['seg-a']['output']}." in markdown
    assert sorted(r["teacher"] for r in report["tasks"]) == ["cls", "depth", "seg-a", "seg-b"]
    for row in report["tasks"]:
        per_class = {"per_class_metric", "per_class"} if row["task"] != "depth" else set()
        assert set(row) - {"per_class_verdicts"} == TASK_ROW_KEYS | per_class
        # only where a class is warned of: {verdict: [class names]}
        assert set(row.get("per_class_verdicts", {})) <= ({"near_blind", "lost", "thin"} if per_class else set())
        assert row["metric"] == {"classification": "top1", "segmentation": "miou", "depth": "rmse"}[row["task"]]
        assert row["higher_is_better"] == (row["task"] != "depth")
        assert math.isfinite(row["teacher_value"]) and math.isfinite(row["student_value"])
        assert row["teacher_value"] > 0
        assert row["ratio"] == pytest.approx(row["student_value"] / row["teacher_value"], rel=1e-12)
        assert row["teacher_metrics"][row["metric"]] == row["teacher_value"]
        assert row["student_metrics"][row["metric"]] == row["student_value"]
    # one entry per (task, eval set), not per teacher: seg-a and seg-b share one
    unified = {(u["task"], u["eval"]): u for u in report["unified"]}
    assert len(unified) == len(report["unified"])
    assert set(unified) == {("classification", "items-val"), ("segmentation", "scenes-val"), ("depth", "scenes-val")}
    for u in report["unified"]:  # unscored: only where the row leaves some of the set's classes out
        labelled = {"classes"} if u["task"] != "depth" else set()  # the order of its per-class lists
        assert set(u) == {"task", "eval", "metrics"} | labelled | ({"unscored"} if u["eval"] == "items-val" else set())
    assert unified["classification", "items-val"]["unscored"] == ["'bird' (no unified class)"]
    seg = unified["segmentation", "scenes-val"]
    assert len(seg["metrics"]["iou"]) == len(seg["classes"]) == 4  # the whole unified space, named
    assert seg["classes"][0] == "background" and unified["classification", "items-val"]["classes"] == ["cat", "dog"]
    # 12 images, but the 4 birds are outside the unified space {cat, dog} (no background): ignored
    assert unified["classification", "items-val"]["metrics"]["count"] == 8
    assert unified["depth", "scenes-val"]["metrics"]["pixels"] == 6 * 32 * 32
    assert set(report["train"]) == {
        "epochs",
        "seconds",
        "images_per_second",
        "precision",
        "task_weighting",
        "task_weights",
        "unflipped",
        "processes",  # added 2026-12-05: torchrun's count (1 in one process)
    }
    # the mirror check flips both sources (seg-b, 'bar' beside its background, has nothing a mirror can swap)
    assert report["train"]["unflipped"] == {}
    assert report["train"]["precision"] in ("fp32", "bf16") and report["train"]["processes"] == 1
    assert report["train"]["epochs"] == 1
    # the learned exp(-s) of each teacher's term: moved from 1 after one epoch, and in report.md
    weights = report["train"]["task_weights"]
    assert report["train"]["task_weighting"] == "uncertainty" and set(weights) == {"cls", "seg-a", "seg-b", "depth"}
    assert all(0 < w != 1 for w in weights.values())
    assert "Task weights at the end (uncertainty): cls " in (built_run / "report.md").read_text()
    assert report["train"]["seconds"] > 0 and report["train"]["images_per_second"] > 0


def test_report_md_and_train_log(built_run):
    md = (built_run / "report.md").read_text()
    assert md.startswith("# amalgam report: tiny")
    report = json.loads((built_run / "report.json").read_text())
    for row in report["tasks"]:  # each teacher's row, with what its per-class verdicts warn of
        assert f"| {teacher_cell(row)} |" in md
    rows = read_log(built_run)
    assert len(rows) == 1  # one row per epoch
    assert rows[0]["epoch"] == "1"
    assert {"loss", "cls", "seg-a", "seg-b", "depth"} <= set(rows[0])
    assert all(math.isfinite(float(rows[0][k])) for k in ("loss", "seg-a", "depth"))


def test_output_option_epochs_and_no_overwrite_without_force(world, tmp_path, capsys):
    out = tmp_path / "elsewhere"
    args = [
        "build",
        str(world),
        "--output",
        str(out),
        "--quiet",
        "--set",
        "train.epochs=2",
        "--set",
        "train.samples_per_epoch=4",
        "--set",
        "train.batch_size=2",
    ]
    assert main(args) == 0
    assert [r["epoch"] for r in read_log(out)] == ["1", "2"]
    assert json.loads((out / "report.json").read_text())["train"]["epochs"] == 2
    capsys.readouterr()
    before = (out / "report.json").read_bytes()
    assert main(args) == 2
    err = capsys.readouterr().err
    said = f"{out} already holds a finished run: pass --force to overwrite it (force=True from Python)"
    assert err == f"amalgam: error: {said}\n"
    assert (out / "report.json").read_bytes() == before


def test_eval_reproduces_the_reports_student_metrics(world, built_run, tmp_path):
    report = json.loads((built_run / "report.json").read_text())
    path = tmp_path / "eval.json"
    assert main(["eval", str(world), "--student", str(built_run / "student.pt"), "--json", str(path), "--quiet"]) == 0
    again = json.loads(path.read_text())
    assert [r["student_metrics"] for r in again["tasks"]] == [r["student_metrics"] for r in report["tasks"]]
    assert [r["teacher_metrics"] for r in again["tasks"]] == [r["teacher_metrics"] for r in report["tasks"]]
    assert again["unified"] == report["unified"]
    # the build's own warning of its schedule is not the student's to repeat
    built = [w for w in report["warnings"] if not w.startswith("before training: the schedule gives the student")]
    assert again["warnings"] == built and again["tasks"][0]["per_class"] == report["tasks"][0]["per_class"]
    assert again["train"] == {"epochs": 0, "seconds": 0.0, "images_per_second": 0.0}
    from amalgam.evaluation.report import to_markdown

    assert "Training:" not in to_markdown(again)  # nothing was trained: no "0 epochs" line
    assert "Training: 1 epoch," in (built_run / "report.md").read_text()


def test_determinism_same_seed_same_report(world, built_run, tmp_path):
    out = tmp_path / "again"
    assert main(["build", str(world), "--output", str(out), *TINY_BUILD]) == 0
    first = json.loads((built_run / "report.json").read_text())
    second = json.loads((out / "report.json").read_text())
    assert [r["student_value"] for r in second["tasks"]] == [r["student_value"] for r in first["tasks"]]
    assert [r["student_metrics"] for r in second["tasks"]] == [r["student_metrics"] for r in first["tasks"]]
    assert second["unified"] == first["unified"]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(read_log(out)) == strip(read_log(built_run))


def broken_copy(world: Path, tmp_path: Path, edit) -> Path:
    raw = yaml.safe_load(world.read_text())
    edit(raw)
    raw["output"] = str(tmp_path / "run")
    path = world.parent / f"broken-{tmp_path.name}.yaml"  # beside the world, so its relative paths hold
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_broken_recipe_exits_2_with_one_line_and_no_run_folder(world, tmp_path):
    path = broken_copy(world, tmp_path, lambda raw: raw["train"].update(epoch=3))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "amalgam", "build", str(path)], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stderr == "amalgam: error: train.epoch: unknown key (did you mean 'epochs'?)\n"
    assert proc.stdout == ""
    assert not (tmp_path / "run").exists()


def test_checkpoint_that_does_not_fit_fails_before_any_run_folder(world, tmp_path, capsys):
    def swap(raw):
        raw["teachers"]["seg-a"]["checkpoint"] = "zoo/seg-b.pt"  # 2 output channels, seg-a has 3

    path = broken_copy(world, tmp_path, swap)
    assert main(["build", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("amalgam: error: teacher 'seg-a': checkpoint ")
    assert "does not fit the model" in err and "seg-b.pt" in err
    assert not (tmp_path / "run").exists()


def test_debug_shows_the_traceback(world, tmp_path, capsys):
    path = broken_copy(world, tmp_path, lambda raw: raw["data"].update(image_size=[30, 30]))
    assert main(["build", str(path), "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("amalgam: error: data.image_size: [30, 30] must be divisible by the encoder's stride 32")


def test_student_init_starts_from_a_previous_runs_student(world, built_run, tmp_path, capsys):
    import torch

    from amalgam.students.serialize import load_student

    out = tmp_path / "continued"
    init = built_run / "student.pt"
    args = ["build", str(world), "--output", str(out), *TINY_BUILD, "--set", f"student.init={init}"]
    assert main([*args, "--set", "train.lr=1e-12"]) == 0  # lr ~0: the weights stay where init put them
    previous, _ = load_student(init)
    continued, _ = load_student(out / "student.pt")
    for (name, a), b in zip(previous.state_dict().items(), continued.state_dict().values()):
        if name.endswith("weight"):
            assert torch.allclose(a, b, atol=1e-6), name
    assert json.loads((out / "report.json").read_text())["student"]["init"] == str(init)  # a trial: log only
    capsys.readouterr()
    assert main(["inspect", str(world), "--set", f"student.init={init}"]) == 0
    assert f"  starts from (student.init): {init}, every tensor" in capsys.readouterr().out
    missing = tmp_path / "nowhere.pt"
    again = ["build", str(world), "--output", str(tmp_path / "r2"), "--quiet", "--set", f"student.init={missing}"]
    assert main(again) == 2
    assert capsys.readouterr().err == f"amalgam: error: student.init: student file not found: {missing}\n"
    assert not (tmp_path / "r2").exists()


def test_student_init_refuses_another_architecture(world, built_run, tmp_path, capsys):
    out = tmp_path / "other"
    args = ["build", str(world), "--output", str(out), "--quiet", "--set", f"student.init={built_run / 'student.pt'}"]
    assert main([*args, "--set", "student.decoder_channels=[32, 16, 16, 8, 8]"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("amalgam: error: student.init: ") and "decoder_channels=" in err
    assert not out.exists()


def test_student_init_refuses_other_label_spaces(built_run):
    from amalgam.errors import RecipeError
    from amalgam.labels import LabelSpace
    from amalgam.students.serialize import init_student, load_student

    student, spaces = load_student(built_run / "student.pt")
    task, space = next((t, s) for t, s in spaces.items() if s is not None)
    renamed = {**spaces, task: LabelSpace(("renamed",) + tuple(space.names[1:]), space.background)}
    with pytest.raises(RecipeError, match=f"student.init: .* holds a student with {task} labels="):
        init_student(student, renamed, built_run / "student.pt")
    init_student(student, spaces, built_run / "student.pt")  # the same spaces load


def test_inspect_says_what_the_teacher_cache_would_take(world, capsys):
    # a 150-class segmenter's cache is gigabytes: said by the build's log only, after inspect
    assert main(["inspect", str(world), "--quiet"]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("teacher cache:")]
    assert line.startswith("teacher cache: up to ")
    assert line.endswith(" MB under the run's folder (train.cache_max_gb 20)")  # a trial: tiny caches read "0.00 GB"
    assert line != "teacher cache: up to 0 MB under the run's folder (train.cache_max_gb 20)"
    from amalgam.io import gb_text

    assert [gb_text(v) for v in (0.39, 0.1, 0.0031, 0.00004)] == ["0.39 GB", "0.10 GB", "3.1 MB", "0.04 MB"]
    assert main(["inspect", str(world), "--quiet", "--set", "train.cache_max_gb=0.000001"]) == 0
    assert "teacher cache: off at build, it would take" in capsys.readouterr().out
    assert main(["inspect", str(world), "--quiet", "--set", "train.cache_teachers=false"]) == 0
    assert "teacher cache: off (train.cache_teachers: false)" in capsys.readouterr().out


def test_eval_json_that_cannot_be_written_and_a_suggest_labels_count_under_1_stop_before_any_work(
    world, built_run, tmp_path, capsys
):
    # a trial: --json <folder> failed after the whole evaluation in a traceback; --suggest-labels 0 divided
    # by zero and -3 ran on all but 3 images
    student = str(built_run / "student.pt")
    assert main(["eval", str(world), "--student", student, "--json", str(tmp_path), "--quiet"]) == 2
    assert f"--json {tmp_path}: a folder, not a file: name the file" in capsys.readouterr().err
    (tmp_path / "f").write_text("")
    assert main(["eval", str(world), "--student", student, "--json", str(tmp_path / "f" / "x.json"), "--quiet"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    for count in ("0", "-3"):
        with pytest.raises(SystemExit):
            main(["inspect", str(world), "--suggest-labels", count])
        assert "a count of 1 or more, got" in capsys.readouterr().err
    from amalgam.labels.suggest import predictions

    with pytest.raises(AmalgamError, match="max_images is a count of 1 or more, got 0"):
        predictions(None, 0)


def test_inspect_says_a_small_std_in_four_digits(world, capsys):
    # a trial: std 1/255 was said 0.004, as 1/250 would be
    assert main(["inspect", str(world), "--quiet", "--no-data", "--set", "teachers.cls.input.std=[0.00392157]"]) == 0
    assert "mean [0.500], std [0.003922], resize stretch (default)" in capsys.readouterr().out


@pytest.mark.parametrize("verb", ["export", "report", "tasks"])
def test_every_verb_takes_debug(verb, tmp_path, capsys):
    # a trial: docs/plugins.md says --debug shows the traceback; export and report refused the option
    args = [verb] + ([] if verb == "tasks" else [str(tmp_path / "none")]) + ["--debug"]
    assert main(args) in (0, 2)
    assert "unrecognized arguments" not in capsys.readouterr().err


def test_the_build_log_warns_of_a_student_bigger_than_its_teachers_as_inspect_does(world_plan):
    # a trial: inspect warned of a student at 134% of the teachers; the build log, which shares its lines, did not
    from amalgam.students.budget import student_lines

    lines = student_lines(world_plan.student_spec(), 2_000, 1_000, world_plan.recipe.student.budget)
    said = "warning: the student has more parameters than all teachers together (2,000 > 1,000)"
    assert any(said in line for line in lines)


def test_a_command_outlives_its_standard_output(monkeypatch, capsys):
    # a trial: `amalgam build | head -3` ended the build with a BrokenPipeError traceback and removed its run
    # folder; stdout on a full disk ended a finished build with rc 1
    import io
    import sys

    class Gone(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", Gone())
    assert main(["tasks"]) == 1  # its product is what it prints: lost, it failed (a review: rc 0 into /dev/full)
    assert capsys.readouterr().err.count("amalgam: standard output lost (Broken pipe): the command goes on") == 1


def test_eval_under_torchrun_is_refused_in_one_line(monkeypatch, capsys, tmp_path):
    # a trial: each rank scored the whole set, printed the report and wrote the same --json, latencies inflated
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["eval", str(tmp_path / "r.yaml"), "--student", str(tmp_path / "s.pt")]) == 2
    err = capsys.readouterr().err
    assert "amalgam eval runs in one process, not under torchrun (2 launched): run it plainly" in err


def test_inspect_says_what_a_build_would_meet_in_its_output_folder(world, built_run, capsys):
    # a trial: inspect passed a folder holding a finished run, and the build stopped at once asking for --force
    assert main(["inspect", str(world), "--no-data", "--set", f"output={built_run}"]) == 0
    assert f"-> {built_run} (it holds a finished run: a build needs --force)" in capsys.readouterr().out


def test_inspect_names_eval_classes_too_thin_to_judge_before_the_build(world, tmp_path, capsys):
    # a left-over of the per-class verdicts: an eval set of a few images a class was said thin only after training
    assert main(["inspect", str(world), "--quiet"]) == 0
    out = capsys.readouterr().out
    (line,) = [x for x in out.splitlines() if "hold under 10 images each" in x]
    # a review: the set's 'bird', no label of the teacher's, was listed; a teacher's labels are what is scored
    assert line.strip().startswith("teacher cls: 2 of its 2 labels here hold under 10 images each: cat (")
    assert "bird" not in line and "will be noise" in line
