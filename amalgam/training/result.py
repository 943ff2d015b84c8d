"""What a training run measured (read by the report; no dependency on the loop itself)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainResult:
    """What :class:`amalgam.training.trainer.Trainer` measured.

    Attributes:
        epochs: epochs the recipe asked for.
        seconds: training time, summed over resumed parts.
        images: training images seen (all processes together).
        history: one row per finished epoch (the rows of ``train_log.csv``).
    """

    epochs: int
    seconds: float
    images: int
    history: list[dict] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        """Training throughput over the whole run."""
        return self.images / self.seconds if self.seconds else 0.0
