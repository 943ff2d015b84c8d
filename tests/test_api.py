"""The Python API (amalgam.build / evaluate / inspect / load_student) on the tiny world."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import amalgam
from amalgam import api
from amalgam.api import override_strings
from amalgam.errors import AmalgamError

TINY = {"train.epochs": 1, "train.samples_per_epoch": 8}


def test_the_package_exports_the_api():
    for name in ("build", "evaluate", "inspect", "load_student", "load_recipe", "Run", "AmalgamError", "RecipeError"):
        assert name in amalgam.__all__ and hasattr(amalgam, name), name


def test_mapping_overrides_set_python_values_exactly(world, tmp_path):
    init = tmp_path / "a b: c.pt"  # a space and a colon: YAML would read the bare text differently
    overrides = {
        "train.lr": 1e-12,  # PyYAML reads a bare 1e-12 as a string
        "train.samples_per_epoch": 8,
        "train.augment": False,
        "student.init": init,
        "student.decoder_channels": [32, 16, 16, 8, 8],
        "amalgamation.task_weights": {"cls": 0.5, "depth": 2.0},
        "train.max_eval_images": None,
    }
    recipe = amalgam.load_recipe(world, overrides)
    assert recipe.train.lr == 1e-12 and recipe.train.samples_per_epoch == 8 and recipe.train.augment is False
    assert recipe.student.init == init and recipe.student.decoder_channels == [32, 16, 16, 8, 8]
    assert recipe.amalgamation.task_weights == {"cls": 0.5, "depth": 2.0}
    assert recipe.train.max_eval_images is None
    # the --set strings a mapping is recorded as load the same recipe
    assert amalgam.load_recipe(world, override_strings(overrides)) == recipe


def test_overrides_apply_to_a_copy_of_a_loaded_recipe(world):
    recipe = amalgam.load_recipe(world)
    changed = amalgam.load_recipe(recipe, {"train.epochs": 3})
    assert changed.train.epochs == 3 and recipe.train.epochs != 3
    assert changed.base_dir == recipe.base_dir
    with pytest.raises(amalgam.RecipeError, match="train.epoch: unknown key"):
        amalgam.load_recipe(recipe, ["train.epoch=3"])
    with pytest.raises(AmalgamError, match="expected a mapping or a list"):
        amalgam.load_recipe(world, "train.epochs=3")


def test_search_with_a_budget_leaves_a_loaded_recipe_as_it_was(world, monkeypatch):
    recipe = amalgam.load_recipe(world)
    before = recipe.student.budget
    seen = []
    monkeypatch.setattr(api, "build_plan", lambda loaded, log: loaded)
    monkeypatch.setattr(api, "search_tree", lambda plan, device, out, log: seen.append(plan.student.budget))
    amalgam.search(recipe, budget={"params": 2.0}, output=world.parent / "search", quiet=True)
    assert seen[0].params == 2.0  # the search used the budget given
    assert recipe.student.budget is before and recipe.student.budget.params == 0.5


def test_inspect_returns_the_plan_and_the_student_size(world):
    found = amalgam.inspect(world, with_data=False, quiet=True)
    assert set(found.plan.teachers) == {"cls", "seg-a", "seg-b", "depth"}
    assert list(found.plan.spaces["segmentation"].names) == ["background", "disc", "square", "bar"]
    assert found.plan.sources is None  # with_data=False scans nothing
    assert found.student_params > 0 and found.teacher_params > 0
    text = found.summary()
    assert "  classification: ['cat', 'dog']" in text and "\nsources:" not in text


def test_build_from_a_recipe_object_matches_the_cli_build(world, built_run, tmp_path):
    recipe = amalgam.load_recipe(world)
    run = amalgam.build(recipe, TINY, output=tmp_path / "run", quiet=True)
    assert isinstance(run, amalgam.Run) and run.kind == "student" and run.run_dir == tmp_path / "run"
    assert list(run.paths) == ["student", "report_json", "report_md", "report_html", "train_log"]
    assert all(p.is_file() for p in run.paths.values())
    assert run.report == json.loads(run.paths["report_json"].read_text())
    assert run.summary() == run.paths["report_md"].read_text()
    cli = json.loads((built_run / "report.json").read_text())
    assert run.report["tasks"] == cli["tasks"] and run.report["unified"] == cli["unified"]
    assert run.report["student"]["params"] == cli["student"]["params"]
    with pytest.raises(AmalgamError, match="already holds a finished run"):
        amalgam.build(recipe, TINY, output=tmp_path / "run", quiet=True)
    # a run built from a Recipe object has no recipe file: run.json holds the recipe itself
    assert amalgam.render_report(run.run_dir, quiet=True) == run.run_dir / "report.html"


def test_a_path_build_records_its_overrides_as_set_strings(built_run, world):
    run = json.loads((built_run / "run.json").read_text())
    assert run == {"recipe": str(Path(world).resolve()), "set": ["train.epochs=1", "train.samples_per_epoch=8"]}


def test_evaluate_a_saved_student_and_a_loaded_one(world, built_run):
    report = json.loads((built_run / "report.json").read_text())
    again = amalgam.evaluate(world, built_run / "student.pt", quiet=True)
    assert [r["student_metrics"] for r in again["tasks"]] == [r["student_metrics"] for r in report["tasks"]]
    student, spaces = amalgam.load_student(built_run / "student.pt")
    assert set(spaces) == {"classification", "segmentation", "depth"}
    same = amalgam.evaluate(world, student, quiet=True)
    assert same["unified"] == report["unified"]
    # a review: a student moved to .double() was refused the float32 images evaluate feeds it
    double = amalgam.evaluate(world, student.double(), quiet=True)
    for moved, saved in zip(double["tasks"], report["tasks"]):
        scalars = {k: v for k, v in saved["student_metrics"].items() if isinstance(v, float)}
        assert scalars and {k: moved["student_metrics"][k] for k in scalars} == pytest.approx(scalars, rel=1e-3)


def test_evaluate_refuses_a_student_of_other_tasks(world, built_run):
    student, _ = amalgam.load_student(built_run / "student.pt")
    del student.spec.heads["depth"]  # its depth head gone, its spaces still naming depth: which is it?
    said = r"has label_spaces for \['classification', 'depth', 'segmentation'\], but heads for \['classification', 'seg"
    with pytest.raises(AmalgamError, match=said):
        amalgam.evaluate(world, student, quiet=True)
    student.spec.heads["unknown"] = student.spec.heads["segmentation"]  # a task the recipe has no teacher of
    with pytest.raises(AmalgamError, match=r"has tasks \['classification', 'segmentation', 'unknown'\], the recipe's"):
        amalgam.evaluate(world, student, quiet=True)


def test_evaluate_says_where_a_saved_students_classes_are_not_the_recipes(world, built_run, capsys):
    # another recipe's student was scored without a word; a class it cannot answer was a ValueError traceback
    import yaml

    raw = yaml.safe_load(world.read_text())
    del raw["teachers"]["seg-b"]  # the unified space loses 'bar', which the student keeps
    recipe = world.parent / "other_recipe.yaml"  # beside the world's: its paths are relative to it
    recipe.write_text(yaml.safe_dump(raw))
    amalgam.evaluate(recipe, built_run / "student.pt")
    assert (
        "segmentation classes are not this recipe's (its own: bar): each teacher is scored" in capsys.readouterr().out
    )
    raw["teachers"]["seg-a"]["labels"] = ["background", "disc", "box"]
    recipe.write_text(yaml.safe_dump(raw))
    with pytest.raises(AmalgamError, match=r"has no segmentation class box of this recipe's teachers \(its classes: "):
        amalgam.evaluate(recipe, built_run / "student.pt", quiet=True)


def test_prepare_is_the_deprecated_name_of_build_plan(world):
    from amalgam.distill.plan import build_plan, prepare

    recipe = amalgam.load_recipe(world)
    with pytest.warns(DeprecationWarning, match="now build_plan"):
        plan = prepare(recipe, with_data=False, log=lambda m: None)
    assert plan.spaces == build_plan(recipe, with_data=False, log=lambda m: None).spaces


def _reordered(world: Path) -> Path:
    """The world's recipe with seg-b listed before seg-a: the unified segmentation order changes."""
    import yaml

    raw = yaml.safe_load(world.read_text())
    teachers = raw["teachers"]
    raw["teachers"] = {name: teachers[name] for name in ("cls", "seg-b", "seg-a", "depth")}
    path = world.parent / "reordered.yaml"  # beside the world's: its paths are relative to it
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_evaluate_reads_a_loaded_students_outputs_by_class_name(world, built_run, capsys):
    # a loaded student was scored in the recipe's label order: another order gave wrong numbers silently
    student, spaces = amalgam.load_student(built_run / "student.pt")
    disc = spaces["segmentation"].names.index("disc")

    def favour_disc(module, args, out):  # the 1-epoch student answers "background" (first in both orders)
        out["segmentation"][:, disc] += 10.0
        return out

    student.register_forward_hook(favour_disc)
    own = amalgam.evaluate(world, student, quiet=True)
    other = amalgam.evaluate(_reordered(world), student)
    name = f"module {type(student).__name__}"
    assert f"{name}'s segmentation classes are not this recipe's (another order)" in capsys.readouterr().out
    by_teacher = [{r["teacher"]: r["student_metrics"] for r in report["tasks"]} for report in (own, other)]
    assert by_teacher[0] == by_teacher[1] and own["unified"] == other["unified"]
    # a module that carries neither is scored as the recipe says, and the log says so
    del student.label_spaces, student.image_size
    amalgam.evaluate(world, student)
    assert (
        f"student {name} carries no label_spaces or image_size (load_student sets them): scored in the"
        " recipe's label order and at the recipe's data.image_size 32x32" in capsys.readouterr().out
    )


def test_evaluate_feeds_a_saved_student_its_training_size(world, built_run, capsys):
    # the recipe's data.image_size was used, silently: lower scores for a student fed another size
    report = json.loads((built_run / "report.json").read_text())
    edited = amalgam.load_recipe(world, {"data.image_size": [64, 64]})  # a recipe of another size
    again = amalgam.evaluate(edited, built_run / "student.pt")
    assert (
        "was trained at 32x32, the recipe's data.image_size is 64x64: scored at 32x32, its training size"
        in capsys.readouterr().out
    )
    assert [r["student_metrics"] for r in again["tasks"]] == [r["student_metrics"] for r in report["tasks"]]
    # another size asked for on purpose (--set) is kept, and said
    assert again["student"]["scored_at"] == [32, 32] and not any("scored at" in w for w in again["warnings"])
    asked = amalgam.evaluate(world, built_run / "student.pt", {"data.image_size": [64, 64]})
    assert "trained at 32x32: scored at 64x64, the data.image_size the overrides ask for" in capsys.readouterr().out
    # in the report too, first (a trial's --quiet --json report read as a student that lost 16 classes)
    assert asked["student"]["scored_at"] == [64, 64]
    assert asked["warnings"][0].startswith("student ") and "scored at 64x64" in asked["warnings"][0]
    assert amalgam.load_student(built_run / "student.pt")[0].image_size == (32, 32)


def test_evaluate_leaves_a_module_as_it_came(world, built_run):
    # evaluate left the caller's module in eval mode: an own training loop then trained with frozen BatchNorm
    student, _ = amalgam.load_student(built_run / "student.pt")
    student.train()
    frozen = next(m for m in student.modules() if isinstance(m, torch.nn.BatchNorm2d))
    frozen.eval()  # frozen on purpose: stays frozen
    modes = [m.training for m in student.modules()]
    amalgam.evaluate(world, student, quiet=True)
    assert [m.training for m in student.modules()] == modes and not frozen.training
    assert next(student.parameters()).device == torch.device("cpu")


class _Mine(torch.nn.Module):
    """A student of one's own: no spec, the outputs of a trained student."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, images):
        return self.inner(images)


def test_evaluate_a_module_of_ones_own(world, built_run, capsys):
    # a module without .spec crashed with AttributeError
    student, spaces = amalgam.load_student(built_run / "student.pt")
    mine = _Mine(student)
    built = json.loads((built_run / "report.json").read_text())["unified"]
    # a trial: README says a module without label_spaces is read in the recipe's order; it was refused
    plain = amalgam.evaluate(world, mine)
    assert "in the recipe's label order" in capsys.readouterr().out
    assert plain["unified"] == built  # the student was trained in the recipe's order
    mine.label_spaces = spaces
    report = amalgam.evaluate(world, mine)
    assert "carries no image_size (load_student sets them): scored at the recipe's data" in capsys.readouterr().out
    assert report["unified"] == built
    one = _Mine(lambda images: {"classification": student(images)["classification"]})
    with pytest.raises(AmalgamError, match=r"must be a dict \{task: output\} with .*got keys \['classification'\]"):
        amalgam.evaluate(world, one, quiet=True)


def test_numpy_values_in_overrides(world):
    # np.float64 from np.logspace raised yaml's RepresenterError
    recipe = amalgam.load_recipe(
        world,
        {
            "train.lr": np.float64(2e-3),
            "train.epochs": np.int64(3),
            "train.augment": np.bool_(False),
            "data.image_size": np.array([64, 64]),
        },
    )
    assert recipe.train.lr == 2e-3 and recipe.train.epochs == 3 and recipe.train.augment is False
    assert tuple(recipe.data.image_size) == (64, 64)
    with pytest.raises(AmalgamError, match=r"^overrides: train\.lr: cannot set a object"):
        amalgam.load_recipe(world, {"train.lr": object()})


def test_evaluate_says_when_the_recipes_teachers_are_not_the_ones_the_student_was_built_with(world, built_run, capsys):
    # a user trial: a recipe feeding a teacher other mean/std scored the student 1.84x "its" teacher, without a word
    capsys.readouterr()
    amalgam.evaluate(world, built_run / "student.pt")
    assert "the recipe's teachers differ" not in capsys.readouterr().out
    amalgam.evaluate(world, built_run / "student.pt", ["teachers.cls.input.std=[0.5]"])
    said = capsys.readouterr().out
    assert f"note: the recipe's teachers differ from those {built_run / 'student.pt'} was built with" in said
    assert "teachers.cls.input.std" in said


def test_evaluate_says_when_a_student_file_is_older_than_its_resize_and_limit_records(
    world, built_run, tmp_path, capsys
):
    # a trial: a student of 2026-12-01 scored 0.5829 against its report's 0.6514, on other images of a limited
    # eval set (limit then kept the first files), and a little otherwise under the new resize, without a word
    capsys.readouterr()
    amalgam.evaluate(world, built_run / "student.pt", ["data.eval.scenes-val.limit=4"])
    assert "records neither its resize" not in capsys.readouterr().out  # today's file: nothing to say
    blob = torch.load(built_run / "student.pt", weights_only=True)
    del blob["made"]
    old = tmp_path / "old.pt"
    torch.save(blob, old)
    amalgam.evaluate(world, old)
    said = capsys.readouterr().out
    assert f"note: {old} records neither its resize nor how limit picked its images" in said
    assert "kept the first images" not in said  # no limit set: the same images
    amalgam.evaluate(world, old, ["data.eval.scenes-val.limit=4"])
    assert "before 2026-12-03, data.eval.scenes-val.limit kept the first images" in capsys.readouterr().out
    blob["made"] = {"resize_version": 1, "limit": "spread"}  # a record of an older resize (a review: unsaid)
    torch.save(blob, old)
    amalgam.evaluate(world, old)
    assert (
        f"note: {old} trained on images resized by version 1, amalgam now resizes by version 2"
        in capsys.readouterr().out
    )


def test_a_build_gives_the_caller_its_random_streams_and_global_modes_back(world, tmp_path):
    # a user trial: a random search drawing lr from np.random tried one value after every build (the build
    # seeded the streams and left them so); deterministic mode stayed on; a float64 default made a
    # float64 student (report.json said bf16); a build under torch.no_grad failed in its first backward
    import random

    random.seed(123), np.random.seed(123), torch.manual_seed(123)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(123), np.random.seed(123), torch.manual_seed(123)
    before = torch.get_default_dtype(), torch.are_deterministic_algorithms_enabled()
    torch.set_default_dtype(torch.float64)
    try:
        with torch.no_grad():
            run = amalgam.build(world, TINY, output=tmp_path / "run", quiet=True)
            assert torch.get_default_dtype() == torch.float64 and not torch.is_grad_enabled()
    finally:
        torch.set_default_dtype(before[0])
    assert torch.are_deterministic_algorithms_enabled() == before[1]
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    state = torch.load(run.paths["student"], map_location="cpu", weights_only=False)["state_dict"]
    floats = [v.dtype for v in state.values() if torch.is_tensor(v) and v.is_floating_point()]
    assert floats and set(floats) == {torch.float32}


def test_the_callers_own_import_of_a_recipes_model_module_stays_its_own(world):
    # a user trial: after amalgam.inspect, sys.modules held amalgam's fresh copy of the recipe's module, so
    # the caller's models of it no longer pickled (torch.save(model)) nor matched its classes by isinstance
    import importlib
    import pickle
    import sys

    sys.path.insert(0, str(Path(world).parent))
    try:
        models = importlib.import_module("models")
        own = models.tiny_dense(3)
        amalgam.inspect(world, with_data=False, quiet=True)
        assert sys.modules["models"] is models
        pickle.dumps(own)
    finally:
        sys.path.remove(str(Path(world).parent))
        sys.modules.pop("models", None)


def test_a_recipe_written_as_a_mapping_and_a_malformed_override(world, monkeypatch):
    # a user trial: a dict recipe raised a bare TypeError; "train.epochs=[1" a yaml ParserError traceback
    import yaml

    from amalgam.errors import RecipeError

    raw = yaml.safe_load(Path(world).read_text())
    monkeypatch.chdir(Path(world).parent)  # a mapping's relative paths are the working directory's
    assert amalgam.load_recipe(raw) == amalgam.load_recipe(world)
    with pytest.raises(RecipeError, match=r"train.epochs: the value '\[1' is not YAML \("):
        amalgam.load_recipe(world, ["train.epochs=[1"])
    # a review: a mapping's `base:` was dropped without a word ("name: required key is missing")
    variant = amalgam.load_recipe({"base": Path(world).name, "train": {"epochs": 3}}, ["seed=4"])
    assert (variant.train.epochs, variant.seed, variant.name) == (3, 4, amalgam.load_recipe(world).name)
    # and a loaded recipe given overrides kept its defaults unsaid (a depth_scale at its default was warned of)
    again = amalgam.load_recipe(amalgam.load_recipe(world), ["seed=4"])
    assert all("depth_scale" not in s.model_fields_set for s in again.data.eval.values())


def test_render_report_and_export_give_the_caller_its_random_streams_back(built_run, tmp_path):
    # a review: both drew from the caller's torch stream, and export under a float64 default made float64
    # parity images that its own TorchScript check refused ("convert it with .float()")
    import random

    def draws():
        random.seed(5), np.random.seed(5), torch.manual_seed(5)
        return random.random(), np.random.rand(), torch.rand(1).item()

    expected = draws()
    for call in (
        lambda: amalgam.render_report(built_run, quiet=True),
        lambda: amalgam.export(built_run, output=tmp_path / "a.ts", quiet=True),
    ):
        random.seed(5), np.random.seed(5), torch.manual_seed(5)
        call()
        assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        amalgam.export(built_run, output=tmp_path / "student.ts", quiet=True)
    finally:
        torch.set_default_dtype(before)
    assert (tmp_path / "student.ts").is_file()


def test_eval_and_report_say_a_teacher_file_changed_since_the_build(fresh_world, tmp_path, capsys):
    # a trial: a teacher retrained in place (same path) was scored beside the student as if it had taught it
    # (ratio 0.128 read 0.145) and samples.png redrew its column, with no word; student.pt now keeps the teachers'
    # fingerprints, as checkpoint.pt does for --resume
    from world import TINY_BUILD

    from amalgam.cli import main

    out = tmp_path / "run"
    assert main(["build", str(fresh_world), "--output", str(out), *TINY_BUILD]) == 0
    assert set(torch.load(out / "student.pt", weights_only=False)["teachers"]) == {"cls", "seg-a", "seg-b", "depth"}
    report = amalgam.evaluate(fresh_world, out / "student.pt", quiet=True)
    assert not any("differ from those" in w for w in report["warnings"])  # the same teachers: nothing said
    weights = fresh_world.parent / "zoo" / "cls.pt"
    (fresh_world.parent / "zoo" / "same.pt").write_bytes(weights.read_bytes())  # a review: a path the recipe
    report = amalgam.evaluate(fresh_world, out / "student.pt", ["teachers.cls.checkpoint=zoo/same.pt"], quiet=True)
    assert (
        "(teachers.cls.checkpoint): " in report["warnings"][0]
    )  # changed is said as a key, not as 'zoo/cls.pt changed'
    state = torch.load(weights, weights_only=False)
    torch.save({k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}, weights)
    capsys.readouterr()
    report = amalgam.evaluate(fresh_world, out / "student.pt")
    said = capsys.readouterr().out
    assert "cls: zoo/cls.pt changed" in said and "is scored against these teachers, not the build's" in said
    assert (
        report["warnings"][0].startswith("the recipe's teachers differ from those") and "cls: " in report["warnings"][0]
    )
    amalgam.render_report(out)
    assert "warning: teachers changed since the build (cls: " in capsys.readouterr().out


def test_report_follows_a_recipe_moved_with_its_world(fresh_world, tmp_path, capsys):
    # a trial: after the recipe and its world moved, amalgam report read the old folder and stopped on the
    # factory's import, with no way to name the new place but editing run.json
    import shutil

    from world import TINY_BUILD

    from amalgam.cli import main

    out = tmp_path / "run"
    assert main(["build", str(fresh_world), "--output", str(out), *TINY_BUILD]) == 0
    moved = tmp_path / "moved"
    moved.mkdir()
    for entry in fresh_world.parent.iterdir():
        if entry.name not in ("run", "moved"):
            shutil.move(str(entry), moved / entry.name)
    capsys.readouterr()
    assert main(["report", str(out)]) == 2
    assert "amalgam report --recipe names where the file is now" in capsys.readouterr().out
    assert main(["report", str(out), "--recipe", str(moved / "nowhere.yaml")]) == 2  # named: read, or said
    assert "recipe file not found" in capsys.readouterr().err
    assert main(["report", str(out), "--recipe", str(moved / fresh_world.name)]) == 0


def test_eval_says_an_eval_set_changed_since_the_build(fresh_world, tmp_path, capsys):
    # a trial: 5 of 1,000 val scenes removed moved every image a limit picked; eval scored other images than the
    # build's report with no word (a copied folder, other file times only, is the same set)
    import shutil

    from world import TINY_BUILD

    from amalgam.cli import main

    out = tmp_path / "run"
    assert main(["build", str(fresh_world), "--output", str(out), *TINY_BUILD]) == 0
    val = fresh_world.parent / "scenes" / "val"
    copied = tmp_path / "val-copy"
    shutil.copytree(val, copied)  # new file times
    shutil.rmtree(val)
    copied.rename(val)
    capsys.readouterr()
    amalgam.evaluate(fresh_world, out / "student.pt")
    assert "eval sets changed since the build" not in capsys.readouterr().out
    first = sorted((val / "images").iterdir())[0]
    for folder in ("images", "labels", "depth"):
        for path in (val / folder).glob(first.stem + ".*"):
            path.unlink()
    amalgam.evaluate(fresh_world, out / "student.pt")
    assert "note: eval sets changed since the build (scenes-val: other files" in capsys.readouterr().out


def test_student_pt_records_the_teachers_training_started_with(fresh_world, tmp_path, monkeypatch):
    # a review: fingerprints taken at save missed a teacher file rewritten while the student trained
    from world import TINY_BUILD

    from amalgam import pipeline
    from amalgam.cli import main
    from amalgam.io import file_digest

    weights = fresh_world.parent / "zoo" / "cls.pt"
    before, train = file_digest(weights), pipeline.engine.train

    def train_then_retrain(*args, **kwargs):
        result = train(*args, **kwargs)
        weights.write_bytes(weights.read_bytes() + b"\0")  # another file under the same path
        return result

    monkeypatch.setattr(pipeline.engine, "train", train_then_retrain)
    assert main(["build", str(fresh_world), "--output", str(tmp_path / "run"), *TINY_BUILD]) == 0
    recorded = torch.load(tmp_path / "run" / "student.pt", weights_only=False)["teachers"]["cls"]["files"]
    assert recorded == {"zoo/cls.pt": before}
