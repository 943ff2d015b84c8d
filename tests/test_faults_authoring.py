"""Recipe-authoring faults of a trial (stop 49): settings a recipe writer slips on that were read silently
otherwise (an eval set's split, $VAR paths, a linked recipe's base, negative weights, a key inside model:),
YAML 1.1's readings (1e-2, merge keys) and files in another encoding."""

from __future__ import annotations

import os

import pytest
import yaml

from amalgam.config.recipe import load_recipe
from amalgam.distill.plan import build_plan
from amalgam.errors import AmalgamError, RecipeError


def test_a_torchvision_eval_set_without_its_split_stops(world):
    # it read the training split: a trial's classifier scored 0.96 on its own training images
    fm = "{type: torchvision, name: FashionMNIST, root: fm, limit: 20}"
    with pytest.raises(
        RecipeError, match=r"^data.eval.fm.split: left out, it reads the training split, .*split: test;"
    ):
        load_recipe(world, [f"data.eval.fm={fm}"])
    assert load_recipe(world, [f"data.eval.fm={fm[:-1]}, split: test}}"]).data.eval["fm"].split == "test"
    # a review: a dataset of one set (FakeData) has no split to name, and split: test is refused for it
    fake = "{type: torchvision, name: FakeData, root: ., args: {size: 4, num_classes: 2}}"
    assert load_recipe(world, [f"data.eval.fake={fake}"]).data.eval["fake"].split == "train"


@pytest.mark.parametrize("weight", ["-1", "true", ".inf", "[1]"])
def test_a_task_weight_that_is_no_finite_number_at_least_zero_stops(world, weight):
    # -1 trained its term upwards without a word; yes read as 1; .inf was told to be "a valid string"
    with pytest.raises(RecipeError, match=r"amalgamation.task_weights.*cls: expected a finite number >= 0, got"):
        load_recipe(world, [f"amalgamation.task_weights={{cls: {weight}, seg-a: 1}}"])
    assert load_recipe(world, ["amalgamation.task_weights={cls: 0, seg-a: 1e-1}"]).amalgamation.task_weights == {
        "cls": 0.0,
        "seg-a": 0.1,
    }


def test_yaml_reads_exponents_without_a_dot_as_numbers_and_takes_merge_keys(world):
    # YAML 1.1 read `sigma: 1e-2` as a string ("expected numbers, got sigma='1e-2'"); `<<: *anchor` was
    # "not valid YAML"
    from amalgam.config.load import UniqueKeyLoader

    read = yaml.load("lr: 1e-3\nwd: 5E-5\nbig: 2e+3\nname: 1e\nn: 10\n", Loader=UniqueKeyLoader)
    assert read == {"lr": 0.001, "wd": 5e-5, "big": 2000.0, "name": "1e", "n": 10}
    merged = yaml.load("a: &a {x: 1, y: 2}\nb:\n  <<: *a\n  y: 3\n", Loader=UniqueKeyLoader)
    assert merged["b"] == {"x": 1, "y": 3}
    with pytest.raises(RecipeError, match="duplicate key 'y' at line 5"):  # explicit duplicates still stop
        yaml.load("a: &a {x: 1}\nb:\n  <<: *a\n  y: 3\n  y: 4\n", Loader=UniqueKeyLoader)
    assert load_recipe(world, ["student.encoder_args={drop_path_rate: 1e-2}"]).student.encoder_args == {
        "drop_path_rate": 0.01
    }


def test_a_recipe_or_labels_file_in_another_encoding_stops_in_one_line(world, tmp_path):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(f"base: {world}\nname: caf\xe9\n".encode("latin-1"))
    with pytest.raises(AmalgamError, match=r"latin.yaml is not UTF-8 text \(byte 0xe9 at offset \d+\): save it as"):
        load_recipe(latin)
    (tmp_path / "labels.txt").write_bytes("chat\nchien\xe9\n".encode("latin-1"))
    with pytest.raises(AmalgamError, match=r"labels.txt is not UTF-8 text"):
        build_plan(
            load_recipe(world, [f"teachers.cls.labels_file={tmp_path / 'labels.txt'}", "teachers.cls.labels=null"]),
            with_data=False,
            log=lambda m: None,
        )


def test_environment_variables_in_paths_are_expanded_and_an_unset_one_stops(world, monkeypatch, tmp_path):
    # `output: $RT/runs/p2` wrote into a folder named '$RT' beside the recipe
    monkeypatch.setenv("AMALGAM_TEST_RUNS", str(tmp_path))
    recipe = load_recipe(world, ["output=$AMALGAM_TEST_RUNS/runs/x"])
    assert recipe.output_dir() == tmp_path / "runs" / "x"
    assert load_recipe(world, ["output=${AMALGAM_TEST_RUNS}/y"]).output_dir() == tmp_path / "y"
    monkeypatch.delenv("AMALGAM_TEST_RUNS")
    with pytest.raises(AmalgamError, match=r"the environment variable AMALGAM_TEST_RUNS is not set"):
        load_recipe(world, ["output=$AMALGAM_TEST_RUNS/runs/x"]).output_dir()


def test_a_linked_recipe_reads_its_base_beside_the_file_it_links_to(fresh_world, tmp_path):
    # the base was read beside the link, every other path beside the file linked to
    child = fresh_world.parent / "child.yaml"
    child.write_text("base: recipe.yaml\nname: child\n")
    link = tmp_path / "elsewhere" / "child.yaml"
    link.parent.mkdir()
    link.symlink_to(child)
    recipe = load_recipe(link)
    assert recipe.name == "child" and recipe.base_dir == child.parent
    assert recipe.teachers.keys() == load_recipe(fresh_world).teachers.keys()


def test_a_teachers_key_written_inside_its_model_is_refused_or_said(fresh_world):
    # `model: {from: torchscript, output: inverse}` read the depth teacher as metric without a word
    with pytest.raises(RecipeError, match=r"output: a torchscript model takes path only, nothing is passed to it \("):
        build_plan(load_recipe(fresh_world, ["teachers.depth.model.output=inverse"]), with_data=False, log=print)
    (fresh_world.parent / "kw_models.py").write_text(
        "import models\n\ndef tiny_dense(out_channels, **kwargs):\n    return models.tiny_dense(out_channels)\n"
    )
    sets = ["teachers.seg-a.model.factory=kw_models:tiny_dense", "teachers.seg-a.model.output_scale=2"]
    plan = build_plan(load_recipe(fresh_world, sets), with_data=False, log=lambda m: None)  # **kwargs took it
    line = "teachers.seg-a.model.output_scale is passed to the model's constructor; amalgam reads"
    assert any(line in w for w in plan.teacher_warnings), plan.teacher_warnings


def test_environment_variables_reach_model_file_args(world, monkeypatch):
    from amalgam.teachers.model_sources import file_kwargs

    monkeypatch.setenv("AMALGAM_TEST_ZOO", str(world.parent / "zoo"))
    found = file_kwargs({"weights": "$AMALGAM_TEST_ZOO/cls.pt", "name": "$UNSET_AMALGAM_NAME"}, world.parent)
    assert list(found) == ["weights"] and found["weights"][1] == world.parent / "zoo" / "cls.pt"
    assert os.environ.get("UNSET_AMALGAM_NAME") is None


def test_keys_a_set_or_the_recipe_does_not_read_are_refused_or_said(world):
    # a folder source with split/root/name, an eval set's weight, taps without a feature term and sgd's
    # momentum beside adamw all trained as if unwritten, without a word
    for key, value, said in (
        ("data.sources.scenes.split", "test", "only for torchvision sets, not 'folder', which reads every image"),
        ("data.sources.scenes.root", "x", "only for torchvision sets (the dataset's folder), not 'folder'"),
        ("data.eval.items-val.weight", "3", "eval sets are scored whole, not sampled"),
    ):
        with pytest.raises(
            RecipeError, match=rf"^{key.replace('.', '[.]')}: {said.replace('(', '[(]').replace(')', '[)]')}"
        ):
            load_recipe(world, [f"{key}={value}"])
    said: list[str] = []
    sets = ["amalgamation.taps={seg-a: body}", "train.momentum=0.5"]
    build_plan(load_recipe(world, sets), with_data=False, log=said.append)
    assert "amalgamation.taps: not used: only a feature term reads it, and amalgamation.features is none" in said
    assert "train.momentum: not used: sgd's, and train.optimizer is adamw" in said


def test_the_log_and_inspect_say_the_distillation_and_training_settings_defaults_marked(world):
    # class_balance and focal changed their defaults and no line said what a build trained with
    from amalgam.training.schedule import distillation_line, schedule_lines

    recipe = load_recipe(world, ["amalgamation.class_balance=0", "train.lr=4e-3"])
    lines = schedule_lines(recipe.train, 100, [])
    assert distillation_line(recipe.amalgamation) == (
        "distillation: temperature 2 (default), class_balance 0, focal 1 (default since 2026-12-02; 0 before),"
        " features none (default)"
    )  # a trial of an old recipe on today's code read "focal 1 (default)" and nothing of the change
    assert lines[1] == (
        "  training: optimizer adamw (default), lr 0.004, schedule cosine (default), batch_size 4, weight_decay"
        " 0.0001 (default)"
    )


def test_a_variant_that_renamed_itself_is_told_the_finished_run_is_its_bases(world, built_run):
    # a variant keeping its base's output was told "pass --force", which would delete the base's run
    import amalgam

    with pytest.raises(AmalgamError, match=r"already holds a finished run of recipe 'tiny', not this 'tiny-v2' \("):
        amalgam.build(world, ["name=tiny-v2"], output=built_run, quiet=True)
    with pytest.raises(AmalgamError, match=r"already holds a finished run: pass --force"):
        amalgam.build(world, output=built_run, quiet=True)


def test_a_name_yaml_reads_as_a_boolean_says_to_quote_it(world):
    # a source named `no:` read "data.sources.0.[key]: Input should be a valid string, got False"
    with pytest.raises(RecipeError, match=r"^data.sources: a name YAML reads as bool False .*: quote it"):
        load_recipe(world, ["data.sources={no: {type: folder, path: scenes/train/images}}"])


def test_a_misspelt_teacher_or_source_name_in_an_override_says_the_one_it_is_close_to(world):
    # `teachers: {seg_a: {input: ...}}` in a variant read "teachers.seg_a.task: required key is missing"
    with pytest.raises(RecipeError, match=r"^teachers.seg_a.task: required key is missing \(did you mean 'seg-a'\?"):
        load_recipe(world, ["teachers.seg_a.input={size: [32, 32]}"])
    with pytest.raises(RecipeError, match=r"^data.sources.scene.type: required key is missing \(did you mean 'scenes'"):
        load_recipe(world, ["data.sources.scene.limit=4"])


def test_review_fixes_of_the_authoring_checks(world, fresh_world, monkeypatch):
    # a review of the checks above: each fired on a legitimate recipe, or an override leaked
    from amalgam.api import _yaml_value
    from amalgam.config.load import UniqueKeyLoader, apply_override, read_recipe_file
    from amalgam.config.schema import expand_path

    # a --set on a teacher made with a merge key changed the teacher it was merged from too
    text = fresh_world.read_text().replace("  seg-b:\n", "  seg-b: &segb\n")
    fresh_world.write_text(text.replace("student:\n", "  seg-c:\n    <<: *segb\nstudent:\n"))
    raw = read_recipe_file(fresh_world)
    apply_override(raw, "teachers.seg-c.model.out_channels=7")
    assert raw["teachers"]["seg-b"]["model"]["out_channels"] == 2
    assert raw["teachers"]["seg-c"]["model"]["out_channels"] == 7
    # a file named with a '$', beside the recipe: taken as written wherever amalgam runs from
    (fresh_world.parent / "zoo" / "seg$a.pt").write_bytes(b"x")
    monkeypatch.chdir("/")
    assert expand_path("zoo/seg$a.pt", fresh_world.parent) == __import__("pathlib").Path("zoo/seg$a.pt")
    # a Python string override that YAML 1.2 would read as a number stays a string
    assert yaml.load(_yaml_value("5e-4"), Loader=UniqueKeyLoader) == "5e-4"
    # a gate ensemble reads student_tap without a feature term: not said unused
    from amalgam.config.checks import unused_settings

    gate = load_recipe(world, ["amalgamation.student_tap=encoder"])
    gate.amalgamation.ensemble = type(gate.amalgamation).model_fields["ensemble"].annotation.__args__[0](type="gate")
    assert not any("student_tap" in line for line in unused_settings(gate))
    # a factory naming `output` among its own parameters: its own, not amalgam's slip
    (fresh_world.parent / "own_output.py").write_text(
        "import models\n\ndef tiny_dense(out_channels, output='logits'):\n    return models.tiny_dense(out_channels)\n"
    )
    sets = ["teachers.seg-a.model.factory=own_output:tiny_dense", "teachers.seg-a.model.output=logits"]
    plan = build_plan(load_recipe(fresh_world, sets), with_data=False, log=lambda m: None)
    assert not any("model.output is passed" in w for w in plan.teacher_warnings)


def test_a_labels_file_over_a_bases_labels_says_how_to_drop_them(fresh_world):
    # a variant writing only labels_file read "give labels or labels_file, not both": the labels were its base's
    (fresh_world.parent / "cls_labels.txt").write_text("kitten\npuppy\n")
    with pytest.raises(RecipeError, match=r"not both \(a variant or --set .* write teachers.cls.labels: null beside"):
        load_recipe(fresh_world, ["teachers.cls.labels_file=cls_labels.txt"])
    assert load_recipe(fresh_world, ["teachers.cls.labels_file=cls_labels.txt", "teachers.cls.labels=null"])


def test_the_teacher_keys_said_inside_a_python_model_are_teacher_keys():
    # the plan's warning and the TorchScript refusal read the same schema: a key renamed there renames here
    from amalgam.config.schema import AMALGAM_TEACHER_KEYS, TeacherConfig

    assert set(AMALGAM_TEACHER_KEYS) <= set(TeacherConfig.model_fields)


def test_distillation_settings_moved_from_their_defaults_are_said_and_sgds_momentum_too(world):
    # README: each setting said, set or not; pseudo_labels, domain_weights, ... went unsaid even when set
    from amalgam.training.schedule import distillation_line, schedule_lines

    sets = ["amalgamation.pseudo_labels=0.5", "amalgamation.temperature_after_projection=true"]
    recipe = load_recipe(world, [*sets, "train.optimizer=sgd", "train.momentum=0.8"])
    line = distillation_line(recipe.amalgamation)
    assert line.endswith(", temperature_after_projection True, pseudo_labels 0.5"), line
    assert "domain_weights" not in line and "feature_weight" not in line  # at their defaults: not said
    assert schedule_lines(recipe.train, 100, [])[1].endswith(", momentum 0.8")


def test_a_refused_value_our_validator_names_is_not_named_twice(world):
    with pytest.raises(RecipeError) as caught:
        load_recipe(world, ["device=cuda:x"])
    assert str(caught.value).count("got 'cuda:x'") == 1, caught.value
