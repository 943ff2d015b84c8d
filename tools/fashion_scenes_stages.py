"""The fine-tune chain of docs/benchmarks.md ("Feature adapters on seg-tops' decoder"), stage by stage.

(The best student since is one build with the feature term from the start,
`amalgam build recipes/fashion_scenes.yaml`: "The feature term from the start" in docs/benchmarks.md.)

Each stage is one ``amalgam.build("recipes/fashion_scenes.yaml", overrides)``; a stage that
exists (its student.pt is written) is skipped, and an interrupted one continues (``resume=True``).

1. ``wide``: the benchmark recipe without its feature term (decoder [192, 96, 48, 24, 16], 24
   epochs, flip-averaged teachers, items at weight 2).
2. ``feat``: 4 epochs at lr 2e-4 from stage 1 with the recipe's feature adapters from seg-tops'
   last decoder block to the student's, at weight 1; the task weights are fixed at exp(-s) of
   stage 1's learned ones.
3. ``feat3w``: 4 more epochs at lr 1e-4 from stage 2, the feature term at the recipe's weight 3.

    python tools/fashion_scenes_stages.py --runs runs   # 2.5-3.5 h on 2 CPU cores (8,899 + 1,644 + 1,545 s)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import amalgam  # noqa: E402
from amalgam.distill.objective import learned_task_weights  # noqa: E402
from amalgam.errors import AmalgamError  # noqa: E402

RECIPE = ROOT / "recipes" / "fashion_scenes.yaml"
#: stage 1 is the recipe without its feature term (the values a recipe without one has)
NO_FEATURES = [
    "amalgamation.features=none",
    "amalgamation.taps={}",
    "amalgamation.student_tap=null",
    "amalgamation.feature_weight=1.0",
]


def learned_weights(run: Path) -> str:
    """``{term: exp(-s)}`` of a finished run's uncertainty weights, as a recipe value."""
    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)["objective"]
    return "{" + ", ".join(f"{k}: {v:.2f}" for k, v in sorted(learned_task_weights(state).items())) + "}"


def build(out: Path, overrides: list[str]) -> None:
    """One stage; skipped when done, resumed when interrupted."""
    if (out / "student.pt").exists():
        print(f"{out.name}: done, skipped")
        return
    resume = (out / "checkpoint.pt").exists()
    shown = " ".join(f"--set '{o}'" if " " in o else f"--set {o}" for o in overrides)
    print(f"amalgam build {RECIPE} --output {out} {shown}{' --resume' if resume else ''}", flush=True)
    try:
        amalgam.build(RECIPE, overrides, output=out, resume=resume)
    except AmalgamError as exc:
        raise SystemExit(f"{out.name}: amalgam build failed: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs", help="folder of the stages' run folders")
    args = parser.parse_args(argv)
    runs = args.runs.resolve()
    wide, feat, final = runs / "fashion_scenes_wide", runs / "fashion_scenes_ft_feat", runs / "fashion_scenes_ft_feat3w"
    build(wide, NO_FEATURES)
    # fixed at stage 1's learned weights: a fresh `uncertainty` start (s = 0) would re-weight the terms
    tuned = [f"amalgamation.task_weights={learned_weights(wide)}", "train.epochs=4"]
    build(feat, tuned + [f"student.init={wide / 'student.pt'}", "train.lr=2.0e-4", "amalgamation.feature_weight=1.0"])
    build(final, tuned + [f"student.init={feat / 'student.pt'}", "train.lr=1.0e-4"])
    print(f"the final student: {final / 'student.pt'} (report: {final / 'report.md'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
