"""Compare the classic multi-teacher and peer strategies on Fashion-MNIST classification.

Every row trains the same small student (``demo_models:small_resnet`` width 8, one block per stage,
32x32 grey input) on the same labelled training images with the same schedule; only the extra
loss changes (labels are allowed here: these are the classic supervised settings, CE + KD).
Teachers come from the recipe (``recipes/strategies.yaml``); their logits and tapped features on
the training images are computed once and reused by every row (no augmentation), except for
stochastic sub-teachers, which run live each step. Each row runs for every seed; the table gives
mean +- std test top-1 and the mean wall time of a row's training.

    python tools/train_teacher.py recipes/zoo/strategies.yaml --all
    python tools/compare_strategies.py recipes/strategies.yaml --seeds 0 1 2 --json runs/strategies.json

It uses amalgam's parts from plain Python (``amalgam.kd``, ``amalgam.teachers.subteachers``), as anyone's
own training loop would.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "recipes")]

from demo_models import small_resnet  # noqa: E402

from amalgam.config.recipe import load_recipe  # noqa: E402
from amalgam.data import build_image_set  # noqa: E402
from amalgam.distill.plan import build_plan  # noqa: E402
from amalgam.kd import LOGIT_ENSEMBLES, ONE, FEEDLoss, SimilarityLoss, dml_loss, kd_loss, kdcl_minlogit_loss  # noqa: E402
from amalgam.kd.peers import one_loss  # noqa: E402
from amalgam.teachers.subteachers import build_subteacher  # noqa: E402
from amalgam.teachers.taps import FeatureTap  # noqa: E402
from amalgam.teachers.teacher import Teacher, to_input  # noqa: E402

#: feature taps of the teachers of recipes/strategies.yaml (penultimate stage of each) and the student
TAPS = {"resnet": "layer4", "vgg": "features.20", "mobilenet": "blocks.5"}
STUDENT_TAP = "layer4"
MEAN, STD = [0.286], [0.353]
T = 4.0  # KD temperature
ALPHA = 0.9  # weight of the KD term; CE gets 1 - ALPHA (Hinton et al.; RepDistiller's CIFAR setting)


def make_student() -> nn.Module:
    return small_resnet(10, in_channels=1, width=8, blocks=1)


@dataclass
class Data:
    """Training images and labels in memory, plus every teacher's precomputed outputs."""

    images: torch.Tensor  # [N, 3, 32, 32] in [0, 1]
    labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    logits: dict[str, torch.Tensor]  # teacher -> [N, 10]
    flipped_logits: dict[str, torch.Tensor]  # teacher -> multi-transform (flip) logits
    features: dict[str, torch.Tensor]  # teacher -> [N, C, h, w] (fp16)


def load(recipe_path: Path, train_images: int, test_images: int, log) -> tuple[Data, dict[str, Teacher]]:
    recipe = load_recipe(recipe_path)
    plan = build_plan(recipe, with_data=False, log=log)
    size = tuple(recipe.data.image_size)

    def tensors(key: str, cfg, limit: int):
        dataset = build_image_set(key, cfg.model_copy(update={"limit": limit}), recipe.resolve, size, True)
        samples = [dataset[i] for i in range(len(dataset))]
        return torch.stack([s["image"] for s in samples]), torch.tensor([int(s["label"]) for s in samples])

    images, labels = tensors("data.sources.items", recipe.data.sources["items"], train_images)
    test_x, test_y = tensors("data.eval.items-test", recipe.data.eval["items-test"], test_images)
    teachers = plan.teachers
    logits, flipped, feats = {}, {}, {}
    flip = build_subteacher("multi_transform", {"flip": True})
    for name, teacher in teachers.items():
        tap = FeatureTap.on(teacher.model, TAPS[name], name)
        outs, maps, flips = [], [], []
        for chunk in images.split(500):
            out, feature = teacher.answer(chunk, tap)
            outs.append(out)
            maps.append(feature.half())
            teacher.sub = flip
            flips.append(teacher(chunk))
            teacher.sub = None
        logits[name], feats[name], flipped[name] = torch.cat(outs), torch.cat(maps), torch.cat(flips)
        acc = top1(teacher, test_x, test_y)
        log(
            f"teacher {name}: test top-1 {acc:.4f}, train top-1 {(logits[name].argmax(1) == labels).float().mean():.4f}"
        )
    return Data(images, labels, test_x, test_y, logits, flipped, feats), teachers


def student_input(images: torch.Tensor) -> torch.Tensor:
    return to_input(images, (32, 32), 1, MEAN, STD)


@torch.no_grad()
def top1(predict: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels: torch.Tensor) -> float:
    correct = sum((predict(x).argmax(1) == y).sum().item() for x, y in zip(images.split(500), labels.split(500)))
    return correct / len(labels)


class Row:
    """One strategy: its trainable modules, its loss on a batch and its deployable prediction."""

    def __init__(self, data: Data, teachers: dict[str, Teacher]):
        self.data, self.teachers = data, teachers
        self.student = make_student()
        self.tap = FeatureTap(STUDENT_TAP)
        self.tap.attach(self.student, "student")

    def modules(self) -> list[nn.Module]:
        return [self.student]

    def loss(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.student(student_input(x)), y)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(student_input(x))

    def kd(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (1 - ALPHA) * F.cross_entropy(logits, y) + ALPHA * kd_loss(logits, target, T)


class SingleKD(Row):
    def __init__(self, data, teachers, teacher: str):
        super().__init__(data, teachers)
        self.teacher = teacher

    def loss(self, x, y, idx):
        target = F.softmax(self.data.logits[self.teacher][idx] / T, 1)
        return self.kd(self.student(student_input(x)), y, target)


class LogitEnsembleRow(Row):
    def __init__(self, data, teachers, kind: str, **kwargs):
        super().__init__(data, teachers)
        self.ensemble = LOGIT_ENSEMBLES.get(kind)(num_teachers=len(data.logits), **kwargs)

    def modules(self):
        return [self.student, self.ensemble]

    def loss(self, x, y, idx):
        logits = self.student(student_input(x))
        stacked = torch.stack([v[idx] for v in self.data.logits.values()])
        target, _ = self.ensemble(stacked, T, features=self.tap.value, labels=y)
        return self.kd(logits, y, target)


class FeatureRow(Row):
    """CE + weight * feature-ensemble loss on the tapped maps."""

    def __init__(self, data, teachers, make: Callable[[int, list[int]], nn.Module], weight: float):
        super().__init__(data, teachers)
        self.student(student_input(data.images[:2]))
        channels = [f.shape[1] for f in data.features.values()]
        self.feature_loss = make(self.tap.value.shape[1], channels)
        self.weight = weight

    def modules(self):
        return [self.student, self.feature_loss]

    def loss(self, x, y, idx):
        logits = self.student(student_input(x))
        maps = [f[idx].float() for f in self.data.features.values()]
        return F.cross_entropy(logits, y) + self.weight * self.feature_loss(self.tap.value, maps)


class SubTeacherRow(Row):
    """KD from one teacher wrapped as sub-teachers (live per step unless precomputed)."""

    def __init__(self, data, teachers, teacher: str, kind: str, **kwargs):
        super().__init__(data, teachers)
        self.teacher = copy.copy(teachers[teacher])
        self.teacher.sub = build_subteacher(kind, kwargs)
        self.name, self.kind = teacher, kind

    def loss(self, x, y, idx):
        if self.kind == "multi_transform":
            target_logits = self.data.flipped_logits[self.name][idx]
        else:
            target_logits = self.teacher(x)
        return self.kd(self.student(student_input(x)), y, F.softmax(target_logits / T, 1))


class PeerRow(Row):
    """``count`` students trained together by a peer loss; the score is the mean over peers."""

    def __init__(self, data, teachers, peer_loss, count: int = 2, temperature: float = 1.0):
        super().__init__(data, teachers)
        self.peers = nn.ModuleList([self.student] + [make_student() for _ in range(count - 1)])
        self.peer_loss, self.temperature = peer_loss, temperature

    def modules(self):
        return [self.peers]

    def loss(self, x, y, idx):
        z = torch.stack([p(student_input(x)) for p in self.peers])
        return self.peer_loss(z, y, self.temperature)[0]

    def scores(self, images, labels) -> list[float]:
        return [top1(lambda x, p=p: p(student_input(x)), images, labels) for p in self.peers]


class ONERow(Row):
    """ONE: the student's stem..layer3 shared, ``branches`` copies of layer4 + classifier, a gate."""

    def __init__(self, data, teachers, branches: int = 3):
        super().__init__(data, teachers)
        s = self.student
        trunk = nn.Sequential(s.conv1, s.bn1, s.relu, s.layer1, s.layer2, s.layer3)
        head = nn.Sequential(s.layer4, s.avgpool, nn.Flatten(), s.fc)
        self.one = ONE(trunk, lambda: copy.deepcopy(head), channels=s.layer3[-1].conv2.out_channels, branches=branches)

    def modules(self):
        return [self.one]

    def loss(self, x, y, idx):
        z, ens = self.one(student_input(x))
        return one_loss(z, ens, y, temperature=3.0)[0]

    def scores(self, images, labels) -> list[float]:
        def branch(i):
            return lambda x: self.one(student_input(x))[0][i]

        return [top1(branch(i), images, labels) for i in range(len(self.one.branches))]


def rows() -> dict[str, Callable[[Data, dict], Row]]:
    """Every row of the table, in order."""
    return {
        "labels only (CE)": Row,
        "KD from resnet": lambda d, t: SingleKD(d, t, "resnet"),
        "KD from vgg": lambda d, t: SingleKD(d, t, "vgg"),
        "KD from mobilenet": lambda d, t: SingleKD(d, t, "mobilenet"),
        "logits: mean": lambda d, t: LogitEnsembleRow(d, t, "mean"),
        "logits: fixed [.5 .25 .25]": lambda d, t: LogitEnsembleRow(d, t, "fixed", weights=[0.5, 0.25, 0.25]),
        "logits: learned gate": lambda d, t: LogitEnsembleRow(d, t, "gate", in_features=64),
        "logits: entropy": lambda d, t: LogitEnsembleRow(d, t, "entropy"),
        "logits: confidence (CA-MKD)": lambda d, t: LogitEnsembleRow(d, t, "confidence"),
        "features: FEED": lambda d, t: FeatureRow(d, t, lambda s, c: FEEDLoss(s, c), 1.0),
        "features: similarity, fixed alpha": lambda d, t: FeatureRow(d, t, lambda s, c: SimilarityLoss(len(c)), 3000),
        "features: similarity, learned alpha": lambda d, t: FeatureRow(
            d, t, lambda s, c: SimilarityLoss(len(c), learn=True), 3000
        ),
        "sub-teachers: stochastic depth (resnet)": lambda d, t: SubTeacherRow(d, t, "resnet", "stochastic_depth"),
        "sub-teachers: MC-dropout (vgg)": lambda d, t: SubTeacherRow(d, t, "vgg", "mc_dropout", samples=2),
        "sub-teachers: noise (resnet)": lambda d, t: SubTeacherRow(d, t, "resnet", "noise", sigma=0.2),
        "sub-teachers: multi-transform flip (resnet)": lambda d, t: SubTeacherRow(d, t, "resnet", "multi_transform"),
        "peers: DML (2 peers)": lambda d, t: PeerRow(d, t, dml_loss, 2),
        "peers: ONE (3 branches)": lambda d, t: ONERow(d, t, 3),
        "peers: KDCL-MinLogit (2 peers)": lambda d, t: PeerRow(d, t, kdcl_minlogit_loss, 2, temperature=2.0),
    }


def train_row(make: Callable, data: Data, teachers, seed: int, epochs: int, batch: int, lr: float):
    torch.manual_seed(seed)
    row = make(data, teachers)
    params = [p for m in row.modules() for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=5e-4)
    steps = epochs * (len(data.labels) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for m in row.modules():
        m.train()
    for _ in range(epochs):
        order = torch.randperm(len(data.labels), generator=gen)
        for i in range(len(data.labels) // batch):
            idx = order[i * batch : (i + 1) * batch]
            loss = row.loss(data.images[idx], data.labels[idx], idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    seconds = time.perf_counter() - start
    for m in row.modules():
        m.eval()
    scores = (
        row.scores(data.test_images, data.test_labels)
        if hasattr(row, "scores")
        else [top1(row.predict, data.test_images, data.test_labels)]
    )
    return statistics.mean(scores), seconds


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path, help="recipe with the three teachers (recipes/strategies.yaml)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=4e-3)
    parser.add_argument("--train-images", type=int, default=10000, help="labelled training images")
    parser.add_argument("--test-images", type=int, default=10000)
    parser.add_argument("--only", nargs="*", help="row names (prefixes) to run")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    data, teachers = load(args.recipe, args.train_images, args.test_images, print)
    results = {}
    for name, make in rows().items():
        if args.only and not any(name.startswith(p) for p in args.only):
            continue
        runs = [train_row(make, data, teachers, s, args.epochs, args.batch_size, args.lr) for s in args.seeds]
        accs, secs = [r[0] for r in runs], [r[1] for r in runs]
        results[name] = {"top1": accs, "seconds": secs}
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(
            f"{name:45s} top-1 {statistics.mean(accs):.4f} +- {std:.4f}  {statistics.mean(secs):6.1f} s/run", flush=True
        )
    print("\n| strategy | test top-1 (mean +- std) | train s/run |\n|---|---|---|")
    for name, r in results.items():
        std = statistics.stdev(r["top1"]) if len(r["top1"]) > 1 else 0.0
        print(f"| {name} | {statistics.mean(r['top1']):.4f} +- {std:.4f} | {statistics.mean(r['seconds']):.1f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": results}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
