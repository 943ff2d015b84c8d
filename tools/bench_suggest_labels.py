"""Precision and recall of ``amalgam inspect --suggest-labels`` on a synthetic Fashion-MNIST taxonomy.

Four small CNN teachers are trained on disjoint parts of Fashion-MNIST train, each in its own
label space built from the ten classes (the truth of every label is a set of those classes):

* ``fine``: the ten classes under their own names (the anchor);
* ``renamed``: the ten classes, five under other names (``tee``, ``trousers``, ``sweater``,
  ``handbag``, ``boot``);
* ``coarse``: ``top`` = T-shirt/top + Pullover + Coat + Shirt, ``footwear`` = Sandal + Sneaker +
  Ankle boot, and Trouser, Dress, Bag under their own names;
* ``partial``: five clothes classes only, no background: shoes and bags are forced into them
  (the stress test of precision: nothing about it should be proposed).

The recipe names every label plainly, with no relation. ``--suggest-labels`` then runs the
teachers on Fashion-MNIST test images (the unlabeled source) and proposes relations. A proposal
``teachers.T.labels {l: [u1, ...]}`` is correct when the classes of the other teacher's labels
``u_i`` together are exactly the classes of ``l``. Recall counts the seven labels that need a
relation (five renames, two groups), a rename being found on either side.

Usage: ``python tools/bench_suggest_labels.py [--fashion DIR] [--out docs/results/suggest_labels.md]``
(about 3 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
from get_data import ensure_fashion_mnist  # noqa: E402

from amalgam import api  # noqa: E402
from amalgam.labels.suggest import Suggestion, predictions, suggest_from  # noqa: E402

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
RENAMES = {"T-shirt/top": "tee", "Trouser": "trousers", "Pullover": "sweater", "Bag": "handbag", "Ankle boot": "boot"}
TAXONOMY: dict[str, dict[str, set[str]]] = {  # teacher -> its label -> the classes it stands for
    "fine": {c: {c} for c in CLASSES},
    "renamed": {RENAMES.get(c, c): {c} for c in CLASSES},
    "coarse": {
        "top": {"T-shirt/top", "Pullover", "Coat", "Shirt"},
        "Trouser": {"Trouser"},
        "Dress": {"Dress"},
        "footwear": {"Sandal", "Sneaker", "Ankle boot"},
        "Bag": {"Bag"},
    },
    "partial": {c: {c} for c in ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]},
}

MODELS = """
from torch import nn


def cnn(classes):
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, classes),
    )
"""


def read_idx(path: Path) -> np.ndarray:
    """An idx file (``.gz`` or plain) as an array."""
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def train_teacher(images: torch.Tensor, targets: torch.Tensor, classes: int, epochs: int, seed: int) -> nn.Module:
    """A small CNN on 28x28 grey images normalised as the recipe says (mean 0.5, std 0.5)."""
    namespace: dict = {}
    exec(MODELS, namespace)  # the same definition the recipe's factory module holds
    torch.manual_seed(seed)
    model = namespace["cnn"](classes)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x = (images.float() / 255.0 - 0.5) / 0.5
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for i in range(0, len(x), 128):
            idx = order[i : i + 128]
            loss = nn.functional.cross_entropy(model(x[idx].unsqueeze(1)), targets[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def write_world(work: Path, fashion_root: Path, per_teacher: int, epochs: int) -> Path:
    """Trains the teachers and writes a recipe that names their labels plainly."""
    raw = fashion_root / "FashionMNIST" / "raw"  # filled by get_data.ensure_fashion_mnist
    images = torch.from_numpy(read_idx(raw / "train-images-idx3-ubyte").copy())
    labels = torch.from_numpy(read_idx(raw / "train-labels-idx1-ubyte").astype(np.int64))
    (work / "models.py").write_text(MODELS)
    teachers = {}
    for k, (name, space) in enumerate(TAXONOMY.items()):
        names = list(space)
        owner = {c: names.index(label) for label, members in space.items() for c in members}
        part = torch.arange(k * per_teacher, (k + 1) * per_teacher)  # disjoint training images
        known = torch.tensor([CLASSES[int(y)] in owner for y in labels[part]])
        part = part[known]
        targets = torch.tensor([owner[CLASSES[int(y)]] for y in labels[part]])
        start = time.time()
        model = train_teacher(images[part], targets, len(names), epochs, seed=k)
        torch.save(model.state_dict(), work / f"{name}.pt")
        print(f"  teacher {name}: {len(names)} labels, {len(part)} images, {time.time() - start:.0f} s")
        teachers[name] = {
            "task": "classification",
            "model": {"from": "python", "factory": "models:cnn", "classes": len(names)},
            "checkpoint": f"{name}.pt",
            "input": {"size": [28, 28], "channels": 1, "mean": [0.5], "std": [0.5]},
            "labels": names,
        }
    recipe = {
        "name": "suggest-labels-bench",
        "device": "cpu",
        "data": {
            "image_size": [32, 32],
            "sources": {
                "test": {"type": "torchvision", "name": "FashionMNIST", "root": str(fashion_root), "split": "test"}
            },
        },
        "teachers": teachers,
        "student": {"encoder": "tu-test_resnet"},
    }
    (work / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return work / "recipe.yaml"


def classes_of(name: str, teacher: str) -> set[str]:
    """The classes a unified name stands for: the other teacher's label, else any teacher's of that name."""
    if name in TAXONOMY[teacher]:
        return TAXONOMY[teacher][name]
    return next((space[name] for space in TAXONOMY.values() if name in space), {"?"})


def truth_of(s: Suggestion) -> bool:
    """The labels named in ``covers`` stand for exactly the classes of ``s.label``."""
    union = set().union(*(classes_of(u, s.other) for u in s.covers))
    return union == TAXONOMY[s.teacher][s.label]


def needed() -> list[tuple[str, str]]:
    """Labels that need a relation for the unified space to hold each class once (fine is the anchor)."""
    return [(t, label) for t, space in TAXONOMY.items() for label, members in space.items() if members != {label}]


def score(found: list[Suggestion]) -> dict:
    correct = [s for s in found if truth_of(s)]
    hit = set()
    for s in correct:
        hit.add((s.teacher, s.label))
        if len(s.covers) == 1:  # a rename found on the other side: the other label takes this name
            hit.add((s.other, s.covers[0]))
    want = needed()
    recalled = [n for n in want if n in hit]
    return {
        "proposals": len(found),
        "correct": len(correct),
        "precision": len(correct) / len(found) if found else float("nan"),
        "recall": len(recalled) / len(want),
        "wrong": [f"{s.teacher}: {s.entry()} (vs {s.other})" for s in found if not truth_of(s)],
        "missed": [f"{t}.{label}" for t, label in want if (t, label) not in hit],
    }


def main(argv: list[str] | None = None) -> list[tuple]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fashion", type=Path, default=REPO / "data" / "fashion", help="Fashion-MNIST root")
    parser.add_argument("--per-teacher", type=int, default=12000, help="training images per teacher")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--images", type=int, default=2000, help="unlabeled test images the teachers are run on")
    parser.add_argument("--out", type=Path, help="write the results table (markdown) here")
    parser.add_argument("--work", type=Path, help="keep the teachers here; a folder holding them is reused")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    ensure_fashion_mnist(args.fashion)
    start = time.time()
    if args.work and (args.work / "recipe.yaml").is_file():
        recipe = args.work / "recipe.yaml"
        print(f"reusing the teachers of {args.work}")
    else:
        work = args.work or Path(tempfile.mkdtemp(prefix="suggest-labels-"))
        work.mkdir(parents=True, exist_ok=True)
        print(f"training teachers in {work}")
        recipe = write_world(work, args.fashion.resolve(), args.per_teacher, args.epochs)
    plan = api.inspect(recipe, with_data=True, quiet=True).plan
    preds = predictions(plan, args.images, log=print)
    rows = []
    for min_confidence in (0.0, 0.5, 0.8):
        for member, cover in ((0.5, 0.6), (0.6, 0.7), (0.7, 0.8)):
            found = suggest_from(plan, preds, min_confidence, member_share=member, cover_share=cover)
            rows.append(((min_confidence, member, cover), score(found), found))
    lines = [
        "| min_confidence | member_share | cover_share | proposals | correct | precision | recall |",
        "|---|---|---|---|---|---|---|",
    ]
    for (conf, member, cover), r, _ in rows:
        lines.append(
            f"| {conf} | {member} | {cover} | {r['proposals']} | {r['correct']} | "
            f"{r['precision']:.2f} | {r['recall']:.2f} ({round(r['recall'] * len(needed()))}/{len(needed())}) |"
        )
    default = next(r for r in rows if r[0] == (0.5, 0.6, 0.7))
    lines += ["", "Defaults (0.5, 0.6, 0.7), every proposal:", ""]
    lines += [
        f"- {'ok' if truth_of(s) else 'WRONG'}: `teachers.{s.teacher}.labels {s.entry()}` (vs {s.other}: {s.evidence})"
        for s in default[2]
    ]
    if default[1]["missed"]:
        lines += ["", f"Missed at the defaults: {', '.join(default[1]['missed'])}"]
    lines += ["", "Wrong proposals and misses of the other settings:", ""]
    for (conf, member, cover), r, _ in rows:
        if r["wrong"] or r["missed"]:
            wrong = "; ".join(f"`{w}`" for w in r["wrong"]) or "none"
            lines.append(f"- ({conf}, {member}, {cover}): wrong {wrong}; missed {', '.join(r['missed']) or 'none'}")
    lines += [
        "",
        f"{len(preds.sources)} test images; teachers trained {args.epochs} epochs on {args.per_teacher} "
        f"images each; {time.time() - start:.0f} s in all.",
    ]
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
        print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
