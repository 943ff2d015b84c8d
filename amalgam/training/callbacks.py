"""Epoch-end callbacks: plain callables ``(trainer, row)`` run by rank 0 after each finished epoch.

``row`` is the epoch's line of ``train_log.csv`` (epoch, seconds, lr, each loss term's mean, ...).
The order matters: the checkpoint is written before the CSV row, so a row means it is saved.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from amalgam.training.checkpoint import write_checkpoint

if TYPE_CHECKING:
    from amalgam.training.trainer import Trainer

EpochEnd = Callable[["Trainer", dict], None]


def save_checkpoint(trainer: "Trainer", row: dict) -> None:
    """Writes the training state (``trainer.state_dict()``) to ``<run>/checkpoint.pt``, atomically and
    verified, keeping the previous one (see checkpoint.py)."""
    write_checkpoint(trainer.state_dict(), trainer.run_dir / "checkpoint.pt")


def write_train_log(trainer: "Trainer", row: dict) -> None:
    """Rewrites ``<run>/train_log.csv`` from the whole history (a resumed run keeps its rows)."""
    write_rows(trainer.run_dir / "train_log.csv", trainer.result.history)


def write_rows(path: Path, history: list[dict]) -> None:
    """Rows as CSV, with every key any row has (in order of first appearance)."""
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


def open_tensorboard(run_dir: Path, log: Callable[[str], None]):
    """A SummaryWriter under ``run_dir/tensorboard``, or None (with a note) when tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log("train.tensorboard: the tensorboard package is not installed (pip install tensorboard); not logging")
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def tensorboard_writer(run_dir: Path, log: Callable[[str], None]) -> EpochEnd | None:
    """A callback adding every numeric column of the row as a scalar (None without tensorboard)."""
    board = open_tensorboard(run_dir, log)
    if board is None:
        return None

    def add_scalars(trainer: "Trainer", row: dict) -> None:
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                board.add_scalar(key, value, row["epoch"])
        board.flush()

    return add_scalars
