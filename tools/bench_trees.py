"""Does ``branch_at: auto`` find the tree that hand-trying would? (issue #19, docs/benchmarks.md)

Trains every tree of a grid (all uniform branch points, plus each task alone branching early
while the others share the whole encoder) with one fixed short schedule, runs ``amalgam search``
with the same budget, trains the chosen tree if the grid lacks it, and reports:

* the auto choice's mean student/teacher quality against the grid's best (within the budget) and
  its rank;
* the search's compute against the grid's (wall seconds of training, and student images);
* the chosen tree's parameters and measured batch-1 latency against the budget;
* Kendall's tau between the affinity score and the measured quality over the grid;
* the best tree against the best uniform ``branch_at``.

Quality of a run: the mean over the report's teacher rows of student/teacher, inverted for metrics
where lower is better (rmse), so higher is better everywhere. Every build is its own process and is
skipped when its report exists, so a killed benchmark continues where it stopped::

    python tools/bench_trees.py recipes/quickstart.yaml --out runs/trees \\
        --set train.epochs=2 --set train.samples_per_epoch=800 --budget params=0.5

On N cores: search first (``--no-build`` alone searches), then N processes with ``--shard 0/N``
... ``--shard N-1/N`` (one thread each), then ``--no-build`` again for the summary of every tree.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from amalgam.config.recipe import load_recipe  # noqa: E402
from amalgam.distill.affinity import Affinity  # noqa: E402
from amalgam.distill.tree_search import tree_score  # noqa: E402
from amalgam.students.tree import STAGES, as_yaml, branch_points  # noqa: E402


def grid(tasks: list[str], early: int) -> list[dict[str, int]]:
    """Uniform points 0-5, then each task alone leaving at ``early`` while the others share all."""
    trees = [dict.fromkeys(tasks, p) for p in range(STAGES + 1)]
    trees += [{t: (early if t == alone else STAGES) for t in tasks} for alone in tasks]
    return [branch_points(t, tasks) for t in trees]


def tree_name(points: dict[str, int]) -> str:
    return "tree-" + "-".join(str(p) for p in points.values())


def quality(report: dict) -> float:
    """Mean student/teacher over the teacher rows, inverted where lower is better."""
    rows = [r["ratio"] if r["higher_is_better"] else 1.0 / r["ratio"] for r in report["tasks"]]
    return sum(rows) / len(rows)


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b of two paired lists (ties counted as neither concordant nor discordant)."""
    concordant = discordant = ties_a = ties_b = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            x, y = a[i] - a[j], b[i] - b[j]
            if x == 0 and y == 0:
                continue
            if x == 0:
                ties_a += 1
            elif y == 0:
                ties_b += 1
            elif (x > 0) == (y > 0):
                concordant += 1
            else:
                discordant += 1
    n = concordant + discordant
    denom = ((n + ties_a) * (n + ties_b)) ** 0.5
    return (concordant - discordant) / denom if denom else float("nan")


def amalgam(args: list[str], log: Path) -> float:
    """Runs ``amalgam ...`` as its own process (output to ``log``); returns its wall seconds."""
    start = time.perf_counter()
    with open(log, "w") as f:
        code = subprocess.call([sys.executable, "-m", "amalgam", *args], stdout=f, stderr=subprocess.STDOUT)
    if code:
        raise SystemExit(f"amalgam {' '.join(args)} failed ({code}): see {log}")
    return time.perf_counter() - start


def same_student(search: dict) -> list[str]:
    """Overrides that give every grid tree the searched student (``encoder: auto`` would size each tree
    on its own, and the grid would compare different encoders)."""
    choice = search.get("encoder_choice")
    if not choice:
        return []
    decoders = ",".join(str(c) for c in choice["decoder_channels"])
    return [f"student.encoder={choice['encoder']}", f"student.decoder_channels=[{decoders}]"]


def shard_trees(count: int, shard: str) -> set[int]:
    """The tree indices shard ``I/N`` builds: every N-th from the I-th (shards cover each tree once)."""
    i, n = (int(x) for x in shard.split("/"))
    if not 0 <= i < n:
        raise SystemExit(f"--shard {shard}: expected I/N with 0 <= I < N")
    return set(range(i, count, n))


def build(recipe: Path, out: Path, points: dict[str, int], sets: list[str]) -> dict:
    run = out / tree_name(points)
    if not (run / "report.json").is_file():
        print(f"building {as_yaml(points)} -> {run}", flush=True)
        flags = [x for s in [*sets, f"student.branch_at={as_yaml(points)}"] for x in ("--set", s)]
        amalgam(["build", str(recipe), "--output", str(run), "--force", "--quiet", *flags], out / f"{run.name}.log")
    return json.loads((run / "report.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--out", type=Path, default=Path("runs/trees"))
    parser.add_argument("--set", action="append", default=[], help="recipe override for every build and the search")
    parser.add_argument("--budget", default="params=0.5", help="student.budget for the search (amalgam search)")
    parser.add_argument("--early", type=int, default=2, help="branch point of the mixed trees' lone task")
    parser.add_argument("--no-build", action="store_true", help="summarise the trees already built, build none")
    parser.add_argument(
        "--shard", default="0/1", help="I/N: build every N-th tree from the I-th (N processes, then --no-build)"
    )
    args = parser.parse_args()
    shards = int(args.shard.split("/")[1])
    args.out.mkdir(parents=True, exist_ok=True)
    recipe = load_recipe(args.recipe, args.set)
    tasks = list(dict.fromkeys(t.task for t in recipe.teachers.values()))
    flags = [x for s in args.set for x in ("--set", s)]
    search_dir = args.out / "search"
    if not (search_dir / "search.json").is_file():
        if shards > 1:
            raise SystemExit("--shard: search first (run once with --no-build), so the shards do not all search")
        print("searching", flush=True)
        cmd = ["search", str(args.recipe), "--output", str(search_dir), "--budget", args.budget, *flags]
        amalgam(cmd, args.out / "search.log")
    search = json.loads((search_dir / "search.json").read_text())
    args.set += same_student(search)
    affinity = Affinity(**{k: search["affinity"][k] for k in Affinity.__dataclass_fields__})
    chosen = search["branch_at"]
    trees = grid(tasks, args.early)
    # the chosen tree first, then the grid from the most shared: a cut-short run has the informative rows
    trees = [chosen] + sorted((t for t in trees if t != chosen), key=lambda t: -sum(t.values()))
    rows = []
    for i, points in enumerate(trees):
        done = (args.out / tree_name(points) / "report.json").is_file()
        if not done and (args.no_build or i not in shard_trees(len(trees), args.shard)):
            continue
        report = build(args.recipe, args.out, points, args.set)
        rows.append({
            "branch_at": points, "quality": quality(report), "score": tree_score(points, affinity),
            "params": report["student"]["params"], "latency_b1_ms": report["student"]["latency_ms"]["b1"],
            "train_seconds": report["train"]["seconds"], "over_budget": over_budget(report, search["budget"]),
            "in_grid": points in grid(tasks, args.early), "images": report["train"]["images_per_second"]
            * report["train"]["seconds"],
        })  # fmt: skip
    if shards > 1 or not any(r["branch_at"] == chosen for r in rows):
        print(f"searched; {len(rows)} trees built here: run with --no-build for the summary", flush=True)
        return
    summary = summarise(rows, search, chosen)
    (args.out / "bench_trees.json").write_text(json.dumps({"rows": rows, "summary": summary}, indent=1) + "\n")
    print(to_markdown(rows, summary, search))


def over_budget(report: dict, budget: dict) -> list[str]:
    """What a built tree exceeds of the search's budget (the builds keep the recipe's own budget)."""
    over = []
    if budget["params"] is not None and report["student"]["params"] > budget["params"]:
        over.append(f"{report['student']['params']:,} params > {budget['params']:,}")
    ms = report["student"]["latency_ms"]["b1"]
    if budget["latency_ms"] is not None and ms > budget["latency_ms"]:
        over.append(f"b1 {ms} ms > {budget['latency_ms']} ms")
    return over


def summarise(rows: list[dict], search: dict, chosen: dict) -> dict:
    """The issue's measures over the rows built so far (``grid_built``: how many of the grid)."""
    grid_rows = [r for r in rows if r["in_grid"]]
    fits = [r for r in grid_rows if not r["over_budget"]]
    best_fit = max(fits, key=lambda r: r["quality"]) if fits else None
    auto = next(r for r in rows if r["branch_at"] == chosen)
    better = [r for r in fits if r["quality"] > auto["quality"] and r["branch_at"] != chosen]
    uniform = [r for r in grid_rows if len(set(r["branch_at"].values())) == 1]
    budget = search["budget"]
    return {
        "grid_built": len(grid_rows),
        "chosen": chosen,
        "auto_quality": auto["quality"],
        "best_within_budget": best_fit and {"branch_at": best_fit["branch_at"], "quality": best_fit["quality"]},
        "auto_over_best": best_fit and auto["quality"] / best_fit["quality"],
        "auto_rank_within_budget": len(better) + 1,
        "trees_within_budget": len(fits) + (0 if auto["in_grid"] else 1),
        "search_seconds": search["cost"]["seconds"],
        "grid_train_seconds": sum(r["train_seconds"] for r in grid_rows),
        "search_images": search["cost"]["images"],
        "grid_images": round(sum(r["images"] for r in grid_rows)),
        "chosen_params": auto["params"],
        "budget_params": budget["params"],
        "chosen_latency_b1_ms": auto["latency_b1_ms"],
        "budget_latency_ms": budget["latency_ms"],
        "kendall_tau_all": kendall_tau([r["score"] for r in grid_rows], [r["quality"] for r in grid_rows]),
        "kendall_tau_within_budget": kendall_tau([r["score"] for r in fits], [r["quality"] for r in fits]),
        "best_tree": max(rows, key=lambda r: r["quality"])["branch_at"],
        "best_quality": max(r["quality"] for r in rows),
        "best_uniform": max(uniform, key=lambda r: r["quality"])["branch_at"] if uniform else None,
        "best_uniform_quality": max((r["quality"] for r in uniform), default=float("nan")),
    }


def to_markdown(rows: list[dict], s: dict, search: dict) -> str:
    lines = ["| branch_at | mean quality | affinity score | params | b1 ms | train s | within budget |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in sorted(rows, key=lambda r: -r["quality"]):
        mark = " (auto)" if r["branch_at"] == s["chosen"] else ""
        lines.append(
            f"| `{as_yaml(r['branch_at'])}`{mark} | {r['quality']:.4f} | {r['score']:+.4f} | {r['params']:,} | "
            f"{r['latency_b1_ms']:.2f} | {r['train_seconds']:.0f} | {'no' if r['over_budget'] else 'yes'} |"
        )
    best = s["best_within_budget"]
    lines += [
        "",
        f"- grid trees built: {s['grid_built']}",
        f"- auto: `{as_yaml(s['chosen'])}`, quality {s['auto_quality']:.4f}"
        + (f" = {s['auto_over_best']:.4f} x the best within budget (`{as_yaml(best['branch_at'])}`)" if best else "")
        + f"; rank {s['auto_rank_within_budget']} of {s['trees_within_budget']} within budget",
        f"- compute: search {s['search_seconds']:.0f} s / grid training {s['grid_train_seconds']:.0f} s "
        f"= {s['search_seconds'] / max(s['grid_train_seconds'], 1e-9):.1%}; student images {s['search_images']:,} / "
        f"{s['grid_images']:,} = {s['search_images'] / max(s['grid_images'], 1):.1%}",
        f"- chosen size: {s['chosen_params']:,} params (budget {s['budget_params']:,}), b1 "
        f"{s['chosen_latency_b1_ms']:.2f} ms (budget {s['budget_latency_ms'] or 'none'})",
        f"- Kendall tau (affinity score vs measured quality): {s['kendall_tau_all']:+.3f} over the grid, "
        f"{s['kendall_tau_within_budget']:+.3f} within budget",
        f"- best tree `{as_yaml(s['best_tree'])}` {s['best_quality']:.4f} vs best uniform "
        f"`{as_yaml(s['best_uniform'] or {})}` {s['best_uniform_quality']:.4f}",
        f"- affinities (symmetric, per stage 1-{STAGES}): "
        + "; ".join(
            f"{a}+{b} " + " ".join(f"{0.5 * (t[k][i][j] + t[k][j][i]):+.3f}" for k in range(STAGES))
            for i, a in enumerate(search["affinity"]["tasks"])
            for j, b in enumerate(search["affinity"]["tasks"])
            if i < j
            for t in [search["affinity"]["table"]]
        ),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
