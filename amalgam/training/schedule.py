"""How many optimizer steps a recipe's schedule gives the student, and the warning when a dense
task gets too few to leave the background plateau.

Measured in docs/benchmarks.md (issue #15): dense students, and the same networks trained on the
ground truth, painted background (or one or two classes) for their first several hundred steps;
the supervised teachers took off after ~375-500. Below :data:`DENSE_MIN_STEPS` a low segmentation
ratio says more about the schedule than about the teachers or the loss, and the user is told so.
"""

from __future__ import annotations

import math
from typing import Optional

from pydantic import BaseModel

from amalgam.config.schema import TrainConfig
from amalgam.training.optim import warmup_steps

#: fewer optimizer steps than this for a student with a dense task draws the warning
DENSE_MIN_STEPS = 1000


def optimizer_steps(train: TrainConfig, source_images: int) -> int:
    """Steps of the whole schedule: epochs x batches of ``samples_per_epoch`` (default: every image)."""
    samples = train.samples_per_epoch or source_images
    batches = samples // train.batch_size if samples >= 2 * train.batch_size else math.ceil(samples / train.batch_size)
    return train.epochs * max(batches, 1)


def steps_per_epoch(train: TrainConfig, source_images: int) -> int:
    """Optimizer steps of one epoch (the length of the training loader)."""
    return optimizer_steps(train, source_images) // train.epochs


def short_schedule_warning(steps: int, dense_tasks: list[str]) -> Optional[str]:
    """The warning for a dense student trained for fewer than :data:`DENSE_MIN_STEPS` steps, or None."""
    if not dense_tasks or steps >= DENSE_MIN_STEPS:
        return None
    return (
        f"warning: the schedule gives the student {steps:,} optimizer steps for its dense tasks"
        f" ({', '.join(dense_tasks)}); in docs/benchmarks.md dense students, and the same networks trained on the"
        f" ground truth, were still far from their teachers under {DENSE_MIN_STEPS:,} steps (segmentation near"
        " background): expect low dense ratios, or raise train.epochs / train.samples_per_epoch"
    )


#: defaults that changed, by (section, key): since when, and what runs of before read (an upgraded user's old
#: recipe trains otherwise with no word of it but "(default)"; docs/upgrading.md lists them all)
CHANGED_DEFAULTS = {
    ("amalgamation", "class_balance"): ("2026-12-01", 0.0),
    ("amalgamation", "focal"): ("2026-12-02", 0.0),
}


def said_settings(section: BaseModel, keys: tuple[str, ...], name: str = "") -> str:
    """``lr 0.004, schedule cosine (default), ...``: each setting of a recipe section (``name``), a default
    marked, and a default that changed with its date and former value, so that a log or ``inspect`` shows what
    trained even where the recipe left it out."""
    defaults = type(section).model_fields
    parts = []
    for key in keys:
        value = getattr(section, key)
        parts.append(f"{key} {value:g}" if isinstance(value, float) else f"{key} {value}")
        if value == defaults[key].default:
            since, before = CHANGED_DEFAULTS.get((name, key), (None, None))
            was = f"{before:g}" if isinstance(before, float) else before  # numbers as the line says them
            parts[-1] += f" (default since {since}; {was} before)" if since else " (default)"
    return ", ".join(parts)


#: the distillation settings every build says, defaults marked (a trial found the changed defaults unsaid) ...
DISTILL_SETTINGS = ("temperature", "class_balance", "focal", "features")
#: ... and those it says where the recipe moves them from their defaults (set, they went unsaid)
DISTILL_SETTINGS_MOVED = ("temperature_after_projection", "pseudo_labels", "domain_weights", "feature_weight")


def distillation_line(amalgamation: BaseModel) -> str:
    """What ``inspect`` and the build log say about the distillation's settings, defaults marked."""
    defaults = type(amalgamation).model_fields
    moved = tuple(k for k in DISTILL_SETTINGS_MOVED if getattr(amalgamation, k) != defaults[k].default)
    return "distillation: " + said_settings(amalgamation, DISTILL_SETTINGS + moved, "amalgamation")


def schedule_lines(train: TrainConfig, source_images: Optional[int], dense_tasks: list[str]) -> list[str]:
    """What ``inspect`` and the build log say about the schedule (nothing when the images are unknown)."""
    if source_images is None and train.samples_per_epoch is None:
        return []
    steps = optimizer_steps(train, source_images or 0)
    warm = warmup_steps(train, steps)
    momentum = ("momentum",) if train.optimizer == "sgd" else ()  # AdamW has none: said as unused where set
    lines = [
        f"schedule: {train.epochs} epochs of {train.samples_per_epoch or source_images:,} images, {steps:,} steps"
        + (f" (the first {warm:,} warm up)" if warm else ""),
        "  training: " + said_settings(train, ("optimizer", "lr", "schedule", "batch_size", "weight_decay") + momentum),
    ]
    scale = train.encoder_lr_scale
    if scale != 1:
        lines.append(f"  the student's encoder stages learn at {scale:g} x train.lr ({scale * train.lr:.3g})")
    warning = short_schedule_warning(steps, dense_tasks)
    return lines + ([f"  {warning}"] if warning else [])


#: draws per image an epoch above which a source is said to be repeated over and over
MANY_REPEATS = 20


def repeat_warnings(train: TrainConfig, sizes: dict[str, int], weights: dict[str, float]) -> list[str]:
    """A warning per training source whose images are drawn :data:`MANY_REPEATS` times or more an epoch (its
    weight's share of ``train.samples_per_epoch`` over its images): a trial's one-image source took 270 of an
    epoch's 400 draws without a word."""
    total, samples = sum(weights.values()), train.samples_per_epoch or sum(sizes.values())
    lines = []
    for name, count in sizes.items():
        draws = samples * weights[name] / total
        if count and draws / count >= MANY_REPEATS:
            lines.append(
                f"warning: data.sources.{name}: its {count:,} image{'s' if count != 1 else ''} take {draws:,.0f} of"
                f" each epoch's {samples:,} draws, each about {draws / count:,.0f} times: the student sees them over"
                f" and over; give it more images, or a smaller data.sources.{name}.weight"
            )
    return lines


def source_repeats(plan) -> list[str]:
    """:func:`repeat_warnings` of a plan's training sources (``plan``: a :class:`~amalgam.distill.plan.Plan` with
    its sources scanned), as the build log and ``inspect`` say them."""
    sizes = {name: len(s) for name, s in zip(plan.sources.names, plan.sources.sets)}
    weights = {name: plan.recipe.data.sources[name].weight for name in sizes}
    return repeat_warnings(plan.recipe.train, sizes, weights)
