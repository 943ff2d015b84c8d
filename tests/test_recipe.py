"""Recipe parsing: one-line errors that name the key path, overrides and path resolution."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from amalgam.config.recipe import apply_override, load_recipe, parse_recipe, read_recipe_file
from amalgam.config.schema import InputSpec
from amalgam.errors import RecipeError


@pytest.fixture
def raw(world) -> dict:
    return yaml.safe_load(world.read_text())


def parse(raw: dict, world: Path):
    return parse_recipe(copy.deepcopy(raw), base_dir=world.parent)


def error_of(raw: dict, world: Path) -> str:
    with pytest.raises(RecipeError) as info:
        parse(raw, world)
    message = str(info.value)
    assert "\n" not in message, "errors are one line"
    return message


def test_world_recipe_parses(world):
    recipe = load_recipe(world)
    assert recipe.name == "tiny"
    assert list(recipe.teachers) == ["cls", "seg-a", "seg-b", "depth"]
    assert recipe.data.image_size == (32, 32)
    assert recipe.teachers["cls"].model.source == "python"
    assert recipe.teachers["cls"].model.kwargs() == {"factory": "models:tiny_cnn", "num_classes": 2, "in_channels": 1}
    assert recipe.amalgamation.task_weights == "uncertainty"


def test_minimal_recipe_uses_defaults(raw, world):
    minimal = {
        "name": "min",
        "data": {"image_size": [32, 64], "sources": {"scenes": {"type": "folder", "path": "scenes/train/images"}}},
        "teachers": {"depth": {"task": "depth", "model": {"from": "torchscript", "path": "zoo/depth.ts"}}},
    }
    recipe = parse(minimal, world)
    assert recipe.student.type == "branched" and recipe.train.epochs == 10 and recipe.seed == 0
    assert recipe.teachers["depth"].sources is None  # defaults to every source later
    assert recipe.output_dir() == world.parent / "runs" / "min"


def test_unknown_key_is_named(raw, world):
    raw["train"]["epoch"] = 3
    assert error_of(raw, world) == "train.epoch: unknown key (did you mean 'epochs'?)"


def test_an_unknown_key_names_the_near_known_one_at_any_depth(raw, world):
    raw["teachers"]["seg-a"]["inptu"] = {"size": [32, 32]}
    assert error_of(raw, world) == "teachers.seg-a.inptu: unknown key (did you mean 'input'?)"
    del raw["teachers"]["seg-a"]["inptu"]
    raw["zzz"] = 1  # nothing near it: no guess
    assert error_of(raw, world) == "zzz: unknown key"


def test_missing_required_key(raw, world):
    del raw["data"]
    assert error_of(raw, world) == "data: required key is missing"


def test_wrong_type_names_the_key_and_the_value(raw, world):
    raw["train"]["epochs"] = "many"
    message = error_of(raw, world)
    assert message.startswith("train.epochs: ") and "'many'" in message


def test_wrong_type_in_image_size(raw, world):
    raw["data"]["image_size"] = [32, -32]
    assert error_of(raw, world).startswith("data.image_size: expected two positive integers")


def test_unknown_smp_architecture(raw, world):
    raw["teachers"]["seg-a"]["model"] = {"from": "smp", "arch": "Unett", "encoder": "resnet18", "classes": 3}
    message = error_of(raw, world)
    assert message.startswith("teachers.seg-a.model.arch: unknown smp architecture 'Unett'")
    assert "Unet" in message.split("expected one of", 1)[1]


def test_unknown_model_source(raw, world):
    raw["teachers"]["seg-a"]["model"]["from"] = "keras"
    assert error_of(raw, world).startswith("teachers.seg-a.model: unknown model source 'keras'")


def test_unknown_task(raw, world):
    raw["teachers"]["cls"]["task"] = "detection"
    message = error_of(raw, world)
    assert message.startswith("teachers.cls.task: unknown task 'detection'")
    assert "classification, depth, segmentation" in message


def test_teacher_references_an_unknown_source(raw, world):
    raw["teachers"]["cls"]["sources"] = ["itmes"]
    assert error_of(raw, world).startswith("teachers.cls.sources: unknown source 'itmes'")


def test_an_empty_source_list_is_refused_not_read_as_every_source(raw, world):
    # [] was read like a left-out key: a segmenter taught on the classifier's item images
    raw["teachers"]["seg-a"]["sources"] = []
    assert error_of(raw, world) == (
        "teachers.seg-a.sources: [] names no source: list the data.sources it teaches on, or leave the key out for"
        " every one"
    )


def test_source_no_teacher_teaches_on(raw, world):
    raw["data"]["sources"]["extra"] = {"type": "folder", "path": "scenes/val/images"}
    assert error_of(raw, world) == "data.sources.extra: no teacher teaches on this source"


def test_eval_set_not_defined(raw, world):
    raw["teachers"]["depth"]["eval"] = "scenes-test"
    assert error_of(raw, world).startswith("teachers.depth.eval: unknown eval set 'scenes-test'")


def test_missing_checkpoint_is_named(raw, world):
    raw["teachers"]["seg-b"]["checkpoint"] = "zoo/nope.pt"
    message = error_of(raw, world)
    assert message.startswith("teachers.seg-b.checkpoint: file not found: ")
    assert message.endswith(str(world.parent / "zoo" / "nope.pt"))


def test_duplicate_yaml_key_is_rejected(world, tmp_path):
    text = world.read_text()
    dup = text.replace("teachers:\n", "teachers:\n  seg-a:\n    task: segmentation\n", 1)
    path = tmp_path / "dup.yaml"
    path.write_text(dup)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(info.value).startswith("duplicate key 'seg-a' at line ")


def test_image_size_must_be_divisible_by_32(raw, world):
    raw["data"]["image_size"] = [32, 48]
    assert error_of(raw, world) == (
        "data.image_size: [32, 48] must be divisible by the encoder's stride 32: the decoders of depth, segmentation"
        " double its deepest map back up (a student of classification alone takes any size)"
    )


def test_a_classification_student_takes_any_image_size(world, tmp_path):
    # a trial: a classification-only student was refused at 60x60 (README: "any size for a student without dense
    # tasks"), so a classifier trained at 299 px could not get a student at its size
    import amalgam

    raw = yaml.safe_load(world.read_text())
    raw["teachers"] = {"cls": raw["teachers"]["cls"]}
    raw["data"]["sources"] = {"items": raw["data"]["sources"]["items"]}
    raw["data"]["eval"] = {"items-val": raw["data"]["eval"]["items-val"]}
    raw["data"]["image_size"] = [36, 44]
    raw["student"]["branch_at"] = 0
    path = world.parent / "cls-only-36.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    report = amalgam.build(
        path, overrides=["train.epochs=1", "train.samples_per_epoch=8"], output=tmp_path / "run"
    ).report
    assert [t["teacher"] for t in report["tasks"]] == ["cls"] and report["tasks"][0]["student_value"] is not None


def test_labels_required_for_a_labelled_task(raw, world):
    del raw["teachers"]["cls"]["labels"]
    assert error_of(raw, world).startswith("teachers.cls.labels: required for a classification teacher")


def test_labels_refused_for_depth(raw, world):
    raw["teachers"]["depth"]["labels"] = ["near", "far"]
    assert error_of(raw, world) == "teachers.depth.labels: a depth teacher has no label space"


def test_a_teacher_with_one_label_stops_and_says_how_to_declare_a_binary_model(raw, world):
    # softmax over one channel is 1 everywhere: the teacher taught nothing and scored 1.0
    raw["teachers"]["cls"]["labels"] = ["person"]
    assert error_of(raw, world).startswith(
        "teachers.cls.labels: one label (person) teaches nothing (its softmax is 1 everywhere): for a one-channel"
        " binary model give [background, person] with output: binary"
    )


def test_mean_and_std_on_the_0_255_scale_stop_saying_divide_by_255(raw, world):
    # an mmseg config's values: taken as they are, every input was a near-constant -2
    raw["teachers"]["seg-a"]["input"] = {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}
    assert error_of(raw, world) == (
        "teachers.seg-a.input: mean [123.675, 116.28, 103.53] and std [58.395, 57.12, 57.375] are not on the"
        " [0, 1] scale images reach a teacher in; values from a 0-255 config (mmseg, mmpretrain, Caffe) divide by 255"
    )


def test_a_zero_std_stops_naming_the_key(raw, world):
    # it divided every input to inf, then reported NaN outputs as "a diverged checkpoint"
    raw["teachers"]["seg-a"]["input"] = {"std": [0.2, 0.0, 0.2]}
    assert error_of(raw, world) == "teachers.seg-a.input: std [0.2, 0.0, 0.2] must be > 0 on every channel"


def test_background_must_be_one_of_the_labels(raw, world):
    raw["teachers"]["seg-a"]["background"] = "void"
    assert error_of(raw, world) == "teachers.seg-a.background: 'void' is not one of the teacher's labels"


def test_unknown_output_kind(raw, world):
    raw["teachers"]["depth"]["output"] = "disparity"
    assert error_of(raw, world) == "teachers.depth.output: expected one of: metric, inverse, log, relative, affine"


def test_input_mean_must_match_channels(raw, world):
    raw["teachers"]["cls"]["input"]["mean"] = [0.5, 0.5, 0.5]
    said = error_of(raw, world)
    assert said.startswith("teachers.cls.input: mean and std need 1 value")
    assert said.endswith("e.g. mean: [0.5], std: [0.5]")  # a newcomer was told no value to give


def test_one_value_mean_and_std_with_the_default_channels_ask_for_channels_1(raw, world):
    # a trial: a grey network's one-value mean and std without channels: 1 was told to give three values
    raw["teachers"]["cls"]["input"] = {"size": [16, 16], "mean": [0.2], "std": [0.3]}
    said = error_of(raw, world)
    assert said.startswith("teachers.cls.input: mean and std need 3 values (channels: 3)")
    assert said.endswith("; a network of 1 input channel? set channels: 1")
    raw["teachers"]["cls"]["input"]["channels"] = 3  # said on purpose: no such guess
    assert "set channels" not in error_of(raw, world)


def test_unknown_student_encoder(raw, world):
    raw["student"]["encoder"] = "resnet19"
    assert error_of(raw, world).startswith("student.encoder: unknown smp encoder 'resnet19'")


def test_apply_override_sets_nested_keys_parsed_as_yaml(raw):
    apply_override(raw, "train.epochs=3")
    apply_override(raw, "student.type=compact")
    apply_override(raw, "amalgamation.taps={seg-a: body}")
    apply_override(raw, "brand.new.key=[1, 2]")
    assert raw["train"]["epochs"] == 3
    assert raw["student"]["type"] == "compact"
    assert raw["amalgamation"]["taps"] == {"seg-a": "body"}
    assert raw["brand"] == {"new": {"key": [1, 2]}}


def test_bad_overrides_are_rejected(raw):
    with pytest.raises(RecipeError, match=r"^--set: expected key.path=value, got 'train.epochs'$"):
        apply_override(raw, "train.epochs")
    with pytest.raises(RecipeError, match=r"^name: is not a mapping"):
        apply_override(raw, "name.first=x")


def test_load_recipe_applies_overrides_before_validation(world):
    recipe = load_recipe(world, ["train.epochs=1", "student.encoder=resnet34"])
    assert recipe.train.epochs == 1 and recipe.student.encoder == "resnet34"
    with pytest.raises(RecipeError, match=r"^train.epochs: "):
        load_recipe(world, ["train.epochs=0"])
    with pytest.raises(RecipeError, match=r"^train.epoch: unknown key \(did you mean 'epochs'\?\)$"):
        load_recipe(world, ["train.epoch=1"])


def test_set_keys_of_other_types_are_refused_where_they_would_be_ignored(world):
    with pytest.raises(RecipeError, match=r"^data.sources.scenes.depth_scale: only for dense sets"):
        load_recipe(world, ["data.sources.scenes.depth_scale=256"])
    assert load_recipe(world, ["data.eval.scenes-val.depth_scale=256"]).data.eval["scenes-val"].depth_scale == 256
    with pytest.raises(RecipeError, match=r"^data.sources.fm.exif: applies to image files"):
        load_recipe(world, ["data.sources.fm={type: torchvision, name: FashionMNIST, root: x, exif: stored}"])


def test_relative_paths_resolve_against_the_recipe_folder(world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    recipe = load_recipe(world)
    folder = world.resolve().parent
    assert recipe.base_dir == folder
    assert recipe.resolve(recipe.teachers["cls"].checkpoint) == folder / "zoo" / "cls.pt"
    assert recipe.resolve(recipe.data.sources["scenes"].path) == folder / "scenes" / "train" / "images"
    assert recipe.output_dir() == folder / "runs" / "tiny"
    assert recipe.resolve(Path("/abs/file.pt")) == Path("/abs/file.pt")


def test_missing_and_invalid_recipe_files(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(RecipeError, match="is not valid YAML: line 2, column 1: "):
        load_recipe(bad)
    tabbed = tmp_path / "tab.yaml"
    tabbed.write_text("name: x\ntrain:\n\tepochs: 1\n")
    with pytest.raises(RecipeError, match=r"line 3, column 1: found character .* \(indent with spaces, not tabs\)"):
        load_recipe(tabbed)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(RecipeError, match="must be a YAML mapping"):
        load_recipe(listing)


def test_base_recipe_is_merged_under_the_one_built(fresh_world):
    folder = fresh_world.parent
    (folder / "wide.yaml").write_text(
        "base: recipe.yaml\nname: wide\nstudent: {decoder_channels: [32, 16, 8, 8, 8]}\n"
        "teachers: {seg-a: {wrap: {type: multi_transform, flip: true}}}\n"
    )
    (folder / "longer.yaml").write_text("base: wide.yaml\ntrain: {epochs: 7}\n")
    recipe = load_recipe(folder / "longer.yaml", ["train.lr=0.5"])
    original = load_recipe(fresh_world)
    assert recipe.name == "wide" and recipe.train.epochs == 7 and recipe.train.lr == 0.5
    assert recipe.student.decoder_channels == [32, 16, 8, 8, 8]
    assert recipe.student.type == original.student.type and recipe.student.branch_at == original.student.branch_at
    seg_a = recipe.teachers["seg-a"]
    assert seg_a.wrap.type == "multi_transform" and seg_a.labels == original.teachers["seg-a"].labels
    assert list(recipe.teachers) == list(original.teachers)
    assert recipe.train.batch_size == original.train.batch_size


def test_an_empty_mapping_in_a_variant_clears_the_base_entry(fresh_world):
    folder = fresh_world.parent
    (folder / "narrow.yaml").write_text("base: recipe.yaml\nstudent: {encoder_args: {channels: [8, 8, 16, 16]}}\n")
    (folder / "plain.yaml").write_text("base: narrow.yaml\nstudent: {encoder_args: {}, branch_at: 2}\n")
    assert load_recipe(folder / "narrow.yaml").student.encoder_args == {"channels": [8, 8, 16, 16]}
    plain = load_recipe(folder / "plain.yaml")
    assert plain.student.encoder_args == {} and plain.student.branch_at == 2
    (folder / "same.yaml").write_text("base: narrow.yaml\ntrain: {}\nstudent: {search: {}}\n")  # sections: no change
    same, narrow = load_recipe(folder / "same.yaml"), load_recipe(folder / "narrow.yaml")
    assert same.train == narrow.train and same.student == narrow.student


def test_input_null_in_a_variant_drops_the_bases_input_for_the_defaults(fresh_world):
    # a trial: a variant could not undo its base's teacher input (null was refused as "not a dictionary")
    folder = fresh_world.parent
    (folder / "sized.yaml").write_text("base: recipe.yaml\nteachers: {seg-a: {input: {size: [24, 24]}}}\n")
    (folder / "unsized.yaml").write_text("base: sized.yaml\nteachers: {seg-a: {input: null}}\n")
    assert load_recipe(folder / "sized.yaml").teachers["seg-a"].input.size == (24, 24)
    unsized = load_recipe(folder / "unsized.yaml").teachers["seg-a"]
    assert unsized.input == InputSpec() and unsized.labels == load_recipe(fresh_world).teachers["seg-a"].labels
    assert load_recipe(folder / "sized.yaml", ["teachers.seg-a.input=null"]).teachers["seg-a"].input == InputSpec()


def test_a_null_teacher_or_set_in_a_variant_drops_the_bases(fresh_world):
    # a trial: a variant could not leave out one of its base's teachers ("not a valid dictionary")
    folder = fresh_world.parent
    base = load_recipe(fresh_world)
    (folder / "fewer.yaml").write_text("base: recipe.yaml\nteachers: {seg-b: null}\n")
    fewer = load_recipe(folder / "fewer.yaml")
    assert list(fewer.teachers) == [t for t in base.teachers if t != "seg-b"]
    assert list(load_recipe(fresh_world, ["teachers.seg-b=null"]).teachers) == list(fewer.teachers)


def test_base_is_found_relative_to_the_file_that_names_it(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "base.yaml").write_text("name: b\ntrain: {epochs: 2, lr: 0.1}\n")
    (tmp_path / "shared" / "mid.yaml").write_text("base: base.yaml\ntrain: {lr: 0.2}\n")
    (tmp_path / "top.yaml").write_text("base: shared/mid.yaml\ntrain: {batch_size: 3}\n")
    assert read_recipe_file(tmp_path / "top.yaml") == {"name": "b", "train": {"epochs": 2, "lr": 0.2, "batch_size": 3}}


def test_base_errors_name_the_file(world, tmp_path):
    (tmp_path / "a.yaml").write_text("base: missing.yaml\nname: a\n")
    with pytest.raises(RecipeError, match=r"^base: recipe file not found: .*missing\.yaml \(the base of .*a\.yaml\)$"):
        load_recipe(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("base: c.yaml\n")
    (tmp_path / "c.yaml").write_text("base: b.yaml\n")
    with pytest.raises(
        RecipeError, match=r"^base: recipes name each other as base: .*b\.yaml -> .*c\.yaml -> .*b\.yaml$"
    ):
        load_recipe(tmp_path / "b.yaml")
    (tmp_path / "d.yaml").write_text("base: [x]\n")
    with pytest.raises(RecipeError, match=r"^base: expected the path of a recipe file"):
        load_recipe(tmp_path / "d.yaml")
    (tmp_path / "e.yaml").write_text(f"base: {world}\ntrain: {{epoch: 3}}\n")
    with pytest.raises(RecipeError, match=r"^train\.epoch: unknown key \(did you mean 'epochs'\?\)$"):
        load_recipe(tmp_path / "e.yaml")


def test_the_benchmark_recipe_is_its_quick_form_with_the_documented_settings():
    # recipes/fashion_scenes.yaml is documented (its header, README) as the quick recipe with these
    # overrides; it must stay that configuration. Raw mappings: the zoo the models would be checked
    # against is not in a clean checkout.
    recipes = Path(__file__).resolve().parents[1] / "recipes"
    full = read_recipe_file(recipes / "fashion_scenes.yaml")
    quick = read_recipe_file(recipes / "fashion_scenes_4ep.yaml")
    flip = "{type: multi_transform, flip: true}"
    for assignment in [
        "name=fashion_scenes",
        "output=../runs/fashion_scenes",
        "train.epochs=10",
        "train.samples_per_epoch=12000",
        "train.eval_every=5",
        *(f"teachers.{t}.wrap={flip}" for t in ("cls-a", "cls-b", "seg-tops", "seg-rest", "depth")),
    ]:
        apply_override(quick, assignment)
    assert full == quick
    compact = read_recipe_file(recipes / "fashion_scenes_compact.yaml")
    assert (
        compact["student"]["type"] == "compact"
        and compact["teachers"] == read_recipe_file(recipes / "fashion_scenes_4ep.yaml")["teachers"]
    )


@pytest.mark.parametrize("widths", [[16, 0, 8, 8], [16, -4, 8, 8]])
def test_decoder_widths_must_be_positive(raw, world, widths):
    # a 0 passed inspect and crashed the build; a negative one gave a traceback
    raw["student"]["decoder_channels"] = widths
    assert error_of(raw, world) == f"student.decoder_channels: positive widths (one per decoder block), got {widths}"


def test_a_branch_point_out_of_range_is_said_once(raw, world):
    raw["student"]["branch_at"] = 6
    assert error_of(raw, world) == "student.branch_at: branch points lie in 0-5 (encoder stages shared), got 6"


def test_labels_yaml_read_as_numbers_are_told_to_be_quoted(raw, world):
    raw["teachers"]["cls"]["labels"] = list(range(len(raw["teachers"]["cls"]["labels"])))
    assert error_of(raw, world).endswith("got 0 (YAML read it as a number or null: quote names such as '0')")


def test_a_hypercolumn_string_and_a_tasks_branch_point_out_of_range_are_said_plainly(world):
    # a trial: 'student.hypercolumn.bool: Input should be a valid boolean'; a per-task branch point out of range
    # named neither the task nor the value
    from amalgam.config.recipe import load_recipe

    with pytest.raises(RecipeError, match=r"^student\.hypercolumn: expected true, false or a list of dense tasks"):
        load_recipe(world, ["student.hypercolumn=segmentation"])
    with pytest.raises(RecipeError, match=r"^student\.branch_at: branch points lie in 0-5 .*got segmentation: 7"):
        load_recipe(world, ["student.branch_at={classification: 2, segmentation: 7, depth: 4}"])


def test_init_with_a_searched_tree_is_refused_before_the_search(world, tmp_path):
    # a trial: inspect passed it; the build searched, then refused the init's other tree
    from amalgam.config.recipe import load_recipe

    with pytest.raises(RecipeError, match=r"^student\.branch_at: auto searches a tree, and student\.init holds"):
        load_recipe(world, ["student.branch_at=auto", f"student.init={tmp_path / 'student.pt'}"])


def test_a_timm_tag_on_the_students_encoder_is_said_to_download_nothing(world):
    # a trial: tu-resnet10t.c3_in1k trained from random weights, its reports naming the tag as if pretrained
    from amalgam.config.checks import unused_student_keys
    from amalgam.config.recipe import load_recipe

    (line,) = unused_student_keys(load_recipe(world, ["student.encoder=tu-resnet10t.c3_in1k"]))
    assert line.startswith("student.encoder: its tag 'c3_in1k' names pretrained weights, which a student never")


@pytest.mark.parametrize("value", [1500000, 1001])
def test_a_parameter_budget_written_as_a_count_is_refused(raw, world, value):
    # a trial wrote student.budget.params: 1500000 meaning 1.5 M parameters: read as a share, the student could
    # be 1.5 million times the teachers, and the largest rung (16x the teachers) was chosen
    raw["student"]["budget"] = {"params": value}
    assert error_of(raw, world) == (
        "student.budget.params: expected a share of all teachers' parameters (0.5: half of them), not a count: a share"
        " over 1000 limits nothing (null: no limit); for a count, divide it by the teachers' (amalgam inspect says"
        " theirs), got "
        f"{value}"
    )
    raw["student"]["budget"] = {"params": 1000}  # tiny teachers beside the smallest student: taken
    assert parse(raw, world).student.budget.params == 1000


def test_a_background_typed_in_another_unicode_form_is_the_label(raw, world):
    # a trial: labels are read composed (NFC), background was not: 'Café' decomposed "is not one of the labels"
    raw["teachers"]["seg-a"]["labels"][0] = "Caf\u00e9"
    raw["teachers"]["seg-a"]["background"] = "Cafe\u0301"
    assert parse(raw, world).teachers["seg-a"].background == "Caf\u00e9"
