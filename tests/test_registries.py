"""Every registry is the real dispatch: one registration from outside the package adds a student
type, a feature term, a teacher model source, an encoder splitter or a peer strategy, and the
recipe takes its name; unknown names are refused with the registered ones listed."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn

from amalgam.cli import main
from amalgam.config.recipe import load_recipe
from amalgam.distill.features import FEATURE_TERMS
from amalgam.distill.objective import Objective
from amalgam.distill.plan import build_plan
from amalgam.errors import AmalgamError, RecipeError
from amalgam.kd import PEER_STRATEGIES, PeerStrategy
from amalgam.registry import Registry
from amalgam.students.build import STUDENTS, BranchedStudent, CompactStudent, build_student, default_student_tap
from amalgam.students.encoders import SPLITTERS, Splitter, StagedEncoder, build_encoder
from amalgam.teachers.model_sources import MODEL_SOURCES, ModelSource

QUIET = lambda msg: None  # noqa: E731


@pytest.fixture
def registered():
    """Registers ``(registry, name, obj)`` for one test, and removes it after."""
    added: list[tuple[Registry, str]] = []

    def add(registry: Registry, name: str, obj) -> None:
        registry.add(name, obj, origin="tests")
        added.append((registry, name))

    yield add
    for registry, name in added:
        registry.remove(name)


class TappedAtEncoder(CompactStudent):
    """A compact student whose feature terms read the encoder's last stage, not the decoder."""

    @classmethod
    def default_tap(cls, spec) -> str:
        return "encoder"


def test_encoder_lr_scale_needs_a_student_type_that_names_its_encoder(world, registered):
    from amalgam.students.build import _Student

    class Bare(_Student):  # a plugin's student that never says what its encoder is
        pass

    registered(STUDENTS, "bare", Bare)
    registered(STUDENTS, "tapped", TappedAtEncoder)  # inherits the compact student's encoder_modules
    with pytest.raises(RecipeError, match=r"train\.encoder_lr_scale: a 'bare' student does not say which modules"):
        load_recipe(world, ["student.type=bare", "train.encoder_lr_scale=0.5"])
    load_recipe(world, ["student.type=bare"])  # at scale 1 nothing is asked of it
    load_recipe(world, ["student.type=tapped", "train.encoder_lr_scale=0.5"])


def test_a_student_type_is_one_registration(world, registered):
    with pytest.raises(RecipeError, match=r"student\.type: unknown student type 'tapped' \(expected one of: .*compact"):
        load_recipe(world, ["student.type=tapped"])
    registered(STUDENTS, "tapped", TappedAtEncoder)
    recipe = load_recipe(world, ["student.type=tapped"])
    spec = build_plan(recipe, with_data=False, log=QUIET).student_spec()
    student = build_student(spec)
    assert type(student) is TappedAtEncoder and default_student_tap(spec) == "encoder"
    assert set(student.eval()(torch.rand(1, 3, 32, 32))) == {"classification", "segmentation", "depth"}


class WideTree(BranchedStudent):
    """A branched student of the test's own: a tree, so it takes a per-task ``branch_at``."""


def test_a_registered_tree_student_is_a_tree_everywhere(world, registered):
    # the class says it has branches (not its registered name): recipe checks, log/inspect lines, search
    from amalgam.students.budget import student_lines

    tree = ["student.branch_at={classification: 1, segmentation: 2, depth: 2}"]
    with pytest.raises(RecipeError, match=r"needs student\.type: branched \(a compact student has no branches: leave"):
        load_recipe(world, ["student.type=compact", *tree])
    registered(STUDENTS, "wide", WideTree)
    with pytest.raises(RecipeError, match=r"needs student\.type: branched or wide \(a compact student"):
        load_recipe(world, ["student.type=compact", *tree])
    spec = build_plan(load_recipe(world, ["student.type=wide", *tree]), with_data=False, log=QUIET).student_spec()
    lines = student_lines(spec, 10, 20, load_recipe(world).student.budget)
    assert any("classification: branches at 1" in line for line in lines)


class CosineTerm(nn.Module):
    """1 - cosine similarity of the channel-pooled features (a feature term of the test's own)."""

    def __init__(self, student_channels: int, teacher_channels: int):
        super().__init__()
        self.proj = nn.Linear(student_channels, teacher_channels)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        s, t = self.proj(student.mean((2, 3))), teacher.float().mean((2, 3))
        return 1 - torch.cosine_similarity(s, t, dim=1).mean()


def test_a_feature_term_is_one_registration(world, registered):
    keys = ["amalgamation.features=cosine", "amalgamation.taps={seg-a: body}"]
    with pytest.raises(RecipeError, match=r"amalgamation\.features: unknown feature term 'cosine' .*none, adapters"):
        load_recipe(world, keys)
    registered(FEATURE_TERMS, "cosine", CosineTerm)
    plan = build_plan(load_recipe(world, keys), log=QUIET)
    student = build_student(plan.student_spec())
    objective = Objective(plan, student)
    assert isinstance(objective.adapters["seg-a"], CosineTerm)
    images = torch.rand(2, 3, 32, 32)
    _, parts = objective(student(images), images, torch.zeros(2, dtype=torch.long))
    assert 0.0 <= parts["seg-a/features"] <= 2.0


def _check_tiny(kwargs: dict, base) -> None:
    if not isinstance(kwargs.get("classes"), int):
        raise AmalgamError("classes: required integer")


def _build_tiny(kwargs: dict, base) -> nn.Module:
    conv = nn.Conv2d(1, 4, 3)
    return nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, kwargs["classes"]))


def test_a_teacher_model_source_is_one_registration(world, registered):
    keys = ["teachers.cls.model={from: tiny-zoo, classes: 2}", "teachers.cls.checkpoint=null"]
    with pytest.raises(RecipeError, match=r"unknown model source 'tiny-zoo'"):
        load_recipe(world, keys)
    registered(MODEL_SOURCES, "tiny-zoo", ModelSource(_build_tiny, _check_tiny))
    with pytest.raises(RecipeError, match=r"teachers\.cls\.model\.classes: required integer"):
        load_recipe(world, ["teachers.cls.model={from: tiny-zoo, classes: two}", "teachers.cls.checkpoint=null"])
    plan = build_plan(load_recipe(world, keys), with_data=False, log=QUIET)
    assert isinstance(plan.teachers["cls"].model[3], nn.Linear) and plan.teachers["cls"].model[3].out_features == 2


def _split_mobilenet_v2(encoder: nn.Module) -> list[nn.Module]:
    f = encoder.features  # smp reads its features after modules 1, 3, 6, 13 and the last
    return [f[:2], f[2:4], f[4:7], f[7:14], f[14:]]


def test_an_encoder_splitter_is_one_registration(registered):
    with pytest.raises(AmalgamError, match=r"branched student needs an encoder that can be split"):
        StagedEncoder("mobilenet_v2")
    is_mobilenet = lambda e: type(e).__name__ == "MobileNetV2Encoder"  # noqa: E731
    registered(SPLITTERS, "mobilenet-v2", Splitter(is_mobilenet, _split_mobilenet_v2))
    torch.manual_seed(0)
    staged = StagedEncoder("mobilenet_v2").eval()
    torch.manual_seed(0)
    whole = build_encoder("mobilenet_v2").eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected, got = whole(x)[1:], staged.forward_range(x, 0, 5)
    assert len(got) == 5 and all(torch.equal(a, b) for a, b in zip(expected, got))


def _mean_ce(z: torch.Tensor, ens: torch.Tensor, y: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.stack([nn.functional.cross_entropy(zi, y) for zi in z]).sum()


def test_a_peer_strategy_is_one_registration(world, tmp_path, registered):
    from test_peers import peer_recipe

    recipe = peer_recipe(world, tmp_path, strategy="independent")
    with pytest.raises(RecipeError, match=r"peers\.strategy: unknown peer strategy 'independent' .*dml, kdcl, one"):
        load_recipe(recipe)
    registered(PEER_STRATEGIES, "independent", PeerStrategy(_mean_ce))
    out = tmp_path / "run"
    assert main(["build", str(recipe), "--output", str(out), "--quiet"]) == 0
    assert json.loads((out / "report.json").read_text())["strategy"] == "independent"


def test_a_peers_build_refuses_the_train_keys_it_does_not_use(world, tmp_path):
    from test_peers import peer_recipe

    with pytest.raises(RecipeError, match=r"train\.augment: not used by a peers build"):
        load_recipe(peer_recipe(world, tmp_path), ["train.augment=false"])
    with pytest.raises(RecipeError, match=r"train\.eval_every: not used by a peers build"):
        load_recipe(peer_recipe(world, tmp_path), ["train.eval_every=1"])
    source = next(iter(load_recipe(peer_recipe(world, tmp_path)).data.sources))
    with pytest.raises(RecipeError, match=rf"data\.sources\.{source}\.flip: not used by a peers build"):
        load_recipe(peer_recipe(world, tmp_path), [f"data.sources.{source}.flip=true"])
    assert load_recipe(peer_recipe(world, tmp_path), ["train.optimizer=sgd", "train.schedule=step"]).peers


def test_a_task_registered_under_another_name_than_its_own_is_one_line(capsys):
    # the engine keys routing and heads by task.name: an entry point named otherwise was a KeyError mid-build
    import pytest

    from amalgam.cli import main
    from amalgam.errors import AmalgamError
    from amalgam.task import TASKS, get_task

    cls = type(get_task("classification"))
    TASKS.add("renamed_classes", cls, origin="test")
    said = r"registered as 'renamed_classes' \(test\) has name = 'classification'"
    try:
        with pytest.raises(AmalgamError, match=said):
            get_task("renamed_classes")
        assert main(["tasks"]) == 2  # `amalgam tasks` listed it as fine; inspect and build stopped on it
        err = capsys.readouterr().err
        assert re.search(r"^amalgam: error: task plugin " + said, err, re.M)  # one prefix, not two
    finally:
        TASKS.remove("renamed_classes")


class _BrokenEntryPoint:
    """An installed plugin whose module does not import (a missing dependency, a half-done install)."""

    name, value, dist = "sketch", "sketchy:SketchTask", None

    def load(self):
        raise ModuleNotFoundError("No module named 'sketchy'")


def test_a_plugin_that_does_not_import_stops_only_what_uses_it(world, monkeypatch, capsys):
    # one broken package stopped every amalgam command, recipes without its task included
    import amalgam.registry as registry_module
    from amalgam.task import TASKS

    installed = registry_module.entry_points
    monkeypatch.setattr(
        registry_module,
        "entry_points",
        lambda group: [_BrokenEntryPoint()] if group == "tests.broken" else installed(group=group),
    )
    fresh: Registry = Registry("task")
    registry_module.load_entry_points(fresh, "tests.broken")
    said = "amalgam.tasks plugin 'sketch' (sketchy:SketchTask) failed to load: No module named 'sketchy'"
    assert fresh.broken() == {"sketch": said.replace("amalgam.tasks", "tests.broken")} and fresh.names() == []
    with pytest.raises(AmalgamError, match="failed to load: No module named 'sketchy'"):
        fresh.get("sketch")
    monkeypatch.setitem(TASKS._broken, "sketch", said)
    lines: list[str] = []
    build_plan(load_recipe(world), with_data=False, log=lines.append)  # the recipe's own tasks still run
    assert f"warning: {said}: its task cannot be used until that is mended (this recipe does not use it)" in lines
    with pytest.raises(RecipeError, match=r"teachers\.cls\.task: amalgam\.tasks plugin 'sketch' .* failed to load"):
        load_recipe(world, ["teachers.cls.task=sketch"])
    assert main(["tasks"]) == 2
    out, err = capsys.readouterr()
    assert "sketch\t(failed to load)" in out and f"amalgam: error: {said}" in err


class _Dist:
    def __init__(self, name: str):
        self.name = name


class _EntryPoint:
    def __init__(self, name: str, value: str, dist: str):
        self.name, self.value, self.dist = name, value, _Dist(dist)

    def load(self):
        raise AssertionError("a name two packages register is not imported")


def test_a_task_name_two_packages_register_stops_naming_both(monkeypatch):
    # a trial: a plugin registering `classification` replaced the built-in without a word (the
    # first package on sys.path won), its predict answering 0 for every image
    import amalgam.registry as registry_module

    both = [
        _EntryPoint("classification", "amalgam_tasks.classification:ClassificationTask", "amalgam"),
        _EntryPoint("classification", "v_collide:T", "v-collide"),
    ]
    monkeypatch.setattr(registry_module, "entry_points", lambda group: both)
    fresh: Registry = Registry("task")
    registry_module.load_entry_points(fresh, "tests.collide")
    said = (
        "tests.collide plugin 'classification' is registered by 2 packages: amalgam"
        " (amalgam_tasks.classification:ClassificationTask), v-collide (v_collide:T); uninstall or rename all but one"
    )
    assert fresh.broken() == {"classification": said} and fresh.names() == []
    with pytest.raises(AmalgamError, match="registered by 2 packages"):
        fresh.get("classification")
    same = [both[0], _EntryPoint("classification", both[0].value, "amalgam-copy")]  # one class found twice
    monkeypatch.setattr(registry_module, "entry_points", lambda group: same)
    monkeypatch.setattr(_EntryPoint, "load", lambda self: "the class")
    again: Registry = Registry("task")
    registry_module.load_entry_points(again, "tests.collide")
    assert again.names() == ["classification"] and again.broken() == {}


class _SourceRegisteringEntryPoint:
    """A task plugin whose module also registers a source type of its own when imported."""

    name, value, dist = "attrs_plugin", "attrs_plugin:AttrTask", None

    def load(self):
        from amalgam.data.image_set import SOURCE_TYPES, SourceType
        from amalgam.task import get_task

        SOURCE_TYPES.add("attrs_set", SourceType(lambda cfg, resolve: None, required=()), origin="attrs_plugin")
        return type("AttrTask", (type(get_task("classification")),), {"name": "attrs_plugin"})


def test_a_task_plugins_module_registers_a_source_type_before_the_recipes_sets_are_checked(world, monkeypatch):
    # a trial: the docs say a task plugin's module may register a source type, but task plugins were imported
    # only when a task was looked up, after the sets: "unknown source type" for a type the plugin has
    import amalgam.registry as registry_module
    from amalgam.data.image_set import SOURCE_TYPES
    from amalgam.task import TASKS

    installed = registry_module.entry_points
    fake = _SourceRegisteringEntryPoint()
    monkeypatch.setattr(
        registry_module,
        "entry_points",
        lambda group: [*installed(group=group), *([fake] if group == "amalgam.tasks" else [])],
    )
    monkeypatch.setattr(TASKS, "loaded_groups", set())
    try:
        recipe = load_recipe(world, ["data.eval.attrs-test={type: attrs_set}"])
        assert recipe.data.eval["attrs-test"].type == "attrs_set"
    finally:
        for registry, name in ((SOURCE_TYPES, "attrs_set"), (TASKS, "attrs_plugin")):
            if name in registry:
                registry.remove(name)


def test_a_class_registered_from_code_is_listed_by_its_module_not_as_amalgams():
    # a trial: TASKS.add("attributes", Mine) was listed by `amalgam tasks` as amalgam's own
    class Mine:
        pass

    fresh: Registry = Registry("task")
    fresh.add("mine", Mine)
    fresh.add("own", Registry)
    assert fresh.origin("mine") == f"{__name__}:{Mine.__qualname__}" and fresh.origin("own") == "amalgam"
