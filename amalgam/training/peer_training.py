"""Peer-learning builds (recipe section ``peers``): DML, ONE or KDCL-MinLogit trained from labels.

The loop of a peers build; the strategies' losses and ONE's model are :mod:`amalgam.kd.peers`.
It honours ``train.epochs``, ``batch_size``, ``lr``, ``optimizer``, ``momentum``, ``weight_decay``,
``schedule``, ``workers`` and ``samples_per_epoch``; the recipe check refuses the distillation-only
keys of :data:`~amalgam.config.schema.PEERS_UNUSED_TRAIN_KEYS`. ``--resume`` continues after the
last finished epoch.

``amalgam build`` runs these when a recipe has ``peers`` instead of ``teachers``. The run folder
gets ``peers.pt`` (the trained models), ``checkpoint.pt`` each epoch, ``train_log.csv``,
``report.json`` and ``report.md`` (each peer's and the ensemble's top-1 on the eval set).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from amalgam.config.checks import unused_peers_sections
from amalgam.config.schema import PEERS_UNUSED_TRAIN_KEYS as UNUSED_TRAIN_KEYS  # noqa: F401 (its old home)
from amalgam.config.schema import PeersConfig, Recipe
from amalgam.data import build_image_set
from amalgam.data.sources import eval_limit
from amalgam.errors import AmalgamError
from amalgam.io import atomic_save, write_json
from amalgam.kd.peers import ONE, PEER_STRATEGIES
from amalgam.students.build import count_params
from amalgam.teachers.model_sources import build_model
from amalgam.teachers.teacher import to_input
from amalgam.training.checkpoint import write_checkpoint
from amalgam.training.optim import build_optimizer, build_scheduler
from amalgam.training.runlock import release_in_worker


class PeerGroup(nn.Module):
    """``count`` independent peers; ``forward`` gives ``(logits [K, B, C], their mean)``."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        self.peers = nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.stack([p(x) for p in self.peers])
        return z, z.mean(0)


def split_model(model: nn.Module, at: str) -> tuple[nn.Module, nn.Module, int]:
    """Splits a sequential-by-children network (ResNet-style) before its child ``at``.

    Returns ``(trunk, head, trunk_channels)``; a Flatten goes before the head's first Linear.
    """
    names = [n for n, _ in model.named_children()]
    if at not in names:
        raise AmalgamError(f"peers.split_at: the model has no top-level module '{at}' (it has: {', '.join(names)})")
    children = list(model.children())
    i = names.index(at)
    head: list[nn.Module] = []
    for child in children[i:]:
        if isinstance(child, nn.Linear) and not any(isinstance(h, nn.Flatten) for h in head):
            head.append(nn.Flatten())
        head.append(child)
    trunk = nn.Sequential(*children[:i])
    channels = [m.out_channels for m in trunk.modules() if isinstance(m, nn.Conv2d)][-1]
    return trunk, nn.Sequential(*head), channels


def build_peers(cfg: PeersConfig, base_dir: Path) -> nn.Module:
    """The peer group (dml, kdcl) or the ONE network (shared trunk, ``count`` branches)."""
    if PEER_STRATEGIES.get(cfg.strategy).shared_trunk:
        trunk, head, channels = split_model(build_model(cfg.model.source, cfg.model.kwargs(), base_dir), cfg.split_at)
        return ONE(trunk, lambda: copy.deepcopy(head), channels, cfg.count)
    return PeerGroup([build_model(cfg.model.source, cfg.model.kwargs(), base_dir) for _ in range(cfg.count)])


def peer_loss(cfg: PeersConfig, z: torch.Tensor, ens: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The strategy's loss on one batch: peer logits ``z`` ``[K, B, C]``, their ensemble, the labels."""
    return PEER_STRATEGIES.get(cfg.strategy).loss(z, ens, y, cfg.temperature)


def _labelled(recipe: Recipe, group: str, key: str):
    cfg = getattr(recipe.data, group)[key]
    if group == "eval":  # scored on train.max_eval_images of them, as a distillation build is
        cfg = eval_limit(cfg, recipe.train.max_eval_images)
    dataset = build_image_set(f"data.{group}.{key}", cfg, recipe.resolve, tuple(recipe.data.image_size), True)
    names = recipe.peers.labels
    if "label" not in dataset.target_keys or not dataset.classes:
        raise AmalgamError(f"data.{group}.{key}: peers need a labelled classification set")
    missing = [c for c in dataset.classes if c not in names]
    if missing:
        raise AmalgamError(f"peers.labels: classes of data.{group}.{key} not in the labels: {missing}")
    return dataset, torch.tensor([names.index(c) for c in dataset.classes])


def train_peers(
    recipe: Recipe,
    run_dir: Path,
    device: torch.device,
    log: Callable[[str], None] = print,
    resume: Optional[dict] = None,
) -> dict:
    """Trains the peers, evaluates them and writes the run folder; returns the report.

    ``checkpoint.pt`` (written after every epoch) holds every state and random stream, so a
    ``resume`` from it ends where an uninterrupted run would.
    """
    cfg, train = recipe.peers, recipe.train
    list(map(log, unused_peers_sections(recipe)))
    torch.manual_seed(recipe.seed)
    model = build_peers(cfg, recipe.base_dir).to(device)
    dataset, remap = _labelled(recipe, "sources", cfg.source)
    samples = min(train.samples_per_epoch or len(dataset), len(dataset))
    gen = torch.Generator().manual_seed(recipe.seed)
    sampler = RandomSampler(dataset, num_samples=samples, generator=gen)
    loader = DataLoader(  # its workers let go of the run folder's lock, as the distillation loader's do
        dataset, train.batch_size, sampler=sampler, num_workers=train.workers, worker_init_fn=release_in_worker
    )
    prep = input_converter(recipe, device)
    opt = build_optimizer(model.parameters(), train)
    sched = build_scheduler(opt, train, max(1, train.epochs * len(loader)))
    run = {"epoch": 0, "history": [], "images": 0, "seconds": 0.0}
    if resume is not None:
        run = _restore(resume, model, opt, sched, gen)
        log(f"resuming after epoch {run['epoch']} of {train.epochs}")
    start = time.perf_counter() - run["seconds"]
    for epoch in range(run["epoch"] + 1, train.epochs + 1):
        model.train()
        total, count = 0.0, 0
        for batch in loader:
            y = remap[batch["label"]].to(device)
            total, count = total + _peer_step(cfg, model, prep(batch["image"]), y, opt, sched, epoch), count + 1
            run["images"] += len(y)
        run.update(epoch=epoch, seconds=time.perf_counter() - start)
        run["history"].append({"epoch": epoch, "seconds": round(run["seconds"], 2), "loss": total / max(count, 1)})
        log(f"epoch {epoch}/{train.epochs} loss {total / max(count, 1):.4f} {run['images'] / run['seconds']:.1f} img/s")
        write_checkpoint(_state(recipe, run, model, opt, sched, gen), run_dir / "checkpoint.pt")
        _write_csv(run_dir / "train_log.csv", run["history"])  # after the checkpoint: a row means it is saved
    atomic_save(model.state_dict(), run_dir / "peers.pt")
    return _report(recipe, model, prep, device, run, run_dir)


def _state(recipe: Recipe, run: dict, model: nn.Module, opt, sched, gen: torch.Generator) -> dict:
    """A peers build's ``checkpoint.pt``: everything ``--resume`` needs after ``run["epoch"]`` epochs."""
    return {
        "kind": "peers",
        **run,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "sampler_rng": gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "recipe": recipe.model_dump(mode="json", exclude={"output"}),
    }


def _restore(state: dict, model: nn.Module, opt, sched, gen: torch.Generator) -> dict:
    """Loads a peers checkpoint into the build; returns its progress (epoch, history, images, seconds)."""
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    gen.set_state(state["sampler_rng"])
    torch.set_rng_state(state["torch_rng"])
    return {
        "epoch": state["epoch"],
        "history": list(state["history"]),
        "images": state["images"],
        "seconds": state["seconds"],
    }


def _report(recipe: Recipe, model: nn.Module, prep, device: torch.device, run: dict, run_dir: Path) -> dict:
    """Scores the peers, writes ``report.json`` and ``report.md``; returns the report."""
    cfg, seconds = recipe.peers, run["seconds"]
    scores = evaluate_peers(recipe, model, prep, device) if cfg.eval else {}
    report = {
        "recipe": recipe.name,
        "strategy": cfg.strategy,
        "peers": [{"name": f"peer-{i + 1}", "top1": s} for i, s in enumerate(scores.get("peers", []))],
        "ensemble_top1": scores.get("ensemble"),
        "params": count_params(model),
        "train": {
            "epochs": recipe.train.epochs,
            "seconds": round(seconds, 2),
            "images_per_second": round(run["images"] / seconds, 2) if seconds else 0.0,
        },
    }
    write_json(report, run_dir / "report.json")
    (run_dir / "report.md").write_text(to_markdown(report))
    return report


def input_converter(recipe: Recipe, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """Images in [0, 1] -> the peers' input spec (``peers.input``), on ``device``."""
    spec = recipe.peers.input
    size = tuple(spec.size or recipe.data.image_size)
    return lambda images: to_input(images.to(device), size, spec.channels, spec.mean, spec.std)


def _peer_step(cfg: PeersConfig, model: nn.Module, x: torch.Tensor, y: torch.Tensor, opt, sched, epoch: int) -> float:
    """One optimiser step of every peer on one batch; returns the loss."""
    z, ens = model(x)
    loss = peer_loss(cfg, z, ens, y)
    if not torch.isfinite(loss):
        raise AmalgamError(f"peers ({cfg.strategy}): loss is {loss.item()} at epoch {epoch}: training stopped")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return loss.item()


@torch.no_grad()
def evaluate_peers(recipe: Recipe, model: nn.Module, prep, device: torch.device) -> dict:
    """Top-1 of every peer (ONE: every branch) and of their ensemble on the eval set."""
    dataset, remap = _labelled(recipe, "eval", recipe.peers.eval)
    loader = DataLoader(dataset, batch_size=recipe.train.eval_batch_size)
    model.eval()
    correct, ens_correct, total = None, 0, 0
    for batch in loader:
        y = remap[batch["label"]].to(device)
        z, ens = model(prep(batch["image"]))
        hits = (z.argmax(2) == y).sum(1)
        correct = hits if correct is None else correct + hits
        ens_correct += (F.softmax(ens, 1).argmax(1) == y).sum().item()
        total += len(y)
    return {"peers": [c / total for c in correct.tolist()], "ensemble": ens_correct / total}


def to_markdown(report: dict) -> str:
    lines = [
        f"# amalgam report: {report['recipe']} (peers: {report['strategy']})",
        "",
        "| model | top-1 |",
        "|---|---|",
    ]
    lines += [f"| {p['name']} | {p['top1']:.4f} |" for p in report["peers"]]
    if report["ensemble_top1"] is not None:
        lines.append(f"| ensemble | {report['ensemble_top1']:.4f} |")
    t = report["train"]
    lines += [
        "",
        f"{report['params']:,} parameters; {t['epochs']} epochs in {t['seconds']} s ({t['images_per_second']} img/s)",
    ]
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys = list(rows[0]) if rows else []
    path.write_text("\n".join([",".join(keys)] + [",".join(str(r[k]) for k in keys) for r in rows]) + "\n")
