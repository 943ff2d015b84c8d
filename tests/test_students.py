"""Branched and compact students: output shapes, sharing, encoders and the student file."""

from __future__ import annotations

import pytest
import torch

from amalgam.errors import AmalgamError
from amalgam.labels import LabelSpace
from amalgam.students.build import StudentSpec, build_student, default_student_tap
from amalgam.students.serialize import average_students, load_student, save_student

HEADS = {"classification": 3, "segmentation": 4, "depth": 1}


def spec(kind="branched", encoder="resnet18", branch_at=3, heads=HEADS) -> StudentSpec:
    return StudentSpec(kind, encoder, branch_at, [16, 16, 8, 8, 8], dict(heads))


def check_outputs(out: dict, batch=2, size=(32, 32)) -> None:
    assert set(out) == set(HEADS)
    assert out["classification"].shape == (batch, 3)
    assert out["segmentation"].shape == (batch, 4, *size)
    assert out["depth"].shape == (batch, 1, *size)
    assert (out["depth"] > 0).all()


@pytest.fixture(scope="module", params=["branched", "compact"])
def student(request):
    """One student of each type, shared by the read-only tests of this module."""
    torch.manual_seed(0)
    model = build_student(spec(request.param))
    model.train()
    with torch.no_grad():
        model(torch.rand(2, 3, 32, 32))  # moves the BatchNorm running statistics off their defaults
    return model.eval()


def test_student_returns_one_output_per_task(student):
    with torch.no_grad():
        check_outputs(student(torch.rand(2, 3, 32, 32)))


def test_branched_shares_the_trunk_and_copies_the_branches():
    torch.manual_seed(0)
    student = build_student(spec(branch_at=2, heads={"classification": 3, "segmentation": 4}))
    assert len(student.trunk) == 2 and all(len(b) == 3 for b in student.branches.values())
    seg, cls = student.branches["segmentation"], student.branches["classification"]
    assert seg is not cls
    assert all(p is not q for p, q in zip(seg.parameters(), cls.parameters()))
    # the copies start identical
    assert all(torch.equal(p, q) for p, q in zip(seg.parameters(), cls.parameters()))
    trunk_before = [p.detach().clone() for p in student.trunk.parameters()]
    cls_before = [p.detach().clone() for p in cls.parameters()]
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    student.train()
    out = student(torch.rand(2, 3, 32, 32))
    out["segmentation"].pow(2).mean().backward()  # one task's loss only
    opt.step()
    # segmentation's branch moved, classification's did not, the shared trunk did
    assert any(not torch.equal(p, q) for p, q in zip(seg.parameters(), cls.parameters()))
    assert all(torch.equal(p, q) for p, q in zip(cls.parameters(), cls_before))
    assert any(not torch.equal(p, q) for p, q in zip(student.trunk.parameters(), trunk_before))


def test_branch_at_zero_shares_nothing_and_needs_a_student_tap():
    student = build_student(spec(branch_at=0, heads={"classification": 3}))
    assert len(student.trunk) == 0
    with pytest.raises(AmalgamError, match="student_tap"):
        default_student_tap(student.spec)
    assert default_student_tap(spec(branch_at=3)) == "trunk.2"
    assert default_student_tap(spec("compact")) == "decoder"


def test_branched_timm_encoder():
    torch.manual_seed(0)
    student = build_student(spec(encoder="tu-resnet10t", branch_at=2)).eval()
    with torch.no_grad():
        check_outputs(student(torch.rand(2, 3, 32, 32)))


def test_non_splittable_encoder_suggests_compact():
    with pytest.raises(AmalgamError) as info:
        build_student(spec(encoder="mobilenet_v2"))
    message = str(info.value)
    assert message.startswith("student.encoder: a branched student needs an encoder that can be split")
    assert "student.type: compact" in message
    student = build_student(spec("compact", encoder="mobilenet_v2")).eval()
    with torch.no_grad():
        check_outputs(student(torch.rand(1, 3, 32, 32)), batch=1)


def test_save_and_load_round_trip(student, tmp_path):
    spaces = {
        "classification": LabelSpace(("cat", "dog", "bird")),
        "segmentation": LabelSpace(("background", "disc", "square", "bar"), "background"),
        "depth": None,
    }
    path = tmp_path / "student.pt"
    save_student(student, spaces, {"name": "t"}, path)
    loaded, loaded_spaces = load_student(path)
    assert not loaded.training and type(loaded) is type(student)
    assert loaded_spaces == spaces
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        a, b = student(x), loaded(x)
    assert all(torch.equal(a[k], b[k]) for k in HEADS)


def test_load_student_errors(tmp_path):
    with pytest.raises(AmalgamError, match="student file not found"):
        load_student(tmp_path / "none.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(AmalgamError, match="is not an amalgam student file"):
        load_student(tmp_path / "other.pt")
    # a trial passed a run's checkpoint.pt: told what it is, and where the student is or how to get it
    torch.save({"epoch": 1, "student": {}, "optimizer": {}}, tmp_path / "checkpoint.pt")
    with pytest.raises(AmalgamError, match="checkpoint.pt is a training checkpoint of amalgam build, not a student"):
        load_student(tmp_path / "checkpoint.pt")
    with pytest.raises(
        AmalgamError, match=r"finish it with amalgam build <recipe> --resume, then load its student.pt$"
    ):
        load_student(tmp_path / "checkpoint.pt")
    (tmp_path / "student.pt").write_bytes(b"")
    with pytest.raises(AmalgamError, match=f"the run's student is {tmp_path / 'student.pt'}$"):
        load_student(tmp_path / "checkpoint.pt")


def test_average_students_means_the_weights_and_refuses_another_architecture(tmp_path):
    spaces = {"classification": LabelSpace(("a", "b", "c")), "segmentation": None, "depth": None}
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_student(spec())
        paths.append(tmp_path / f"s{seed}.pt")
        save_student(model, spaces, {"name": f"run{seed}"}, paths[-1])
    average_students(paths, tmp_path / "soup.pt")
    soup, soup_spaces = load_student(tmp_path / "soup.pt")
    a, b = (load_student(p)[0].state_dict() for p in paths)
    for key, value in soup.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, (a[key] + b[key]) / 2), key
        else:
            assert torch.equal(value, a[key]), key
    assert soup_spaces == spaces and not torch.equal(soup.state_dict()["trunk.0.0.weight"], a["trunk.0.0.weight"])

    save_student(build_student(spec(branch_at=2)), spaces, {"name": "other"}, tmp_path / "other.pt")
    with pytest.raises(AmalgamError, match="other.pt holds a student with branch_at=2, .*s0.pt has 3"):
        average_students([paths[0], tmp_path / "other.pt"], tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()


@pytest.mark.parametrize("kind", ["branched", "compact"])
def test_a_four_block_decoder_trains_at_half_resolution_and_answers_at_full(kind):
    """Four decoder blocks leave out the finest (the costliest): training outputs stay at half the
    input's size (the loss resizes the teachers' to them), eval outputs and task paths are
    upsampled to the input size, which is what users, exports and evaluation read."""
    torch.manual_seed(0)
    full = build_student(StudentSpec(kind, "resnet18", 3, [16, 16, 8, 8, 8], dict(HEADS)))
    short = build_student(StudentSpec(kind, "resnet18", 3, [16, 16, 8, 8], dict(HEADS)))
    decoder = short.decoders["segmentation"] if kind == "branched" else short.decoder
    assert len(decoder.blocks) == 4
    assert sum(p.numel() for p in short.parameters()) < sum(p.numel() for p in full.parameters())
    images = torch.rand(2, 3, 64, 96)
    trained = short.train()(images)
    assert trained["segmentation"].shape == (2, 4, 32, 48) and trained["depth"].shape == (2, 1, 32, 48)
    assert trained["classification"].shape == (2, 3)
    short.eval()
    with torch.no_grad():
        out, path = short(images), short.task_path("depth")(images)
    assert out["segmentation"].shape == (2, 4, 64, 96)
    assert out["depth"].shape == (2, 1, 64, 96) and torch.allclose(path, out["depth"], atol=1e-5)


@pytest.mark.parametrize("widths", [[16, 16, 8, 8, 8, 8], [16, 16, 8]])
def test_decoder_widths_are_four_or_five_blocks(widths):
    with pytest.raises(AmalgamError, match="4 or 5 widths"):
        build_student(StudentSpec("branched", "resnet18", 3, widths, dict(HEADS)))


def test_a_dense_task_can_have_its_own_decoder_widths(tmp_path):
    own = {"segmentation": [32, 16, 16, 8]}  # wider, and four blocks: half resolution while training
    model = build_student(StudentSpec("branched", "resnet18", 3, [16, 16, 8, 8, 8], dict(HEADS), own))
    assert [b.convs[0][0].out_channels for b in model.decoders["segmentation"].blocks] == [32, 16, 16, 8]
    assert [b.convs[0][0].out_channels for b in model.decoders["depth"].blocks] == [16, 16, 8, 8, 8]
    x = torch.rand(2, 3, 32, 32)
    out = model.train()(x)
    assert out["segmentation"].shape[-2:] == (16, 16) and out["depth"].shape[-2:] == (32, 32)
    check_outputs(model.eval()(x))
    spaces = {"classification": LabelSpace(["a", "b", "c"]), "segmentation": LabelSpace(list("wxyz")), "depth": None}
    save_student(model, spaces, {}, tmp_path / "student.pt")
    again, _ = load_student(tmp_path / "student.pt")
    assert again.spec.task_decoders == own
    assert torch.equal(again(x)["segmentation"], model(x)["segmentation"])


def test_a_spec_without_own_decoders_reads_as_before():
    """Student files and checkpoints written before ``task_decoders`` existed compare equal."""
    assert "task_decoders" not in spec().to_dict()
    assert StudentSpec(**spec().to_dict()) == spec()


def test_a_compact_student_refuses_own_decoders():
    with pytest.raises(AmalgamError, match="student.task_decoder_channels: a compact student shares one decoder"):
        build_student(StudentSpec("compact", "resnet18", 3, [16, 16, 8, 8, 8], dict(HEADS), {"depth": [8] * 5}))


def test_own_widths_equal_to_the_shared_ones_are_the_plain_spec():
    same = StudentSpec("branched", "resnet18", 3, [16, 16, 8, 8, 8], dict(HEADS), {"depth": [16, 16, 8, 8, 8]})
    assert same.task_decoders == {} and same == spec()


def test_own_widths_must_name_a_dense_task_of_the_student():
    with pytest.raises(AmalgamError, match="task_decoders: classification is not a dense task"):
        build_student(StudentSpec("branched", "resnet18", 3, [8] * 5, dict(HEADS), {"classification": [8] * 4}))


def test_init_and_averaging_see_own_widths_on_either_side(tmp_path):
    """A file with own widths and a student without them (or the other way round) differ."""
    from amalgam.errors import RecipeError
    from amalgam.students.serialize import init_student

    spaces = {"classification": LabelSpace(["a", "b", "c"]), "segmentation": LabelSpace(list("wxyz")), "depth": None}
    plain = build_student(spec())
    own = build_student(StudentSpec("branched", "resnet18", 3, [16, 16, 8, 8, 8], dict(HEADS), {"depth": [8] * 4}))
    save_student(plain, spaces, {}, tmp_path / "plain.pt")
    save_student(own, spaces, {}, tmp_path / "own.pt")
    for student, other in ((plain, "own.pt"), (own, "plain.pt")):
        with pytest.raises(RecipeError, match="holds a student with task_decoders="):
            init_student(student, spaces, tmp_path / other)
    with pytest.raises(AmalgamError, match="holds a student with task_decoders="):
        average_students([tmp_path / "plain.pt", tmp_path / "own.pt"], tmp_path / "soup.pt")


def test_the_over_budget_advice_fits_the_student_type():
    # "lower student.branch_at" added parameters (fewer stages shared), and compact students were told
    # to use student.type: compact
    from amalgam.students.budget import Budget, budget_warning

    budget = Budget(100, None, 0.1, 1000)
    branched = budget_warning(budget, 500)
    assert "raise student.branch_at (more encoder stages shared)" in branched and "student.type: compact" in branched
    compact = budget_warning(budget, 500, branched=False)
    assert "branch_at" not in compact and "student.type" not in compact
    assert compact.endswith("use a smaller student.encoder or decoder_channels, or raise student.budget")


def test_an_encoder_that_is_not_a_chain_of_stages_is_refused_for_branched_students():
    # HRNet's parallel branches: a raw NotImplementedError from a ModuleList; VGG, Xception: no key, no fix
    from amalgam.students.encoders import StagedEncoder

    for name in ("tu-hrnet_w18_small", "tu-vgg11"):
        with pytest.raises(
            AmalgamError, match=r"^student.encoder: a branched student cannot split .* student.type: compact"
        ):
            StagedEncoder(name)


def test_a_named_students_latency_budget_is_checked_at_inspect_and_the_build_log():
    # it was measured only for the final report: inspect said nothing of a student 30x over it
    from amalgam.config.schema import BudgetConfig
    from amalgam.students.budget import latency_if_budgeted, student_lines

    student = build_student(StudentSpec("compact", "tu-resnet10t", 5, [16, 16, 8, 8], {"classification": 3})).train()
    assert latency_if_budgeted(BudgetConfig(), student, (32, 32)) is None  # no latency limit: not measured
    cfg = BudgetConfig(latency_ms=1e-6)
    latency = latency_if_budgeted(cfg, student, (32, 32))
    assert latency > 0 and student.training  # measured in eval mode, left as it came
    lines = student_lines(student.spec, 10, 100, cfg, latency)
    assert f"measured b1 {latency:.2f} ms on this CPU" in lines[-2]
    assert "latency b1" in lines[-1] and lines[-1].strip().startswith("warning: the student exceeds student.budget")


def test_the_reports_latency_verdict_is_the_cpu_measurement_the_log_and_search_use():
    # the report judged the median of 5 on the build's device (a GPU's latency against a CPU budget)
    from amalgam.config.schema import BudgetConfig
    from amalgam.evaluation.tree_report import budget_markdown, budget_section

    report = {"teachers": {"params": 1000}, "student": {"params": 100, "latency_ms": {"b1": 9.0}}}
    cfg = BudgetConfig(params=0.5, latency_ms=5.0)
    within = budget_section(report, cfg, cpu_ms=4.0)
    assert within["over"] == [] and within["cpu_b1_ms"] == 4.0
    assert "latency at most 5 ms, measured 4.00 ms on a CPU (the fastest of 7 runs)" in "".join(budget_markdown(within))
    assert budget_section(report, cfg, cpu_ms=6.0)["over"] == ["latency b1 6.00 ms > 5 ms"]
    assert budget_section(report, cfg)["over"] == ["latency b1 9.00 ms > 5 ms"]  # no CPU measurement: the report's


@pytest.mark.parametrize("kind", ["branched", "compact"])
def test_a_hypercolumn_head_reads_the_decoders_coarse_map_too(kind, tmp_path):
    # student.hypercolumn: the segmentation head also reads the second decoder block's map (1/8), upsampled
    plain = build_student(spec(kind))
    wide = StudentSpec(kind, "resnet18", 3, [16, 16, 8, 8, 8], dict(HEADS), hypercolumn=["segmentation"])
    model = build_student(wide).eval()
    head = model.heads["segmentation"]
    assert head.in_channels == 8 + 16  # the last block's 8 and the second block's 16
    extra = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in plain.parameters())
    # the wider 3x3 head, nothing else; a compact student's one decoder widens its depth head too
    assert extra == 16 * 9 * (4 + (1 if kind == "compact" else 0))
    with torch.no_grad():
        check_outputs(model(torch.rand(2, 3, 32, 32)))
    assert wide.to_dict()["hypercolumn"] == ["segmentation"] and "hypercolumn" not in spec(kind).to_dict()
    save_student(model, {"classification": LabelSpace(("a", "b", "c")), "segmentation": None, "depth": None},
                 {"name": "h"}, tmp_path / "s.pt")  # fmt: skip
    loaded, _ = load_student(tmp_path / "s.pt")
    assert loaded.heads["segmentation"].in_channels == 24
