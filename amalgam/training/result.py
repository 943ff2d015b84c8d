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
        task_weights: each distillation term's weight at the end (learned ``exp(-s)``, ``1 / initial
            loss`` or fixed).
        task_weighting: the scheme's name (``uncertainty``, ``initial_loss``, ``fixed``; empty: a run
            without such terms).
        precision: what the student's forward trained in (``fp32``, ``bf16``, ``fp16``; ``mixed``: a
            resume continued in another one).
        warnings: lines for report.json's ``warnings`` (a diverged student,
            :mod:`amalgam.training.divergence`).
        processes: how many processes trained it (torchrun's; a resume with another count is said).
        teachers: the teachers' fingerprints as training started (``student.pt`` records them).
    """

    epochs: int
    seconds: float
    images: int
    history: list[dict] = field(default_factory=list)
    task_weights: dict[str, float] = field(default_factory=dict)
    task_weighting: str = ""
    precision: str = "fp32"
    warnings: list[str] = field(default_factory=list)
    processes: int = 1
    teachers: dict[str, dict] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        """Training throughput over the whole run."""
        return self.images / self.seconds if self.seconds else 0.0


def weights_text(weighting: str, weights: dict[str, float]) -> str:
    """'task weights at the end (uncertainty): a 1.95, b 0.3' for the build log and report.md."""
    return f"task weights at the end ({weighting}): " + ", ".join(f"{t} {w:.3g}" for t, w in weights.items())
