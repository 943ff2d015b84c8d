"""Plugin tasks held to the contract (user trial E): a mirror that changes values, a multi-label
task's own ensemble, a head narrower than its teacher, hooks with the wrong signature, a metric the
meter never returns, and a multi-channel map in the report's sample grid."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import yaml
from amalgam_tasks.depth import DepthTask
from amalgam_tasks.segmentation import SegmentationTask
from torch import nn

from amalgam.cli import main
from amalgam.config.recipe import load_recipe
from amalgam.data.views import resize
from amalgam.distill.cache import TeacherCache, apply_flip
from amalgam.distill.objective import Objective
from amalgam.distill.plan import build_plan
from amalgam.errors import AmalgamError
from amalgam.evaluation import visual
from amalgam.evaluation.evaluate import evaluate
from amalgam.evaluation.figures import pyplot
from amalgam.labels import apply_lookup
from amalgam.plugin_contract import contract_problem
from amalgam.task import TASKS, Task, _old_form
from amalgam.teachers.subteachers import SUBTEACHERS

QUIET = lambda msg: None  # noqa: E731


@pytest.fixture
def register(monkeypatch):
    """Registers task classes for one test (undone after it)."""

    def add(*classes: type) -> None:
        for cls in classes:
            monkeypatch.setitem(TASKS._items, cls.name, cls)
            monkeypatch.setitem(TASKS._origins, cls.name, "tests")

    return add


# 1. mirror -----------------------------------------------------------------------------------------


class Vectors(Task):
    """A dense 2-vector per pixel whose x component changes sign under a left-right mirror."""

    name, dense, target_key, metric = "vectors", True, "depth", "err"

    def num_outputs(self, space):
        return 2

    def mirror(self, output):
        return output.flip(-1) * torch.tensor([-1.0, 1.0]).view(1, 2, 1, 1)

    def ensemble(self, outputs):
        return torch.stack(outputs).mean(0)


def gradient_teacher(x: torch.Tensor) -> torch.Tensor:
    """A mirror-equivariant teacher: the image's horizontal and vertical differences."""
    g = x.mean(1, keepdim=True)
    return torch.cat([g.roll(-1, -1) - g.roll(1, -1), g.roll(-1, -2) - g.roll(1, -2)], 1)


def test_multi_transform_flip_mirrors_values_through_the_task():
    x = torch.rand(2, 3, 8, 8)
    wrap = SUBTEACHERS.get("multi_transform")(flip=True)
    out = wrap(gradient_teacher, nn.Identity(), Vectors(), x)
    # an equivariant teacher averaged with its mirrored answer mirrored back: itself (x was halved before)
    torch.testing.assert_close(out, gradient_teacher(x))


def test_cached_flipped_targets_go_through_the_tasks_mirror(world_plan, tmp_path, monkeypatch):
    monkeypatch.setattr(DepthTask, "mirror", lambda self, out: out.flip(-1) * 2.0)  # values change under a mirror
    cache = TeacherCache(tmp_path / "cache", world_plan, QUIET)
    sid = world_plan.sources.names.index("scenes")
    samples = [world_plan.sources[world_plan.sources.offsets[sid] + i] for i in range(2)]
    images = torch.stack([s["image"] for s in samples])
    source, index = torch.tensor([s["source"] for s in samples]), torch.tensor([s["index"] for s in samples])
    flip = torch.tensor([True, False])
    cached, _ = cache.targets(images, source, index, flip)("depth", torch.arange(2))
    plain = resize(world_plan.teachers["depth"](images), images.shape[-2:])
    torch.testing.assert_close(cached[0], 2.0 * apply_flip(plain, flip)[0], atol=3e-2, rtol=3e-3)
    torch.testing.assert_close(cached[1], plain[1], atol=3e-2, rtol=3e-3)


def test_tasks_listing_says_which_mirror_a_task_uses(register, capsys):
    class OwnMirror(Vectors):
        name = "own-mirror"

        def build_head(self, in_channels, num_outputs):
            return nn.Conv2d(in_channels, num_outputs, 1)

        def distill_loss(self, student, teacher, options):
            return (student - teacher).abs().mean()

        def predict(self, output, size, projection=None):
            return output

        def new_meter(self, num_classes):
            return None

    register(OwnMirror)
    assert main(["tasks", "--details"]) == 0
    lines = {line.split("\t")[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["own-mirror"].endswith("mirror: its own")
    assert lines["depth"].endswith("mirror: default (a spatial flip, values unchanged)")
    assert lines["classification"].endswith("mirror: default (unchanged, one answer per image)")


# 2. ensembles ---------------------------------------------------------------------------------------


class MultiSeg(SegmentationTask):
    """A multi-label dense task: one sigmoid per label, merged by its own mean of probabilities."""

    name = "multiseg"
    exclusive_labels = False

    def ensemble(self, outputs):
        p = torch.stack([o.float().sigmoid() for o in outputs]).mean(0).clamp(1e-6, 1 - 1e-6)
        return p.log() - (-p).log1p()

    def map_target(self, target, lut, labels):  # its eval sets are label maps, scored as segmentation's
        return apply_lookup(target, lut)


class MultiSegNoEnsemble(SegmentationTask):
    name = "multiseg-noens"
    exclusive_labels = False


def ensemble_plan(world, task: str, kind: str = "mean"):
    overrides = [
        f"teachers.seg-a.task={task}",
        f"teachers.seg-b.task={task}",
        "teachers.seg-b.model.out_channels=3",
        "teachers.seg-b.checkpoint=zoo/seg-a.pt",
        "teachers.seg-b.labels=[background, disc, square]",
        "teachers.seg-b.background=background",
        f"amalgamation.ensemble={{type: {kind}}}",
    ]
    return build_plan(load_recipe(world, overrides), with_data=False, log=QUIET)


def test_an_ensemble_group_of_a_multilabel_plugin_is_merged_by_its_own_hook(world, register):
    register(MultiSeg)
    objective = Objective(ensemble_plan(world, "multiseg"), student=None)
    z = torch.randn(2, 3, 4, 4) * 3
    merged = objective._ensemble("seg-a+seg-b", [z, z], torch.arange(2))
    torch.testing.assert_close(merged, z, atol=1e-4, rtol=1e-4)  # two identical teachers: their answer


def test_builtin_ensemble_groups_keep_the_softmax_merge(world):
    objective = Objective(ensemble_plan(world, "segmentation"), student=None)
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    merged = objective._ensemble("seg-a+seg-b", [a, b], torch.arange(2))
    t = objective.temperature
    p = ((a / t).softmax(1) + (b / t).softmax(1)) / 2
    torch.testing.assert_close(merged, t * p.clamp_min(1e-8).log())


def test_softmax_ensembles_and_merges_are_refused_for_a_multilabel_plugin(world, register):
    register(MultiSeg, MultiSegNoEnsemble)
    with pytest.raises(AmalgamError, match=r"ensemble.type: 'entropy' .*task plugin 'multiseg' \(.*MultiSeg\)"):
        ensemble_plan(world, "multiseg", "entropy")
    with pytest.raises(AmalgamError, match=r"task plugin 'multiseg-noens' .*define ensemble\(outputs\)"):
        ensemble_plan(world, "multiseg-noens")
    with pytest.raises(AmalgamError, match="task plugin 'multiseg-noens'"):
        MultiSegNoEnsemble().ensemble([torch.zeros(1, 3), torch.zeros(1, 3)])  # sub-teachers: no softmax guess
    hard = SUBTEACHERS.get("multi_transform")(hard=True)
    assert "does not declare exclusive_labels" in hard.check(nn.Identity(), MultiSeg())
    assert hard.check(nn.Identity(), SegmentationTask()) is None


# 3. head channels ------------------------------------------------------------------------------------


class WideHead(DepthTask):
    """Its head gives 2 channels where its (depth) teacher answers 1."""

    name = "wide-head"

    def build_head(self, in_channels, num_outputs):
        return nn.Conv2d(in_channels, 2, 1)


def test_a_head_narrower_or_wider_than_the_teacher_is_refused_at_the_teacher_check(world, register):
    register(WideHead)
    with pytest.raises(AmalgamError) as caught:
        build_plan(load_recipe(world, ["teachers.depth.task=wide-head"]), with_data=False, log=QUIET)
    said = str(caught.value)
    assert "task plugin 'wide-head'" in said and "teacher 'depth'" in said
    assert "gives 2 channels" in said and "answers 1 channel" in said and "\n" not in said


class LooseDepth(DepthTask):
    """Takes a teacher's [B, H, W] answer as it is (its check_output lets it through): against the
    head's [B, 1, H, W] a loss broadcasts to [B, B, H, W] without a word."""

    name = "loose-depth"

    def check_output(self, out, batch, space):
        return None

    def convert_output(self, raw, kind):
        return raw.squeeze(1) if raw.dim() == 4 else raw


def test_a_teacher_answer_of_another_rank_than_the_head_is_refused_at_the_teacher_check(world, register):
    register(LooseDepth)
    with pytest.raises(AmalgamError) as caught:
        build_plan(load_recipe(world, ["teachers.depth.task=loose-depth"]), with_data=False, log=QUIET)
    said = str(caught.value)
    assert "task plugin 'loose-depth'" in said and "gives 4-d answers" in said and "answers 3-d ones" in said


# 5. hook signatures and attributes -----------------------------------------------------------------


class NoProjection(DepthTask):
    name = "b-predict"

    def predict(self, output, size):
        return output


class NoOptions(DepthTask):
    name = "b-loss"

    def distill_loss(self, student, teacher):
        return student.sum()


class NoSpace(DepthTask):
    name = "b-check"

    def check_output(self, out, batch):
        return None


class NoKind(DepthTask):
    name = "b-convert"

    def convert_output(self, raw):
        return raw


class NoNumOutputs(DepthTask):
    name = "b-num"
    num_outputs = Task.num_outputs


class OptionsAndOwn(DepthTask):  # the documented form plus a parameter of its own: not amalgam 0.1's
    name = "b-own"

    def distill_loss(self, student, teacher, options, reduction):
        return student.sum()


class HigherAsText(DepthTask):  # "False" is true: the report's ratio and arrow turned upside down
    name = "b-flag"
    higher_is_better = "False"


class CheckSaysTrue(DepthTask):
    name = "b-true"

    def check_output(self, out, batch, space):
        return True  # "fine", in its author's mind


@pytest.mark.parametrize(
    "cls, said",
    [
        (NoProjection, "predict(output, size, projection=None) expected, got predict(output, size)"),
        (NoOptions, "distill_loss(student, teacher, options) expected, got distill_loss(student, teacher)"),
        (NoSpace, "check_output(out, batch, space) expected, got check_output(out, batch)"),
        (NoKind, "convert_output(raw, kind) expected, got convert_output(raw)"),
        (NoNumOutputs, "num_outputs(space) is not defined (a task without labels says its head's channels)"),
        (
            OptionsAndOwn,
            "distill_loss(student, teacher, options) expected, got distill_loss(student, teacher, options, reduction)",
        ),
        (HigherAsText, "class attribute 'higher_is_better' must be True or False, got 'False' (str)"),
    ],
)
def test_wrong_hooks_are_refused_at_the_recipe_check(world, register, cls, said):
    register(cls)
    with pytest.raises(AmalgamError) as caught:
        load_recipe(world, [f"teachers.depth.task={cls.name}"])
    assert str(caught.value) == f"task plugin '{cls.name}' ({__name__}:{cls.__qualname__}): {said}"


def test_a_class_without_dense_is_refused_and_builtins_and_old_forms_pass(register, capsys):
    class NoDense(Task):
        name, target_key, metric = "b-dense", "depth", "rmse"

    class OldForm(DepthTask):  # amalgam 0.1's distill_loss: still called, deprecated
        name = "old-form"

        def distill_loss(self, student, teacher, projection, temperature):
            return student.sum()

    register(NoDense, OldForm)
    assert main(["tasks", "--details"]) == 2
    said = capsys.readouterr()
    lines = {line.split("\t")[0]: line.split("\t")[2] for line in said.out.splitlines()}
    assert lines["b-dense"] == "broken"
    assert not [n for n in ("classification", "segmentation", "depth", "old-form") if "broken" in lines[n]]
    assert _old_form(OldForm) and not _old_form(DepthTask)

    class OwnDefault(DepthTask):  # the documented form, a parameter of its own with a default: not 0.1's
        name = "own-default"

        def distill_loss(self, student, teacher, opts, reduction="mean"):
            return student.sum()

    class OldStatic(DepthTask):
        name = "old-static"

        @staticmethod
        def distill_loss(student, teacher, projection, temperature):
            return student.sum()

    class PropertyFlag(DepthTask):
        name = "prop-flag"

        @property
        def higher_is_better(self):
            return False

    assert not _old_form(OwnDefault) and _old_form(OldStatic)
    assert not [c for c in (OwnDefault, OldStatic, PropertyFlag) if contract_problem(c)]
    assert said.err == (
        f"amalgam: error: task plugin 'b-dense' ({__name__}:{NoDense.__qualname__}): class attribute 'dense' (bool)"
        " is not set\n"
    )


def test_check_output_returning_true_is_named_a_contract_error(world, register):
    register(CheckSaysTrue)
    with pytest.raises(AmalgamError, match=r"task plugin 'b-true' .*check_output returned True \(bool\)"):
        build_plan(load_recipe(world, ["teachers.depth.task=b-true"]), with_data=False, log=QUIET)


# 6. metric -------------------------------------------------------------------------------------------


class WrongMetric(DepthTask):
    name = "b-metric"
    metric = "angle"


class DepthOnly(nn.Module):
    def forward(self, images):
        return {"b-metric": torch.ones(images.shape[0], 1, *images.shape[-2:])}


def test_a_metric_the_meter_does_not_return_is_refused_before_training_and_at_evaluation(
    fresh_world, register, monkeypatch
):
    register(WrongMetric)
    raw = yaml.safe_load(fresh_world.read_text())
    raw["teachers"] = {"depth": {**raw["teachers"]["depth"], "task": "b-metric"}}
    raw["data"]["sources"].pop("items")
    raw["data"]["eval"].pop("items-val")
    fresh_world.write_text(yaml.safe_dump(raw))
    with pytest.raises(AmalgamError) as caught:  # the teacher check scores the teacher on itself
        build_plan(load_recipe(fresh_world), log=QUIET)
    said = str(caught.value)
    assert said.startswith("task plugin 'b-metric'") and "its meter returned {" in said
    assert "rmse" in said and "not its metric 'angle'" in said and "found before training" in said
    # a meter the probe cannot exercise is caught at the first evaluation instead
    import amalgam.teachers.checks as checks_module

    monkeypatch.setattr(checks_module, "metric_problem", lambda *args: None)
    plan = build_plan(load_recipe(fresh_world), log=QUIET)
    with pytest.raises(AmalgamError, match="not its metric 'angle'"):
        evaluate(plan, DepthOnly(), torch.device("cpu"), log=QUIET)


# 4. pictures -----------------------------------------------------------------------------------------


def test_a_multichannel_map_is_drawn_as_a_grey_map_without_units():
    plt = pyplot()
    fig, axes = plt.subplots(1, 3)
    teacher = SimpleNamespace(space=None, task=Vectors())
    maps = [torch.rand(3, 8, 8), torch.rand(3, 8, 8), torch.rand(8, 8)]  # ground truth: depth, not drawn
    visual._show(axes, teacher, maps, fig, legend=True)
    assert [len(ax.images) for ax in axes] == [1, 1, 0]
    assert fig.axes[-1].get_ylabel() == ""  # the colour bar: no unit
    plt.close(fig)
    fig, axes = plt.subplots(1, 3)
    visual._show(axes, SimpleNamespace(space=None, task=DepthTask()), [torch.rand(8, 8) + 1] * 3, fig, legend=True)
    assert fig.axes[-1].get_ylabel() == "m"  # depth keeps its metres
    plt.close(fig)


def test_a_picture_that_fails_never_fails_the_report(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise TypeError("Invalid shape (3, 64, 64) for image data")

    monkeypatch.setattr(visual, "sample_grid", broken)
    lines: list[str] = []
    report = {"name": "r", "tasks": []}
    page = visual.render(tmp_path, report, plan=object(), student=object(), spaces={}, device=None, log=lines.append)
    assert page.is_file() and lines == ["samples.png not drawn: Invalid shape (3, 64, 64) for image data"]


def test_a_plugin_on_the_labelled_outputs_mixin_keeps_merging_as_before():
    from amalgam.task import LabelledOutputs, Task

    class SoftmaxPlugin(LabelledOutputs, Task):  # written before exclusive_labels existed
        name = "softmax-plugin"
        dense = False
        labelled = True

    class MultiLabel(Task):
        name = "multi-label"
        dense = False
        labelled = True

    assert SoftmaxPlugin.exclusive_labels and not MultiLabel.exclusive_labels


def test_suggest_labels_leaves_a_multilabel_teacher_out_and_says_so(world, register):
    # its softmax top label paired one of an image's several labels (or none) with the other teacher's
    from amalgam.labels.suggest import predictions

    register(MultiSeg)
    plan = build_plan(load_recipe(world, ["teachers.seg-a.task=multiseg"]), log=QUIET)
    said = []
    preds = predictions(plan, max_images=4, log=said.append)
    assert "seg-a" not in preds.labels and "seg-b" in preds.labels
    assert said[0].startswith("suggest-labels: not judged: seg-a (its task does not declare exclusive_labels")
    # nor is its label order checked before training, and that is said, as the mirror check says its own
    assert "label order not checked (task multiseg has no exclusive labels)" in plan.teachers["seg-a"].notes


def test_a_plugin_that_leaves_its_metrics_direction_to_the_default_is_said(register):
    # a trial: an error rate read as higher-is-better showed a student 2.4x worse as 2.4x better
    from amalgam.distill.plan import undeclared_direction_lines

    register(Vectors)
    declared = Vectors()
    declared.higher_is_better = False  # set per instance (in __init__): declared (a review)
    lines = undeclared_direction_lines(
        {"vectors": Vectors(), "depth": DepthTask(), "higher": HigherAsText(), "own": declared}
    )
    assert lines == [
        "task plugin 'vectors' (tests) does not declare higher_is_better: its metric 'err' is read as higher"
        " is better (Task's default); declare it in the class (False for an error or a distance)"
    ]
