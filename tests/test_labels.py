"""Label spaces, projections and the partial-label KL, checked against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from amalgam.labels import (
    IGNORE,
    LabelSpace,
    apply_lookup,
    lookup,
    partial_label_kl,
    project_log_probs,
    projection,
    unify,
)

SEG_A = LabelSpace(("background", "disc", "square"), "background")
SEG_B = LabelSpace(("other", "bar"), "other")


def test_unify_background_first_then_first_appearance():
    unified = unify([SEG_A, SEG_B], background="background")
    assert unified.names == ("background", "disc", "square", "bar")
    assert unified.background == "background"
    # the order of the teachers decides the order of the classes
    assert unify([SEG_B, SEG_A], background="background").names == ("background", "bar", "disc", "square")


def test_unify_overlapping_and_disjoint_spaces_without_background():
    overlap = unify([LabelSpace(("cat", "dog")), LabelSpace(("dog", "bird"))])
    assert overlap.names == ("cat", "dog", "bird") and overlap.background is None
    disjoint = unify([LabelSpace(("a", "b")), LabelSpace(("c",))])
    assert disjoint.names == ("a", "b", "c")


def test_label_space_rejects_duplicates_and_unknown_background():
    with pytest.raises(ValueError, match="duplicate"):
        LabelSpace(("a", "a"))
    with pytest.raises(ValueError, match="background"):
        LabelSpace(("a", "b"), "c")


def test_projection_of_teacher_with_background_covers_background_and_unknown_classes():
    unified = LabelSpace(("background", "disc", "square", "bar"), "background")
    expected = torch.tensor(
        [
            [True, True, True, False],  # other: unified background + disc + square (unknown to seg-b)
            [False, False, False, True],  # bar
        ]
    )
    assert torch.equal(projection(SEG_B, unified), expected)
    expected_a = torch.tensor(
        [
            [True, False, False, True],  # background covers the unified background and bar
            [False, True, False, False],
            [False, False, True, False],
        ]
    )
    assert torch.equal(projection(SEG_A, unified), expected_a)


def test_projection_of_teacher_without_background_covers_only_its_classes():
    unified = LabelSpace(("cat", "dog", "bird"))
    expected = torch.tensor([[True, False, False], [False, True, False]])
    assert torch.equal(projection(LabelSpace(("cat", "dog")), unified), expected)
    # the teacher's label order need not follow the unified order
    expected = torch.tensor([[False, False, True], [True, False, False]])
    assert torch.equal(projection(LabelSpace(("bird", "cat")), unified), expected)


def test_project_log_probs_groups_and_renormalises_over_the_covered_set():
    logits = torch.log(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    # groups {0} and {1, 2}: class 3 is not covered (a teacher without background)
    matrix = torch.tensor([[True, False, False, False], [False, True, True, False]])
    out = project_log_probs(logits, matrix)
    assert out.shape == (1, 2)
    assert torch.allclose(out, torch.log(torch.tensor([[1 / 6, 5 / 6]])), atol=1e-6)
    assert torch.allclose(out.exp().sum(1), torch.ones(1))
    # with a background that also covers class 3: {0}, {1, 2, 3} -> 1/10, 9/10
    matrix_bg = torch.tensor([[True, False, False, False], [False, True, True, True]])
    assert torch.allclose(project_log_probs(logits, matrix_bg), torch.log(torch.tensor([[0.1, 0.9]])), atol=1e-6)


def test_project_log_probs_temperature_divides_logits():
    # logits 2*log([1, 2, 3]) at T=2 -> probabilities over {0} and {1, 2}: 1/6, 5/6
    logits = 2 * torch.log(torch.tensor([[1.0, 2.0, 3.0]]))
    matrix = torch.tensor([[True, False, False], [False, True, True]])
    out = project_log_probs(logits, matrix, temperature=2.0)
    assert torch.allclose(out, torch.log(torch.tensor([[1 / 6, 5 / 6]])), atol=1e-6)


def test_project_log_probs_dense_keeps_spatial_dims():
    logits = torch.randn(2, 4, 3, 5)
    matrix = torch.tensor([[True, False, False, True], [False, True, True, False]])
    out = project_log_probs(logits, matrix)
    assert out.shape == (2, 2, 3, 5)
    assert torch.allclose(out.exp().sum(1), torch.ones(2, 3, 5), atol=1e-6)


def test_partial_label_kl_matches_hand_computation():
    t = 2.0
    # sample 1: student /T -> [0, ln2, ln2] -> grouped {0}, {1,2} = [1/5, 4/5];
    #           teacher /T -> [0, ln3] -> [1/4, 3/4]
    # sample 2: student /T -> [0, 0, 0] -> [1/3, 2/3]; teacher /T -> [0, ln2] -> [1/3, 2/3]: KL 0
    student = torch.tensor([[0.0, 2 * math.log(2), 2 * math.log(2)], [0.0, 0.0, 0.0]])
    teacher = torch.tensor([[0.0, 2 * math.log(3)], [0.0, 2 * math.log(2)]])
    matrix = torch.tensor([[True, False, False], [False, True, True]])
    kl1 = 0.25 * math.log(0.25 / 0.2) + 0.75 * math.log(0.75 / 0.8)
    expected = t**2 * (kl1 + 0.0) / 2  # T^2 factor, mean over the batch
    got = partial_label_kl(student, teacher, matrix, temperature=t)
    assert got.dim() == 0
    assert got.item() == pytest.approx(expected, abs=1e-6)  # float32
    assert expected == pytest.approx(0.0147640, rel=1e-4)


def test_partial_label_kl_per_pixel_equals_per_sample_at_each_pixel():
    torch.manual_seed(0)
    student = torch.randn(2, 4, 3, 5)
    teacher = torch.randn(2, 2, 3, 5)
    matrix = torch.tensor([[True, False, True, True], [False, True, False, False]])
    dense = partial_label_kl(student, teacher, matrix, temperature=2.0)
    flat_s = student.permute(0, 2, 3, 1).reshape(-1, 4)
    flat_t = teacher.permute(0, 2, 3, 1).reshape(-1, 2)
    per_pixel = [partial_label_kl(flat_s[i : i + 1], flat_t[i : i + 1], matrix, 2.0) for i in range(flat_s.shape[0])]
    assert dense.item() == pytest.approx(torch.stack(per_pixel).mean().item(), rel=1e-5)


def test_partial_label_kl_of_a_teacher_with_a_masked_label_is_finite_with_finite_gradients():
    # a teacher masking a label with -inf (as kd_loss and the ensembles take) made the loss NaN: 0 * inf
    student = torch.tensor([[1.0, 0.5, -1.0], [0.0, 2.0, 0.3]], requires_grad=True)
    teacher = torch.tensor([[2.0, -math.inf, 0.5], [-math.inf, 1.0, 0.0]], requires_grad=True)
    identity = torch.eye(3, dtype=torch.bool)
    got = partial_label_kl(student, teacher, identity, 2.0)
    got.backward()
    very_low = partial_label_kl(student.detach(), teacher.detach().clamp_min(-1e3), identity, 2.0)
    assert got.item() == pytest.approx(very_low.item(), rel=1e-6)
    assert torch.isfinite(student.grad).all() and torch.isfinite(teacher.grad).all()
    # the student masked alike where the teacher is: still finite, the masked term 0
    masked = student.detach().clone()
    masked[0, 1] = -math.inf
    masked.requires_grad_(True)
    again = partial_label_kl(masked, teacher, identity, 2.0)
    again.backward()
    assert torch.isfinite(again) and torch.isfinite(masked.grad).all()
    # a whole group masked (a teacher's background over two student classes): logsumexp's own backward is NaN
    grouped = torch.tensor([[True, False, False], [False, True, True]])
    s = torch.tensor([[1.0, -math.inf, -math.inf], [0.0, 2.0, 0.3]], requires_grad=True)
    t = torch.tensor([[2.0, -math.inf], [-math.inf, 1.0]])
    for after in (False, True):
        s.grad = None
        loss = partial_label_kl(s, t, grouped, 2.0, after_projection=after)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(s.grad).all(), after


def test_partial_label_kl_is_zero_for_matching_distributions():
    logits = torch.randn(3, 4)
    identity = torch.eye(4, dtype=torch.bool)
    assert partial_label_kl(logits, logits, identity, 2.0).item() == pytest.approx(0.0, abs=1e-6)


def test_lookup_maps_unknown_names_to_background_or_ignore():
    scenes = ["background", "disc", "square", "bar", "tree"]
    # a target with background: every name it does not know (its own background's name included) -> background
    assert lookup(scenes, SEG_B).tolist() == [0, 0, 0, 1, 0]
    assert lookup(scenes, SEG_A).tolist() == [0, 1, 2, 0, 0]
    # a target without background: unknown names are ignored
    assert lookup(["cat", "dog", "bird"], LabelSpace(("dog", "cat"))).tolist() == [1, 0, IGNORE]


def test_apply_lookup_keeps_ignore_ignored():
    lut = lookup(["cat", "dog", "bird"], LabelSpace(("cat", "dog")))
    target = torch.tensor([[0, 1], [2, IGNORE]])
    assert apply_lookup(target, lut).tolist() == [[0, 1], [IGNORE, IGNORE]]
    lut_bg = lookup(["background", "disc", "square", "bar"], SEG_B)
    assert apply_lookup(torch.tensor([3, IGNORE, 1, 7]), lut_bg).tolist() == [1, IGNORE, 0, IGNORE]


def test_partial_label_kl_weights_scale_each_position():
    torch.manual_seed(0)
    student, teacher = torch.randn(3, 4, 2, 2), torch.randn(3, 2, 2, 2)
    matrix = torch.tensor([[True, False, True, True], [False, True, False, False]])
    plain = partial_label_kl(student, teacher, matrix, 2.0)
    assert partial_label_kl(student, teacher, matrix, 2.0, torch.ones(3, 2, 2)).item() == pytest.approx(plain.item())
    only_first = torch.zeros(3, 2, 2)
    only_first[0] = 1.0
    expected = partial_label_kl(student[:1], teacher[:1], matrix, 2.0) / 3  # still the mean over all 3 samples
    assert partial_label_kl(student, teacher, matrix, 2.0, only_first).item() == pytest.approx(
        expected.item(), rel=1e-5
    )


def test_after_projection_softens_the_restricted_distribution():
    student = torch.tensor([[0.0, math.log(2), math.log(2)]])
    matrix = torch.tensor([[True, False, False], [False, True, True]])
    # T=1: {0} -> 1, {1,2} -> 4 = [1/5, 4/5]; then /T=2 on the log-probs: [1, 2] / 3
    got = project_log_probs(student, matrix, temperature=2.0, after_projection=True)
    assert torch.allclose(got.exp(), torch.tensor([[1 / 3, 2 / 3]]), atol=1e-6)
    # softening first gives the two-class label less: {0} -> 1, {1,2} -> 2*sqrt(2)
    before = project_log_probs(student, matrix, temperature=2.0)
    assert torch.allclose(before.exp(), torch.tensor([[1.0, 2 * math.sqrt(2)]]) / (1 + 2 * math.sqrt(2)), atol=1e-6)
    # both are the same at T=1, and for one-to-one labels at any T
    assert torch.allclose(project_log_probs(student, matrix, 1.0, True), project_log_probs(student, matrix, 1.0))
    eye = torch.eye(3, dtype=torch.bool)
    assert torch.allclose(project_log_probs(student, eye, 2.0, True), project_log_probs(student, eye, 2.0))


def test_after_projection_kl_is_zero_when_the_student_predicts_what_the_teacher_does():
    """A student whose restricted T=1 distribution is the teacher's has nothing left to learn
    with after_projection; softening before projection still pulls it away at T=2."""
    torch.manual_seed(0)
    matrix = torch.tensor([[True, False, True, True], [False, True, False, False]])  # a background of 3
    student = torch.randn(5, 4, 2, 2)
    teacher = project_log_probs(student, matrix)  # teacher logits = the student's T=1 restriction
    after = partial_label_kl(student, teacher, matrix, 2.0, after_projection=True)
    before = partial_label_kl(student, teacher, matrix, 2.0)
    assert after.item() == pytest.approx(0.0, abs=1e-6)
    assert before.item() > 1e-3


def _broadcast_group_logsumexp(z: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """The definition, over a [B, L, U, ...] tensor (what group_logsumexp avoids making)."""
    mask = torch.where(matrix, 0.0, float("-inf"))
    return torch.logsumexp(z.unsqueeze(1) + mask.view(1, *mask.shape, *(1,) * (z.dim() - 2)), dim=2)


@pytest.mark.parametrize("labels,classes,dense", [(11, 11, True), (4, 7, True), (6, 9, False), (3, 3, False)])
def test_group_logsumexp_equals_the_masked_logsumexp_of_its_definition(labels, classes, dense):
    from amalgam.labels.algebra import group_logsumexp

    g = torch.Generator().manual_seed(labels * classes)
    matrix = torch.rand(labels, classes, generator=g) < 0.35
    matrix[0] = False
    matrix[0, classes - 1] = True  # a label of one class, out of the diagonal
    matrix[-1] = True  # a catch-all
    for j in range(labels):
        matrix[j, j] |= not matrix[j].any()
    shape = (3, classes, 4, 5) if dense else (3, classes)
    z = torch.randn(*shape, generator=g, requires_grad=True)
    fast, slow = group_logsumexp(z, matrix), _broadcast_group_logsumexp(z, matrix)
    assert fast.shape == slow.shape and torch.allclose(fast, slow, atol=1e-6)
    weights = torch.rand(slow.shape, generator=g)
    (g_fast,) = torch.autograd.grad((fast * weights).sum(), z)
    (g_slow,) = torch.autograd.grad((slow * weights).sum(), z)
    assert torch.allclose(g_fast, g_slow, atol=1e-6)


def test_group_logsumexp_gives_a_label_of_no_class_minus_infinity_and_no_nan_gradient():
    from amalgam.labels.algebra import group_logsumexp

    matrix = torch.tensor([[True, False, False], [False, False, False], [False, True, True]])
    z = torch.randn(2, 3, requires_grad=True)
    out = group_logsumexp(z, matrix)
    assert torch.equal(out[:, 0], z[:, 0]) and torch.isneginf(out[:, 1]).all()
    assert torch.allclose(out[:, 2], torch.logsumexp(z[:, 1:], 1))
    out[:, [0, 2]].sum().backward()
    assert torch.isfinite(z.grad).all()


def test_an_unmarked_background_label_of_a_partial_teacher_is_said():
    from amalgam.labels.names import unmarked_catch_all

    unified = ["background", "circle", "square", "ring"]
    line = unmarked_catch_all("seg-a", LabelSpace(("Background", "circle", "square")), unified)
    assert line == (
        "teacher 'seg-a': label 'Background' is read as a class of its own, not as everything it does not know"
        " (ring), since teachers.seg-a.background is not set: set it to 'Background' if it stands for everything else"
    )
    marked = LabelSpace(("Background", "circle", "square"), "Background")
    assert unmarked_catch_all("seg-a", marked, unified) is None
    knows_all = LabelSpace(("background", "circle", "square", "ring"))
    assert unmarked_catch_all("seg-a", knows_all, unified) is None
    assert unmarked_catch_all("seg-a", LabelSpace(("circle", "square")), unified) is None  # no such label
    # a trial's 'none' of a 4-class teacher was a class of its own, unsaid (whole-space top-1 0.24 -> 0.18)
    assert "label 'none' is read as a class of its own" in unmarked_catch_all(
        "c", LabelSpace(("circle", "none")), unified
    )
    related = LabelSpace(("other", "shape"), None, (("other",), ("circle", "square", "ring")))  # a relation
    assert unmarked_catch_all("seg-a", related, unified) is None  # covers every class: nothing unknown


def test_an_ignore_label_beside_a_background_is_said():
    # a trial: a segmenter's 'ignore' output became a unified class the student learnt to paint, no word
    from amalgam.labels.names import ignore_like_label

    line = ignore_like_label("seg-a", LabelSpace(("background", "disc", "square", "ignore"), "background"))
    assert line == (
        "teacher 'seg-a': label 'ignore' is read as a class of its own, which the student learns to answer: if the"
        " network's channel marks no class, list it in teachers.seg-a.unused_outputs (its index) and drop it from"
        " the labels"
    )
    from types import SimpleNamespace

    from amalgam.distill.plan import unmarked_catch_alls

    cfg = SimpleNamespace(
        task="segmentation", labels=["background", "disc", "square", "ignore"], background="background"
    )
    recipe = SimpleNamespace(teachers={"seg-a": cfg})
    assert unmarked_catch_alls(recipe, {"segmentation": LabelSpace(("background", "disc", "square"))}) == [line]
    assert ignore_like_label("seg-a", LabelSpace(("void", "disc"), "void")) is None  # the background itself
    assert ignore_like_label("seg-a", LabelSpace(("void", "disc"))) is None  # no background: the catch-all check
    # a trial: without a background an 'ignore' label (no catch-all name) was said by neither check
    assert ignore_like_label("seg-b", LabelSpace(("ignore", "disc"))).startswith("teacher 'seg-b': label 'ignore'")


def test_the_catch_all_check_reads_relation_entries():
    from amalgam.config.label_entries import space_of
    from amalgam.labels.names import unmarked_catch_all

    space = space_of(["background", {"pet": ["cat", "dog"]}], None)  # a dict entry: it crashed the check
    line = unmarked_catch_all("cls", space, ["background", "cat", "dog", "bird"])
    assert line is not None and "(bird)" in line


def test_the_plan_logs_an_unmarked_background(world):
    import yaml

    from amalgam.config.recipe import load_recipe
    from amalgam.distill.plan import build_plan

    teachers = yaml.safe_load(world.read_text())["teachers"]
    partial = next(n for n, t in teachers.items() if t.get("background"))
    lines = []
    build_plan(load_recipe(world, [f"teachers.{partial}.background=null"]), with_data=False, log=lines.append)
    assert any(line.startswith(f"teacher '{partial}': label ") for line in lines), lines


def test_relations_that_split_or_make_classes_silently_are_said():
    # a trial: a plain 'footwear' of one teacher beside another's {footwear: [...]} took every shoe of the
    # student (0.36 whole-space top-1); a relation to 'Cota' (for Coat) took every coat
    from amalgam.labels.relations import relation_warnings

    fine = LabelSpace(("Coat", "Sandal", "Sneaker", "Bag"))
    coarse = LabelSpace(("footwear", "Bag"), covers=(("Sandal", "Sneaker"), ("Bag",)))
    shoes = LabelSpace(("footwear", "Bag"))
    typo = LabelSpace(("4", "Bag"), covers=(("Cota",), ("Bag",)))
    lines = relation_warnings({"fine": fine, "coarse": coarse, "shoes": shoes, "typo": typo})
    assert lines == [
        "warning: teachers.shoes.labels: 'footwear' is a class of its own, while teacher coarse's 'footwear' stands"
        " for Sandal, Sneaker: if they mean the same, write {footwear: [Sandal, Sneaker]} for shoes too",
        "warning: teachers.typo.labels: '4' stands for 'Cota', a class no other teacher names, so it becomes a class"
        " of typo's alone: a typo of one of theirs?",
    ]
    assert relation_warnings({"fine": fine, "coarse": coarse}) == []  # relations onto classes others name
    # a trial renamed digits {three: '3'} ... {nine: '9'} beside a 0-4 teacher: five typo questions on every
    # inspect, build and eval; several renames onto fresh names read as a renaming, said in one line
    low = LabelSpace(("0", "1", "2", "3", "4"))
    high = LabelSpace(("three", "four", "five", "six", "seven"), covers=(("3",), ("4",), ("5",), ("6",), ("7",)))
    assert relation_warnings({"low": low, "high": high}) == [
        "warning: teachers.high.labels: 3 renames onto classes no other teacher names ('five' for '5', 'six' for"
        " '6', 'seven' for '7'): each becomes a class of high's alone; if one was meant as another teacher's"
        " class, it is a typo of its name"
    ]
    assert relation_warnings({"typo": typo}) == []  # alone, a rename is its own business
    # a review: a rename onto a class only an eval set names (VOC's {tvmonitor: tv}), onto the catch-all,
    # and a coarse label over classes no teacher names (a split nobody teaches, not a typo) are no typos
    voc = LabelSpace(("tvmonitor", "bg"), background="bg", covers=(("tv",), ()))
    assert relation_warnings({"voc": voc, "fine": fine}, named={"tv", "person"}) == []
    to_bg = LabelSpace(("void", "Bag"), covers=(("background",), ("Bag",)))
    assert relation_warnings({"to_bg": to_bg, "fine": fine}, named={"background"}) == []
    vehicle = LabelSpace(("vehicle",), covers=(("car", "bus"),))
    assert relation_warnings({"vehicle": vehicle, "fine": fine}) == []
    # a trial: {warm: [red, orange, amber]} beside a teacher of red, orange, yellow: 'amber' (a typo of yellow)
    # became a class nobody teaches apart, without a word
    colours = LabelSpace(("red", "orange", "yellow"))
    warm = LabelSpace(("warm", "blue"), covers=(("red", "orange", "amber"), ("blue",)))
    assert relation_warnings({"colours": colours, "warm": warm}) == [
        "warning: teachers.warm.labels: 'warm' stands for red, orange, amber, of which amber no other teacher and"
        " no eval set names: a class nobody teaches apart; a typo of one of theirs?"
    ]
    assert relation_warnings({"colours": colours, "warm": warm}, named={"amber"}) == []  # an eval set's class


def test_a_rename_onto_another_teachers_group_label_is_said():
    # {"jersey, T-shirt, tee shirt": jersey} beside another teacher's {jersey: [T-shirt/top, Shirt]}: 'jersey'
    # became a class of the first teacher's alone, beside the two it stands for, without a word
    from amalgam.labels import LabelSpace
    from amalgam.labels.relations import relation_warnings

    tv = LabelSpace(("jersey", "jean"), covers=(("T-shirt/top", "Shirt"), ("jean",)))
    loc = LabelSpace(("jersey, T-shirt, tee shirt", "jean"), covers=(("jersey",), ("jean",)))
    items = LabelSpace(("T-shirt/top", "Shirt"))
    lines = relation_warnings({"inet-tv": tv, "inet-loc": loc, "items": items})
    said = [line for line in lines if "make a group of" in line]
    assert said == [
        "warning: teachers.inet-loc.labels: 'jersey, T-shirt, tee shirt' stands for 'jersey', which teacher inet-tv's"
        " labels make a group of T-shirt/top, Shirt, not a class: so 'jersey' becomes a class of inet-loc's alone,"
        ' beside them; if it is that group, write {"jersey, T-shirt, tee shirt": [T-shirt/top, Shirt]}'
    ]


def test_the_unnamed_label_hint_reads_the_sets_classes_through_the_relations():
    # a set naming 'vehicle' (another teacher's group of car and bus): a teacher of car and bus answering
    # 'car' on its vehicles was told to write {car: vehicle}, though it has labels for all a vehicle is
    import torch

    from amalgam.labels import LabelSpace
    from amalgam.labels.relations import unnamed_label_lines

    space = LabelSpace(("car", "bus", "person"))
    classes = ["vehicle", "person"]
    matrix = torch.tensor([[8, 2, 0], [0, 0, 10]])  # set classes x the teacher's labels
    extent = {"vehicle": frozenset({"car", "bus"})}
    assert unnamed_label_lines("t", space, classes, matrix, 3, "images", "here", extent) == []
    (line,) = unnamed_label_lines("t", space, classes, matrix, 3, "images", "here")  # without it: said
    assert "write {car: vehicle}" in line


def test_names_pasted_into_a_recipe_are_quoted_where_yaml_would_read_them_otherwise():
    from amalgam.labels.names import yaml_name

    assert [yaml_name(n) for n in ("4", "no", "null", "1.5", "Coat", "T-shirt/top", "jersey, tee")] == [
        '"4"',
        '"no"',
        '"null"',
        '"1.5"',
        "Coat",
        "T-shirt/top",
        '"jersey, tee"',
    ]


def test_an_eval_class_named_as_a_label_teachers_read_differently_stops_naming_each_reading():
    # a trial: 'crane' was the bird to teacher a and the machine to b; each row scored the set's 'crane' by its
    # own teacher's reading, the whole-label-space row by the first teacher's, and nothing said so
    from amalgam.distill.plan import one_meaning
    from amalgam.errors import RecipeError

    a = LabelSpace(("crane", "dog"), covers=(("crane_bird",), ("dog",)))
    b = LabelSpace(("other", "crane"), background="other", covers=((), ("crane_machine",)))
    with pytest.raises(RecipeError, match=r"^data.eval.v: its class 'crane' is a label of several teachers that mean"
                       r" different classes by it \(teacher a's stands for crane_bird; teacher b's stands for"
                       r" crane_machine\): which one the set means is not guessed"):  # fmt: skip
        one_meaning({"a": a, "b": b}, "v", ["crane", "dog"])
    one_meaning({"a": a, "b": b}, "v", ["crane_bird", "dog"])  # a unified class's own name: one meaning
    one_meaning({"a": a, "c": LabelSpace(("crane",), covers=(("crane_bird",),))}, "v", ["crane"])  # the same one
    # a review: a hierarchy declared on purpose (Cityscapes' person beside COCO's {person: [person, rider]})
    # names the unified class 'person' itself: no ambiguity
    city = LabelSpace(("person", "rider"))
    coco = LabelSpace(("person",), covers=(("person", "rider"),))
    one_meaning({"city": city, "coco": coco}, "v", ["person", "rider"], unified=["person", "rider"])


def test_lookup_over_a_22k_label_space_takes_a_fraction_of_a_second():
    # a review: list scans (names.index, `in known()`) made one lookup of ImageNet-22k's labels take 15.6 s
    import time

    from amalgam.labels import lookup

    names = tuple(f"synset {k:05d} thing" for k in range(22000))
    started = time.perf_counter()
    lut = lookup(list(reversed(names)), LabelSpace(names))
    assert time.perf_counter() - started < 5
    assert lut[0].item() == 21999 and lut[-1].item() == 0
