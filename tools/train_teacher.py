"""Train the teachers of a demo zoo from ground truth (the teachers amalgam later merges).

A zoo file is YAML: ``teachers: {NAME: {task, model, input, labels, background, output, train, save}}``
where ``train`` holds ``data`` (a labelled set, as a recipe's ``data.eval`` entry), optional ``val``,
``limit`` (images) and amalgam's ``train:`` keys (epochs, batch_size, lr, ...). A ``from: torchscript``
teacher also gives ``build:`` (the network to train) and is saved, traced, at ``model.path``; every
other teacher is saved as a state dict at ``save``. ``recipe_dir`` (default: the zoo's folder) is
where python factories are imported from and what the printed recipe snippet's paths are relative
to. Relative paths resolve against the zoo file's folder.

Usage::

    python tools/train_teacher.py recipes/zoo/quickstart.yaml --teacher seg-scenes [--epochs N] [--limit N] [--force]
    python tools/train_teacher.py recipes/zoo/quickstart.yaml --all
    python tools/train_teacher.py recipes/zoo/quickstart.yaml --all --evaluate   # score the saved teachers
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Optional

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from amalgam.config.checks import at_key, input_problem
from amalgam.config.recipe import (
    InputSpec,
    ModelConfig,
    SourceConfig,
    TrainConfig,
    UniqueKeyLoader,
    format_validation_error,
)
from amalgam.data.sources import ImageFolderSet, TorchvisionSet, build_image_set
from amalgam.errors import AmalgamError, RecipeError
from amalgam.io import atomic_save
from amalgam.labels import IGNORE, LabelSpace, apply_lookup, lookup
from amalgam.task import Task, get_task, task_names
from amalgam.teachers.model_sources import build_model, check_model, load_checkpoint
from amalgam.teachers.teacher import to_input
from amalgam.training.engine import (
    autocast_for,
    build_optimizer,
    build_scheduler,
    grad_scaler_for,
    random_hflip,
    resolve_device,
    seed_everything,
)

Log = Callable[[str], None]


class TeacherTrain(TrainConfig):
    """amalgam's ``train:`` keys plus the labelled data the teacher learns from."""

    data: SourceConfig
    val: Optional[SourceConfig] = None
    limit: Optional[int] = Field(None, gt=0, description="train on N images of data, as a source's limit picks them")
    init: Optional[Path] = Field(
        None,
        description="state dict to start from (e.g. a backbone pretrained on the items, saved by an earlier "
        "teacher of the zoo): every tensor whose name and shape match the network is loaded",
    )


class ZooTeacher(BaseModel):
    """A recipe teacher block (minus checkpoint/sources/eval) plus how to train and save it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    task: str
    model: ModelConfig
    build: Optional[ModelConfig] = Field(None, description="network to train for a from: torchscript model")
    input: InputSpec
    labels: Optional[list[str]] = None
    background: Optional[str] = None
    output: str = "default"
    train: TeacherTrain
    save: Optional[Path] = None


class Zoo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    recipe_dir: Path = Path(".")
    seed: int = 0
    device: str = "auto"
    teachers: dict[str, ZooTeacher] = Field(min_length=1)


def load_zoo(path: Path) -> Zoo:
    """Reads and validates a zoo file; errors name the file and the key path."""
    if not path.is_file():
        raise AmalgamError(f"zoo file not found: {path}")
    try:
        raw = yaml.load(path.read_text(), Loader=UniqueKeyLoader)
        zoo = Zoo.model_validate(raw)
        check_zoo(zoo, path.resolve().parent)
    except ValidationError as exc:
        raise AmalgamError(f"{path}: {format_validation_error(exc.errors()[0])}") from None
    except (AmalgamError, yaml.YAMLError) as exc:
        raise AmalgamError(f"{path}: {str(exc).splitlines()[0]}") from None
    return zoo


def check_zoo(zoo: Zoo, base: Path) -> None:
    """Cross-key checks, as amalgam's recipe checks do them (errors name the key path)."""
    for name, t in zoo.teachers.items():
        at = f"teachers.{name}"
        if t.task not in task_names():
            raise RecipeError(f"{at}.task", f"unknown task '{t.task}' (expected one of: {', '.join(task_names())})")
        task = get_task(t.task)
        if t.input.size is None:
            raise RecipeError(f"{at}.input.size", "required: the size the teacher is trained at")
        if problem := input_problem(t.input):
            raise RecipeError(f"{at}.input", problem)
        check_zoo_labels(at, t, task)
        if t.output != "default" and t.output not in task.output_kinds:
            raise RecipeError(f"{at}.output", f"expected one of: {', '.join(task.output_kinds)}")
        scripted = t.model.source == "torchscript"
        if scripted and (t.build is None or "path" not in t.model.kwargs()):
            key = f"{at}.build" if t.build is None else f"{at}.model.path"
            raise RecipeError(key, "required for a torchscript teacher")
        if not scripted and (t.build is not None or t.save is None):
            key, why = ("build", "only for a torchscript teacher") if t.build else ("save", "required")
            raise RecipeError(f"{at}.{key}", why)
        net = t.build or t.model
        at_key(f"{at}.{'build' if scripted else 'model'}", check_model, net.source, net.kwargs(), base / zoo.recipe_dir)


def check_zoo_labels(at: str, t: ZooTeacher, task: Task) -> None:
    """A zoo teacher's labels: required for a labelled task, readable by it, refused otherwise."""
    if not task.labelled:
        if t.labels or t.background:
            raise RecipeError(f"{at}.labels", f"a {t.task} teacher has no label space")
        return
    if not t.labels:
        raise RecipeError(f"{at}.labels", f"required for a {t.task} teacher")
    if problem := task.labels_problem(list(t.labels)):
        raise RecipeError(f"{at}.labels", problem)
    try:
        LabelSpace(tuple(t.labels), t.background)
    except ValueError as exc:
        raise RecipeError(f"{at}.labels", str(exc)) from None


def artefact_path(cfg: ZooTeacher, base: Path) -> Path:
    """Where the teacher is saved: the TorchScript path, else ``save``."""
    path = Path(cfg.model.kwargs()["path"]) if cfg.model.source == "torchscript" else cfg.save
    return path if path.is_absolute() else base / path


def output_kind(cfg: ZooTeacher, task: Task) -> str:
    """The teacher's output convention, as :class:`amalgam.teachers.Teacher` resolves it."""
    return task.resolve_output_kind(cfg.output)


def build_network(cfg: ZooTeacher, task: Task, factory_dir: Path) -> nn.Module:
    """The network to train; a TorchScript depth teacher gets an exp head so it outputs metres."""
    net = cfg.build or cfg.model
    model = build_model(net.source, net.kwargs(), factory_dir)
    layer = task.output_layer(output_kind(cfg, task)) if cfg.build is not None else None
    return nn.Sequential(model, layer) if layer is not None else model


def _source_names(key: str) -> list[str]:
    """The checkpoint names a network tensor may be stored under, most specific first."""
    plain = key.removeprefix("0.")
    return [key, plain, plain.removeprefix("encoder.")]


def init_from(model: nn.Module, path: Path) -> int:
    """Loads every tensor of the state dict at ``path`` whose name and shape match ``model``.

    Names are also matched under the ``0.`` prefix that :func:`build_network` adds to a network it
    wraps with an output layer, and under smp's ``encoder.`` (a classifier's backbone saved by an
    earlier zoo entry starts an smp network's encoder: both use torchvision's ResNet names). A grey
    stem (``[o, 1, k, k]``) is inflated to the network's RGB one by repeating it over the channels
    divided by 3, as timm adapts pretrained input convolutions.
    Returns the number of tensors loaded; raises if none matches.
    """
    if not path.is_file():
        raise AmalgamError(f"init checkpoint not found: {path} (train the teacher that saves it first)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    own = model.state_dict()
    matched = {}
    for key, value in own.items():
        source = next((name for name in _source_names(key) if name in state), None)
        if source is None:
            continue
        tensor = state[source]
        if tensor.dim() == 4 and value.dim() == 4 and tensor.shape[1] == 1 and value.shape[1] == 3:
            tensor = tensor.repeat(1, 3, 1, 1) / 3.0
        if tuple(tensor.shape) == tuple(value.shape):
            matched[key] = tensor
    if not matched:
        raise AmalgamError(f"init checkpoint {path}: no tensor matches the network's names and shapes")
    model.load_state_dict(matched, strict=False)
    return len(matched)


def class_indices(dataset: Dataset) -> list[int]:
    """Every sample's class index, read from the set's metadata (no image is decoded) where possible."""
    if isinstance(dataset, TorchvisionSet):
        inner = dataset.dataset
        if isinstance(inner, Subset):
            return torch.as_tensor(inner.dataset.targets)[list(inner.indices)].tolist()
        return torch.as_tensor(inner.targets).tolist()
    if isinstance(dataset, ImageFolderSet):
        return list(dataset.labels)
    return [int(dataset[i]["label"]) for i in range(len(dataset))]


def load_labelled(key: str, src: SourceConfig, base: Path, cfg: ZooTeacher, task: Task, limit: Optional[int]):
    """A labelled set at the teacher's size, its lookup into the teacher's labels (or None).

    For classification, samples whose class the teacher does not know are dropped up front.
    """
    if limit is not None:
        src = src.model_copy(update={"limit": min(limit, src.limit or limit)})
    dataset = build_image_set(key, src, lambda p: p if p.is_absolute() else base / p, cfg.input.size, True)
    if task.target_key not in dataset.target_keys:
        raise AmalgamError(f"{key}: the set has no '{task.target_key}' ground truth for a {task.name} teacher")
    if not task.labelled:
        return dataset, None
    if not dataset.classes:
        raise AmalgamError(f"{key}: the set names no classes (classes.txt), cannot map them to the teacher's labels")
    lut = lookup(dataset.classes, LabelSpace(tuple(cfg.labels), cfg.background))
    if task.target_key == "label":
        keep = [i for i, c in enumerate(class_indices(dataset)) if 0 <= c < len(lut) and lut[c] != IGNORE]
        if not keep:
            raise AmalgamError(f"{key}: no sample belongs to the teacher's labels {cfg.labels}")
        dataset = Subset(dataset, keep)
    return dataset, lut


def to_teacher_batch(batch: dict, cfg: ZooTeacher, task: Task, lut, device, flip_gen: Optional[torch.Generator]):
    """Teacher-space inputs and targets of a batch; random left-right flips when ``flip_gen`` is given."""
    images, target = batch["image"].to(device), batch[task.target_key].to(device)
    if flip_gen is not None:
        if target.dim() == 3:  # dense targets flip with their image
            images, target = random_hflip(images, flip_gen, target)
        else:
            images = random_hflip(images, flip_gen)
    if lut is not None:
        target = apply_lookup(target, lut)
    spec = cfg.input
    return to_input(images, spec.size, spec.channels, spec.mean, spec.std), target


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, lut, cfg: ZooTeacher, task: Task, device) -> dict:
    """The task's metrics of ``model`` on a labelled set, in the teacher's label space."""
    model.eval()
    meter = task.new_meter(len(cfg.labels) if task.labelled else None)
    for batch in DataLoader(data, batch_size=cfg.train.eval_batch_size, num_workers=0):
        x, y = to_teacher_batch(batch, cfg, task, lut, device, None)
        out = task.convert_output(model(x), output_kind(cfg, task)).float()
        meter.update(task.predict(out, tuple(y.shape[-2:]) if task.dense else tuple(cfg.input.size)), y)
    metrics = meter.compute()
    confusion = getattr(meter, "confusion", None)
    if confusion is not None and cfg.labels:
        metrics["per_class"] = per_class(confusion.matrix, cfg.labels)
    return metrics


def per_class(matrix: torch.Tensor, labels: list[str]) -> dict[str, dict[str, float]]:
    """IoU, recall, precision and support of every class from a confusion matrix (rows: truth).

    A class absent from both truth and predictions gets NaN IoU/recall/precision.
    """
    m = matrix.double()
    tp, truth, predicted = m.diag(), m.sum(1), m.sum(0)
    nan = torch.full_like(tp, float("nan"))
    iou = torch.where(truth + predicted - tp > 0, tp / (truth + predicted - tp).clamp(min=1), nan)
    recall = torch.where(truth > 0, tp / truth.clamp(min=1), nan)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), nan)
    rows = {}
    for k, name in enumerate(labels):
        rows[name] = {"iou": iou[k].item(), "recall": recall[k].item(), "precision": precision[k].item()}
        rows[name]["support"] = int(truth[k])
    return rows


def per_class_table(name: str, rows: dict[str, dict[str, float]]) -> str:
    """The per-class metrics as aligned text lines, each prefixed with ``[name]``."""
    width = max(len(label) for label in rows)
    lines = [f"[{name}]   {'class':<{width}}   iou     recall  precision  support"]
    for label, r in rows.items():
        lines.append(
            f"[{name}]   {label:<{width}}   {r['iou']:.4f}  {r['recall']:.4f}  {r['precision']:.4f}     {r['support']}"
        )
    return "\n".join(lines)


def _nan_last(value: float) -> float:
    """Sort key that puts NaN (a class never seen nor predicted) after every number."""
    return float("inf") if value != value else value


def save_torchscript(model: nn.Module, cfg: ZooTeacher, task: Task, path: Path) -> None:
    """Traces ``model`` on an input of the teacher's spec, writes it atomically and checks it reloads."""
    example = torch.rand(2, cfg.input.channels, *cfg.input.size)
    model = model.eval().cpu()
    with warnings.catch_warnings():  # shape asserts in smp's forward and torch's TorchScript deprecation
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example)
        atomic_save(traced, path, save=torch.jit.save)
        reloaded = torch.jit.load(str(path), map_location="cpu")
    space = LabelSpace(tuple(cfg.labels), cfg.background) if task.labelled else None
    kind, raw = output_kind(cfg, task), reloaded(example)
    # in the build's order: the shape of what it gives, then whether it can be of its output kind
    problem = task.check_output(task.convert_output(raw, kind), 2, space) or task.reading_problem(raw, kind)
    if problem:
        raise AmalgamError(f"traced teacher {path}: {problem}")


def recipe_snippet(name: str, cfg: ZooTeacher, path: Path, recipe_dir: Path) -> str:
    """The teacher's block for an amalgamation recipe living in ``recipe_dir``."""
    rel = os.path.relpath(path.resolve(), recipe_dir.resolve())
    entry: dict = {"task": cfg.task}
    if cfg.model.source == "torchscript":
        entry["model"] = {"from": "torchscript", "path": rel}
    else:
        entry["model"] = {"from": cfg.model.source, **cfg.model.kwargs()}
        entry["checkpoint"] = rel
    entry["input"] = {"size": list(cfg.input.size), **cfg.input.model_dump(exclude={"size"})}
    if cfg.labels:
        entry["labels"] = list(cfg.labels)
    if cfg.background:
        entry["background"] = cfg.background
    if cfg.output != "default":
        entry["output"] = cfg.output
    return yaml.safe_dump({name: entry}, sort_keys=False, default_flow_style=None, width=200)


def train_teacher(
    zoo: Zoo,
    name: str,
    base: Path,
    force: bool = False,
    epochs: Optional[int] = None,
    limit: Optional[int] = None,
    log: Log = print,
) -> Optional[dict]:
    """Trains and saves one teacher of a zoo.

    Args:
        zoo: the validated zoo; ``base`` is its file's folder.
        name: the teacher to train.
        force: retrain even if the artefact exists.
        epochs, limit: override the zoo's ``train.epochs`` / ``train.limit``.

    Returns:
        ``{"path", "seconds", "images_per_second", "val"}``, or None if skipped.
    """
    cfg, task = zoo_teacher(zoo, name)
    path, tc = artefact_path(cfg, base), cfg.train
    if path.is_file() and not force:
        log(f"[{name}] {path} exists, skipped (--force retrains)")
        return None
    start = time.perf_counter()
    seed_everything(zoo.seed)
    device = resolve_device(zoo.device)
    model = build_network(cfg, task, base / zoo.recipe_dir)
    if tc.init is not None:
        init = tc.init if tc.init.is_absolute() else base / tc.init
        log(f"[{name}] init: {init_from(model, init)}/{len(model.state_dict())} tensors from {init}")
    model = model.to(device)
    train_set, lut = load_labelled(f"teachers.{name}.train.data", tc.data, base, cfg, task, limit or tc.limit)
    val = load_labelled(f"teachers.{name}.train.val", tc.val, base, cfg, task, None) if tc.val else None
    loader = train_loader(train_set, tc, zoo.seed)
    epochs = epochs or tc.epochs
    opt = build_optimizer(model.parameters(), tc)
    sched = build_scheduler(opt, tc, max(1, epochs * len(loader)))
    flip_gen = torch.Generator().manual_seed(zoo.seed + 1) if tc.augment else None
    kind = output_kind(cfg, task)

    def to_batch(batch: dict):
        return to_teacher_batch(batch, cfg, task, lut, device, flip_gen)

    def convert(out):
        return task.convert_output(out, kind)

    log(f"[{name}] {task.name}: {len(train_set)} training images, {epochs} epochs on {device}")
    metrics, rate = {}, 0.0
    for epoch in range(1, epochs + 1):
        tick = time.perf_counter()
        seen, total = train_epoch(model, loader, to_batch, convert, task, opt, sched, device)
        rate = seen / (time.perf_counter() - tick)
        line = f"[{name}] epoch {epoch}/{epochs}  loss {total / max(seen, 1):.4f}  {rate:.0f} img/s"
        if val is not None:
            metrics = evaluate(model, val[0], val[1], cfg, task, device)
            line += val_summary(metrics, task)
        log(line)
    if cfg.model.source == "torchscript":
        save_torchscript(model, cfg, task, path)
    else:
        atomic_save({k: v.cpu() for k, v in model.state_dict().items()}, path)
    seconds = time.perf_counter() - start
    log(f"[{name}] saved {path.resolve()} ({seconds:.0f} s)")
    log(f"[{name}] recipe teacher block:\n{recipe_snippet(name, cfg, path, base / zoo.recipe_dir)}".rstrip())
    if metrics:
        log_metrics(name, "final val", metrics, task, log)
    return {"path": path, "seconds": seconds, "images_per_second": rate, "val": metrics}


def zoo_teacher(zoo: Zoo, name: str) -> tuple[ZooTeacher, Task]:
    """A teacher of the zoo and its task; the error lists the zoo's teachers."""
    if name not in zoo.teachers:
        raise AmalgamError(f"no teacher '{name}' in the zoo (expected one of: {', '.join(zoo.teachers)})")
    return zoo.teachers[name], get_task(zoo.teachers[name].task)


def log_metrics(name: str, what: str, metrics: dict, task: Task, log: Log) -> None:
    """The headline metric, every float metric and the per-class table (where there is one)."""
    shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
    log(f"[{name}] {what} {task.metric} {metrics[task.metric]:.4f} {shown}")
    if "per_class" in metrics:
        log(per_class_table(name, metrics["per_class"]))


def load_saved(name: str, cfg: ZooTeacher, path: Path, factory_dir: Path) -> nn.Module:
    """The saved teacher: the TorchScript file itself, or the network with its state dict."""
    if cfg.model.source == "torchscript":
        return build_model("torchscript", {"path": str(path)}, factory_dir)
    model = build_model(cfg.model.source, cfg.model.kwargs(), factory_dir)
    load_checkpoint(model, path, f"teacher '{name}'")
    return model


def evaluate_saved(zoo: Zoo, name: str, base: Path, log: Log = print) -> dict:
    """Scores a saved teacher of the zoo on its ``train.val`` set (per class where it has classes)."""
    cfg, task = zoo_teacher(zoo, name)
    if cfg.train.val is None:
        raise AmalgamError(f"teachers.{name}.train.val: required to evaluate the teacher")
    path = artefact_path(cfg, base)
    if not path.is_file():
        raise AmalgamError(f"teacher '{name}': {path} not found (train it first)")
    device = resolve_device(zoo.device)
    model = load_saved(name, cfg, path, base / zoo.recipe_dir).to(device)
    data, lut = load_labelled(f"teachers.{name}.train.val", cfg.train.val, base, cfg, task, None)
    metrics = evaluate(model, data, lut, cfg, task, device)
    log_metrics(name, f"{path.name} on {len(data)} val images:", metrics, task, log)
    return metrics


def train_loader(train_set: Dataset, tc, seed: int) -> DataLoader:
    """Shuffled batches of the training set (whole batches only once there are two or more)."""
    return DataLoader(
        train_set,
        batch_size=tc.batch_size,
        shuffle=True,
        num_workers=tc.workers,
        persistent_workers=tc.workers > 0,
        drop_last=len(train_set) >= 2 * tc.batch_size,  # no 1-sample BatchNorm batch
        generator=torch.Generator().manual_seed(seed),
    )


def train_epoch(model: nn.Module, loader, to_batch, convert, task: Task, opt, sched, device) -> tuple[int, float]:
    """One epoch of supervised training; returns the images seen and the summed loss."""
    model.train()
    precision = "auto" if device.type == "cuda" else "fp32"  # the zoo regenerates in fp32 on CPUs, as before
    scaler = grad_scaler_for(device, precision)  # fp16 on GPUs without bf16 needs loss scaling
    seen, total = 0, 0.0
    for batch in loader:
        x, y = to_batch(batch)
        with autocast_for(device, precision):
            out = convert(model(x))
        loss = task.supervised_loss(out.float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
        seen, total = seen + len(x), total + loss.item() * len(x)
    return seen, total


def val_summary(metrics: dict, task: Task) -> str:
    """The epoch line's validation part: the headline metric and the worst class's per-class metric
    (the task's ``per_class_metric``: IoU for a segmenter, recall for a classifier)."""
    line = f"  val {task.metric} {metrics[task.metric]:.4f}"
    if "per_class" in metrics:
        name = task.per_class_metric or "iou"
        worst = min(metrics["per_class"].items(), key=lambda kv: _nan_last(kv[1][name]))
        label = "IoU" if name == "iou" else name
        line += f"  worst class {label} {worst[1][name]:.4f} ({worst[0]})"
    return line


def train_zoo(
    zoo_path: str | Path,
    names: Optional[list[str]] = None,
    force: bool = False,
    epochs: Optional[int] = None,
    limit: Optional[int] = None,
    log: Log = print,
) -> dict[str, Optional[dict]]:
    """Trains the named teachers (default: all, in file order); returns each one's result (None: skipped)."""
    zoo_path = Path(zoo_path)
    zoo = load_zoo(zoo_path)
    base = zoo_path.resolve().parent
    return {n: train_teacher(zoo, n, base, force, epochs, limit, log) for n in (names or list(zoo.teachers))}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("zoo", type=Path, help="zoo YAML file")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--teacher", action="append", help="teacher to train (repeatable)")
    which.add_argument("--all", action="store_true", help="train every teacher of the zoo, in order")
    parser.add_argument("--epochs", type=int, help="override train.epochs")
    parser.add_argument("--limit", type=int, help="override train.limit (training images)")
    parser.add_argument("--force", action="store_true", help="retrain even if the checkpoint exists")
    parser.add_argument("--evaluate", action="store_true", help="only score the saved teachers on their val sets")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.evaluate:
        return evaluate_main(args.zoo, None if args.all else args.teacher)
    try:
        results = train_zoo(args.zoo, None if args.all else args.teacher, args.force, args.epochs, args.limit)
    except AmalgamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    done = {n: r for n, r in results.items() if r}
    if len(results) > 1:
        times = ", ".join(f"{n} {r['seconds']:.0f} s" for n, r in done.items())
        took = time.perf_counter() - start
        print(f"zoo: {len(done)} trained, {len(results) - len(done)} skipped in {took:.0f} s ({times})")
    return 0


def evaluate_main(zoo_path: Path, names: Optional[list[str]]) -> int:
    """``--evaluate``: scores each saved teacher; 2 on the first error."""
    try:
        zoo = load_zoo(zoo_path)
        for name in names or list(zoo.teachers):
            evaluate_saved(zoo, name, zoo_path.resolve().parent)
    except AmalgamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
