"""What amalgam inspect says about labels: look-alike names, the relation matrix, --suggest-labels."""

from __future__ import annotations

import pytest
import torch
from taxonomy_world import taxonomy_world

from amalgam.cli import main
from amalgam.labels import LabelSpace, unify


@pytest.fixture
def on_path(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, "models", raising=False)
    return tmp_path


def test_inspect_warns_about_look_alike_names_and_prints_the_relation_matrix(on_path, capsys):
    from amalgam.labels.taxonomy import likeness, near_duplicates

    assert likeness("tvmonitor", "tv monitor") == "the same name up to case, spacing and plural"
    assert likeness("TV", "tvmonitor") == "'tv' begins or ends 'tvmonitor'"
    assert likeness("Sneakers", "sneaker") == "the same name up to case, spacing and plural"
    assert likeness("colour", "color") == "1 edit apart"
    assert likeness("car", "bus") is None and likeness("person", "bicycle") is None
    spaces = {"voc": LabelSpace(("tvmonitor",)), "other": LabelSpace(("tv monitor", "tv"))}
    warned = near_duplicates(spaces, unify(list(spaces.values())))
    assert len(warned) == 3  # every pair of the three
    assert warned[0].startswith("warning: unified classes 'tvmonitor' (voc) and 'tv monitor' (other) look alike")

    recipe = taxonomy_world(on_path, related=False)
    assert main(["inspect", str(recipe), "--quiet", "--no-data"]) == 0
    out = capsys.readouterr().out
    assert "warning: unified classes 'tvmonitor' (voc) and 'tv' (coco) look alike" in out


def test_inspect_prints_the_matrix_it_will_use(on_path, capsys):

    assert main(["inspect", str(taxonomy_world(on_path)), "--quiet", "--no-data"]) == 0
    out = capsys.readouterr().out
    assert "look alike" not in out  # related: no look-alike classes left
    matrix = out[out.index("label relations:") :].splitlines()
    assert matrix[2] == "    columns: 0 background, 1 tv, 2 person, 3 car, 4 bus"
    assert matrix[3:6] == [
        "    voc.background     x . . x x",
        "    voc.tvmonitor      . x . . .",
        "    voc.person         . . x . .",
    ]
    assert "    coarse.vehicle     . . . x x" in matrix


def test_suggest_labels_proposes_the_renames_and_groups_the_recipe_lacks(on_path, capsys):

    recipe = taxonomy_world(on_path, related=False)
    assert main(["inspect", str(recipe), "--quiet", "--suggest-labels", "8"]) == 0
    out = capsys.readouterr().out
    proposals = [
        line.split("  (vs")[0].strip() for line in out.splitlines() if line.startswith(("  rename", "  group"))
    ]
    # the mirrored tvmonitor/tv rename is kept once: the later teacher takes the earlier one's name
    assert proposals == [
        "rename: teachers.coco.labels {tv: tvmonitor}",
        "group: teachers.coarse.labels {vehicle: [car, bus]}",
    ]
    assert "  coarse:\n    labels: [background, {vehicle: [car, bus]}]" in out
    # applied, the recipe has nothing left to propose
    fixed = ["--set", "teachers.coarse.labels=[background, {vehicle: [car, bus]}]"]
    assert (
        main(
            [
                "inspect",
                str(recipe),
                "--quiet",
                "--suggest-labels",
                "8",
                *fixed,
                "--set",
                "teachers.voc.labels=[background, {tvmonitor: tv}, person]",
            ]
        )
        == 0
    )
    assert "no relation to propose" in capsys.readouterr().out


def test_propose_needs_both_directions_of_evidence_and_skips_unsure_samples():
    from amalgam.labels.suggest import cooccurrence, propose

    b = LabelSpace(("shirt", "coat", "bag"))
    # a coarse 'top' that is B's shirt and coat together; bag lands in top too rarely to join
    coarse = LabelSpace(("top", "bag"))
    counts = torch.tensor([[95, 90, 5], [5, 10, 95]])
    assert [(x, c) for x, c, _ in propose(counts, coarse, b)] == [("top", ("shirt", "coat"))]
    assert propose(counts, coarse, b)[0][2] == "95% of shirt (100), 90% of coat (100) are top; they are 97% of its 190"
    # half of top's samples are something B calls bag, half of B's bags are elsewhere: no group
    assert propose(torch.tensor([[100, 0, 100], [0, 100, 100]]), coarse, b) == []
    # a sample a teacher is unsure of (-1) is not counted
    assert cooccurrence(torch.tensor([0, 1, -1]), torch.tensor([2, -1, 0]), 2, 3).tolist() == [[0, 0, 1], [0, 0, 0]]


def test_proposals_become_one_coherent_edit():
    from amalgam.labels.suggest import Suggestion, consistent

    spaces = {
        "fine": LabelSpace(("Trouser", "T-shirt", "Coat")),
        "renamed": LabelSpace(("trousers", "tee", "Coat")),
        "coarse": LabelSpace(("Trouser", "top")),
    }

    def s(teacher, label, covers, other):
        return Suggestion("classification", teacher, label, tuple(covers), other, f"{teacher}/{other}")

    found = [
        s("fine", "T-shirt", ["tee"], "renamed"),  # the mirror of renamed's tee
        s("renamed", "tee", ["T-shirt"], "fine"),
        s("coarse", "Trouser", ["trousers"], "renamed"),  # would split Trouser in two if applied as is
        s("renamed", "trousers", ["Trouser"], "coarse"),
        s("coarse", "top", ["T-shirt", "Coat"], "fine"),
        s("coarse", "top", ["tee", "Coat"], "renamed"),  # the same group in renamed's names
    ]
    edit = [(x.teacher, x.entry()) for x in consistent(found, spaces, list(spaces))]
    assert edit == [
        ("renamed", "{trousers: Trouser}"),
        ("renamed", "{tee: T-shirt}"),
        ("coarse", "{top: [T-shirt, Coat]}"),
    ]
