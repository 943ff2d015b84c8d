"""tools/bench_suggest_labels.py: its scoring by hand, and the whole run on tiny fake Fashion-MNIST."""

from __future__ import annotations

import bench_suggest_labels as bench
import pytest

from amalgam.labels.suggest import Suggestion


def proposal(teacher: str, label: str, covers: tuple[str, ...], other: str) -> Suggestion:
    return Suggestion("classification", teacher, label, covers, other, "")


def test_a_proposal_is_right_when_the_other_labels_make_up_exactly_its_classes():
    assert bench.truth_of(proposal("coarse", "footwear", ("Sandal", "Sneaker", "boot"), "renamed"))
    assert bench.truth_of(proposal("renamed", "tee", ("T-shirt/top",), "fine"))
    assert not bench.truth_of(proposal("coarse", "footwear", ("Sandal", "Sneaker"), "fine"))  # one class short
    assert not bench.truth_of(proposal("partial", "Coat", ("Coat", "Bag"), "fine"))  # a forced answer


def test_score_counts_renames_on_either_side():
    assert len(bench.needed()) == 7  # five renames, two groups
    found = [
        proposal("fine", "T-shirt/top", ("tee",), "renamed"),  # the mirror of renamed: {tee: T-shirt/top}
        proposal("coarse", "top", ("T-shirt/top", "Pullover", "Coat", "Shirt"), "fine"),
        proposal("partial", "Coat", ("Coat", "Bag"), "fine"),
    ]
    result = bench.score(found)
    assert (result["proposals"], result["correct"]) == (3, 2)
    assert result["precision"] == pytest.approx(2 / 3)
    assert result["recall"] == pytest.approx(2 / 7)
    assert result["wrong"] == ["partial: {Coat: [Coat, Bag]} (vs fine)"]


def test_runs_end_to_end_on_fake_fashion(fake_fashion_root, tmp_path):
    out = tmp_path / "table.md"
    rows = bench.main(
        ["--fashion", str(fake_fashion_root), "--per-teacher", "10", "--epochs", "1", "--images", "8"]
        + ["--out", str(out)]
    )
    assert len(rows) == 9  # 3 confidences x 3 share settings
    assert out.read_text().startswith("| min_confidence | member_share | cover_share |")
