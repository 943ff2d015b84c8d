"""``student.encoder: auto``: the largest rung of the ladder whose student fits ``student.budget``."""

from __future__ import annotations

import json

import pytest
import torch
from world import TINY_BUILD

from amalgam.cli import main
from amalgam.config.recipe import load_recipe
from amalgam.config.schema import BudgetConfig, StudentConfig
from amalgam.distill.plan import Plan, unify_tasks
from amalgam.errors import RecipeError
from amalgam.students.build import StudentSpec, build_student, count_params
from amalgam.students.encoders import StagedEncoder, build_encoder
from amalgam.students.serialize import load_student
from amalgam.students.sizing import LADDER, choose_encoder, ladder_for, price_rung
from amalgam.students.tree import STAGES

HEADS = {"classification": 2, "segmentation": 3}
SIZE = (32, 32)


def auto(params: float | None = 0.5, **student) -> StudentConfig:
    return StudentConfig(budget=BudgetConfig(params=params), **student)


def rung_named(encoder: str):
    return next(r for r in LADDER if r.encoder == encoder)


def test_auto_is_the_default_encoder_and_the_ladder_runs_largest_first():
    assert StudentConfig().encoder == "auto" and StudentConfig().decoder_channels is None
    assert LADDER[0].encoder == "resnet18"  # a generous budget keeps the student of old
    sizes = [price_rung(r, auto(), HEADS, SIZE, timed=False).params for r in LADDER]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)


def test_rungs_narrow_the_coarse_decoder_blocks_first():
    """8 channels in the two finest blocks lost whole classes on the shapes world (docs/benchmarks.md):
    every rung but the last resort keeps them at 16 or more."""
    *rungs, last = LADDER
    assert all(min(r.decoder_channels[-2:]) >= 16 for r in rungs)
    assert last.decoder_channels == (8,) * 5


@pytest.mark.parametrize("name", sorted({r.encoder for r in LADDER}))
def test_every_rungs_encoder_splits_into_its_own_features(name):
    torch.manual_seed(0)
    encoder = build_encoder(name).eval()
    torch.manual_seed(0)
    staged = StagedEncoder(name).eval()  # a branched student's stages
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        wanted, got = encoder(x), [x, *staged.forward_range(x, 0, 5)]
    assert len(got) == len(wanted) and all(torch.equal(a, b) for a, b in zip(got, wanted))


def test_without_a_limit_auto_gives_the_top_rung():
    choice = choose_encoder(auto(params=None), HEADS, 1000, SIZE)
    assert choice.rung == LADDER[0] and choice.above is None
    assert "the top rung" in choice.describe() and "no student.budget limit;" in choice.describe()
    param_free = choose_encoder(auto(), HEADS, 0, SIZE)  # fixed filters, oracles: a share of nothing
    assert param_free.rung == LADDER[0] and "(the teachers have no parameters)" in param_free.describe()


def test_the_largest_rung_within_the_budget_wins_and_the_one_above_is_said():
    small, big = (
        price_rung(rung_named(e), auto(), HEADS, SIZE, False).params for e in ("tu-lcnet_050", "tu-lcnet_075")
    )
    teachers = small + big  # half of it lies between the two
    choice = choose_encoder(auto(), HEADS, teachers, SIZE)
    assert choice.rung == rung_named("tu-lcnet_050") and choice.price.params == small
    assert choice.above[0] == rung_named("tu-lcnet_075") and choice.above[1].params == big
    line = choice.describe()
    assert line.startswith(f"student.encoder auto -> tu-lcnet_050 (decoders [32, 24, 16, 16, 16]; {small:,} params")
    assert f"{small / teachers:.0%} of the teachers'" in line and "the next rung up, tu-lcnet_075" in line


def test_an_impossible_budget_is_one_line_naming_the_smallest_rung():
    smallest = price_rung(LADDER[-1], auto(), HEADS, SIZE, False).params
    with pytest.raises(RecipeError) as caught:
        choose_encoder(auto(), HEADS, 1000, SIZE)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("student.budget: no rung of student.encoder: auto fits")
    assert f"the smallest, {LADDER[-1].describe()}, has {smallest:,} params" in message
    assert "params <= 500 (50% of the teachers' 1,000)" in message


def test_the_recipes_decoders_are_kept_and_only_the_encoder_climbs_down():
    mine = auto(params=None, decoder_channels=[8, 8, 8, 8, 8])
    assert [r.decoder_channels for r in ladder_for(mine)] == [(8,) * 5] * len(ladder_for(mine))
    assert len({r.encoder for r in ladder_for(mine)}) == len(ladder_for(mine))  # each encoder once
    choice = choose_encoder(mine, HEADS, 1000, SIZE)
    assert choice.rung.decoder_channels == (8,) * 5 and "the recipe's decoders [8, 8, 8, 8, 8]" in choice.describe()


def test_branch_at_auto_prices_the_cheapest_tree():
    cfg = auto(branch_at="auto")
    shared = price_rung(LADDER[-1], cfg, HEADS, SIZE, False).params
    spec = StudentSpec("branched", LADDER[-1].encoder, STAGES, list(LADDER[-1].decoder_channels), HEADS)
    assert shared == count_params(build_student(spec))
    at_3 = price_rung(LADDER[-1], auto(branch_at=3), HEADS, SIZE, False).params
    assert shared < at_3
    choice = choose_encoder(cfg, HEADS, 2 * shared, SIZE)  # the cheapest tree fits; branch_at 3 would not
    assert choice.rung == LADDER[-1] and choice.auto_tree and "the cheapest tree" in choice.describe()
    with pytest.raises(RecipeError):
        choose_encoder(auto(branch_at=3), HEADS, 2 * shared, SIZE)


def test_a_compact_student_is_priced_as_compact():
    cfg = auto(type="compact")
    spec = StudentSpec("compact", LADDER[-1].encoder, 3, list(LADDER[-1].decoder_channels), HEADS)
    assert price_rung(LADDER[-1], cfg, HEADS, SIZE, False).params == count_params(build_student(spec))


def test_a_latency_budget_is_measured_and_said():
    choice = choose_encoder(StudentConfig(budget=BudgetConfig(params=None, latency_ms=1e6)), HEADS, 1000, SIZE)
    assert choice.rung == LADDER[0] and choice.price.latency_ms > 0 and "ms b1" in choice.describe()


def test_choosing_leaves_the_seeded_stream_alone():
    torch.manual_seed(0)
    choose_encoder(auto(params=None), HEADS, 1000, SIZE)
    after = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(3))


#: the session world's teachers have 3,160 parameters: 100x of them fits only the ladder's last encoder
SMALLEST = ["--set", "student.encoder=auto", "--set", "student.budget.params=100"]


def test_inspect_says_what_auto_chose(world, capsys):
    assert main(["inspect", str(world), "--no-data", "--quiet", *SMALLEST]) == 0
    out = capsys.readouterr().out
    assert "student: branched, encoder tu-test_efficientnet" in out
    assert "student.encoder auto -> tu-test_efficientnet (the recipe's decoders [16, 16, 8, 8, 8];" in out


def test_a_named_encoder_is_kept_as_it_is(world_plan):
    assert world_plan.encoder_choice() is None
    spec = world_plan.student_spec()
    assert (spec.encoder, spec.decoder_channels) == ("tu-test_resnet", [16, 16, 8, 8, 8])


def test_a_named_encoder_without_decoders_gets_the_old_default(world):
    recipe = load_recipe(world, ["student.decoder_channels=null"])
    plan = Plan(recipe, *unify_tasks(recipe))
    assert plan.student_spec().decoder_channels == [128, 64, 32, 16, 16]


def test_the_build_logs_reports_and_stores_the_chosen_student(world, tmp_path, capsys):
    out = tmp_path / "run"
    args = [a for a in TINY_BUILD if a != "--quiet"]
    assert main(["build", str(world), "--output", str(out), *args, *SMALLEST]) == 0
    line = "student.encoder auto -> tu-test_efficientnet (the recipe's decoders [16, 16, 8, 8, 8];"
    assert line in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["encoder_choice"]["encoder"] == "tu-test_efficientnet"
    assert report["encoder_choice"]["next_rung_up"]["encoder"] == "tu-repghostnet_050"
    assert line in (out / "report.md").read_text()
    spec = torch.load(out / "student.pt", weights_only=True)["spec"]
    assert (spec["encoder"], spec["decoder_channels"]) == ("tu-test_efficientnet", [16, 16, 8, 8, 8])
    student, _ = load_student(out / "student.pt")  # what eval, export and --init rebuild
    assert count_params(student) == report["encoder_choice"]["params"] == report["student"]["params"]


def test_search_sizes_auto_as_a_searched_tree_and_pastes_the_encoder(world, tmp_path, capsys):
    quick = ["--set", "student.search.steps=2", "--set", "student.search.every=1", "--output", str(tmp_path)]
    assert main(["search", str(world), "--quiet", *quick, *SMALLEST]) == 0
    out = capsys.readouterr().out
    stored = json.loads((tmp_path / "search.json").read_text())["encoder_choice"]
    assert stored["priced_tree"] == "cheapest"  # the recipe's branch_at 3 is not what a search builds
    assert f"paste under student:\n  encoder: {stored['encoder']}\n  decoder_channels: [16, 16, 8, 8, 8]\n" in out


def test_a_build_with_a_four_block_decoder_scores_at_the_labels_size(world, tmp_path):
    """Training losses at half resolution, evaluation at the labels' (the report has every metric)."""
    out = tmp_path / "run"
    four = ["--set", "student.encoder=tu-test_efficientnet", "--set", "student.decoder_channels=[8,8,8,8]"]
    assert main(["build", str(world), "--output", str(out), *TINY_BUILD, *four]) == 0
    report = json.loads((out / "report.json").read_text())
    assert all(t["student_value"] is not None for t in report["tasks"])
    student, _ = load_student(out / "student.pt")
    assert student.spec.decoder_channels == [8, 8, 8, 8]
    assert report["student"]["decoders"] == {"segmentation": [8, 8, 8, 8], "depth": [8, 8, 8, 8]}
    assert "Student decoders: segmentation [8, 8, 8, 8], depth [8, 8, 8, 8]" in (out / "report.md").read_text()


def test_a_recipe_with_three_decoder_blocks_is_refused_when_loaded(world):
    with pytest.raises(RecipeError, match="decoder_channels"):
        load_recipe(world, ["student.decoder_channels=[8,8,8]"])


def test_inspect_says_a_four_block_decoder_trains_at_half_resolution(world, capsys):
    four = ["--set", "student.encoder=tu-test_efficientnet", "--set", "student.decoder_channels=[8,8,8,8]"]
    assert main(["inspect", str(world), "--no-data", "--quiet", *four]) == 0
    assert "decoders: 4 blocks, so dense outputs are at half the input's resolution while training" in (
        capsys.readouterr().out
    )
    assert main(["inspect", str(world), "--no-data", "--quiet"]) == 0  # five blocks: nothing to say
    assert "decoders: " not in capsys.readouterr().out


def test_own_decoder_widths_are_built_priced_and_said(world, capsys):
    own = [
        "--set",
        "student.encoder=tu-test_efficientnet",
        "--set",
        "student.task_decoder_channels={segmentation: [16,16,16,16]}",
    ]
    recipe = load_recipe(world, own[1::2])
    spec = Plan(recipe, *unify_tasks(recipe)).student_spec()
    assert spec.decoders_for("segmentation") == [16, 16, 16, 16]
    assert spec.decoders_for("depth") == spec.decoder_channels == [16, 16, 8, 8, 8]
    assert main(["inspect", str(world), "--no-data", "--quiet", *own]) == 0
    out = capsys.readouterr().out
    assert "decoders (student.task_decoder_channels): segmentation [16, 16, 16, 16], depth [16, 16, 8, 8, 8]" in out
    assert "decoders: 4 blocks, so the outputs of segmentation are at half the input's resolution" in out
    auto_rung = auto(task_decoder_channels={"segmentation": [256, 128, 64, 32, 32]})
    wide, plain = (price_rung(rung_named("resnet18"), c, HEADS, SIZE, timed=False) for c in (auto_rung, auto()))
    assert wide.params > plain.params  # the ladder prices the student with its own decoders


@pytest.mark.parametrize(
    "setting, message",
    [
        (
            "{classification: [8,8,8,8]}",
            "student.task_decoder_channels.classification: not a dense task of the teachers (segmentation, depth)",
        ),
        ("{segmantation: [8,8,8,8]}", "student.task_decoder_channels.segmantation: not a dense task"),
        ("{segmentation: [8,8,8]}", "segmentation: 4 or 5 positive widths"),
    ],
)
def test_own_decoder_widths_name_dense_tasks_of_four_or_five_blocks(world, setting, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load_recipe(world, [f"student.task_decoder_channels={setting}"])


def test_own_decoder_widths_need_a_branched_student(world):
    with pytest.raises(RecipeError, match="a compact student shares one decoder"):
        load_recipe(world, ["student.type=compact", "student.task_decoder_channels={depth: [8,8,8,8]}"])


def test_the_tree_search_and_its_warm_up_key_see_own_widths(world):
    from amalgam.distill.affinity import search_key
    from amalgam.students.budget import measure_costs

    plain = StudentSpec("branched", "tu-test_efficientnet", 5, [8] * 5, dict(HEADS))
    own = StudentSpec("branched", "tu-test_efficientnet", 5, [8] * 5, dict(HEADS), {"segmentation": [32] * 5})
    assert measure_costs(own, SIZE).task_params["segmentation"] > measure_costs(plain, SIZE).task_params["segmentation"]
    key = search_key(load_recipe(world))
    assert search_key(load_recipe(world, ["student.task_decoder_channels={depth: [8,8,8,8]}"])) != key
    same = f"student.task_decoder_channels={{depth: {load_recipe(world).student.decoder_channels}}}"
    assert search_key(load_recipe(world, [same])) == key  # the shared widths named again: no new key


def test_a_hypercolumn_is_priced_and_a_classifier_only_choice_names_no_decoders():
    # the ladder priced students without student.hypercolumn's wider heads; a trial's classification-only
    # student read "decoders [96, 48, 32, 16, 16]", which it does not have
    rung = rung_named("tu-resnet10t")
    plain = price_rung(rung, auto(params=None), HEADS, SIZE, timed=False).params
    wide = price_rung(rung, auto(params=None, hypercolumn=True), HEADS, SIZE, timed=False).params
    assert wide - plain == rung.decoder_channels[1] * 3 * 9  # the segmentation head's extra input channels
    line = choose_encoder(auto(params=None), {"classification": 2}, 1000, SIZE).describe()
    assert line.startswith("student.encoder auto -> resnet18 (11,") and "decoders" not in line
    assert "decoders [" in choose_encoder(auto(params=None), HEADS, 1000, SIZE).describe()
