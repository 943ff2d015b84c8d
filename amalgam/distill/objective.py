"""The amalgamation objective: per-teacher distillation terms, feature terms (:mod:`amalgam.distill.features`)
and task weighting."""

from __future__ import annotations

import math
import weakref
from typing import Optional, Union

import torch
from torch import nn

from amalgam.distill.features import FEATURE_TERMS
from amalgam.distill.plan import Plan
from amalgam.distill.targets import Targets, live_targets
from amalgam.distill.weighting import TASK_WEIGHTINGS, FixedWeights, TaskWeighting
from amalgam.errors import AmalgamError
from amalgam.kd import LOGIT_ENSEMBLES
from amalgam.kd.class_balance import pixel_weight_options
from amalgam.students.build import default_student_tap
from amalgam.task import DistillOptions, distill
from amalgam.teachers.teacher import FeatureTap
from amalgam.training.schedule import steps_per_epoch


def ensemble_groups(plan: Plan) -> list[list[str]]:
    """Teachers an ``amalgamation.ensemble`` merges: two or more of one labelled task with the same
    labels, background and sources (each such group gives one distillation term)."""
    groups: dict[tuple, list[str]] = {}
    for name, t in plan.teachers.items():
        if t.task.labelled:
            key = (t.task.name, t.space.names, t.space.background, tuple(sorted(t.source_names)))
            groups.setdefault(key, []).append(name)
    return [g for g in groups.values() if len(g) > 1]


def objective_terms(plan: Plan) -> dict[str, list[str]]:
    """The objective's distillation terms: term name -> its teachers (a teacher alone, or an
    ``amalgamation.ensemble`` group named "a+b")."""
    groups = ensemble_groups(plan) if plan.recipe.amalgamation.ensemble else []
    grouped = {n for g in groups for n in g}
    return {n: [n] for n in plan.teachers if n not in grouped} | {"+".join(g): g for g in groups}


def student_tap_module(plan: Plan, spec) -> Optional[str]:
    """The student module the objective reads features from (feature terms, or an ensemble gate
    that needs features), or None when it reads none."""
    amal = plan.recipe.amalgamation
    if amal.features == "none" and not _ensemble_needs_features(amal):
        return None
    return amal.student_tap or default_student_tap(spec)


def _ensemble_needs_features(amal) -> bool:
    """Whether ``amalgamation.ensemble`` is a gate that reads the student's features."""
    return amal.ensemble is not None and LOGIT_ENSEMBLES.get(amal.ensemble.type).needs_features


class Objective(nn.Module):
    """Computes the weighted sum of every teacher's term on one batch.

    Trainable parts (uncertainty log-variances, feature adaptors, ensemble gates) are parameters of
    this module, so they are optimised and checkpointed with the student. ``epoch_steps`` (the
    optimizer steps of one epoch, by default the recipe's schedule over the plan's sources) is the
    window of ``task_weights: initial_loss``.
    """

    def __init__(self, plan: Plan, student: nn.Module, epoch_steps: Optional[int] = None):
        super().__init__()
        amal = plan.recipe.amalgamation
        self.plan = plan
        self.temperature = amal.temperature
        self.feature_weight = amal.feature_weight
        #: distillation terms: a teacher alone, or an ensemble group named "a+b"
        self.terms = objective_terms(plan)
        self.groups = [g for g in self.terms.values() if len(g) > 1]
        if epoch_steps is None and plan.sources is not None:
            epoch_steps = steps_per_epoch(plan.recipe.train, len(plan.sources))
        #: how the terms are weighed against each other (:mod:`amalgam.distill.weighting`)
        self.weighting = task_weighting(amal.task_weights, plan, self.terms, epoch_steps)
        #: fixed keyword options of each term's distill_loss (given only when set: plugin tasks need not know them)
        self.loss_options: dict[str, dict] = {
            term: {"after_projection": True}
            if amal.temperature_after_projection and plan.projections.get(group[0]) is not None
            else {}
            for term, group in self.terms.items()
        }
        for term, group in self.terms.items():
            task = plan.teachers[group[0]].task
            self.loss_options[term].update(pixel_weight_options(task, amal))
        #: domain weights: term -> the unified classes its teachers know, for terms that know only some
        self.known_classes: dict[str, torch.Tensor] = {}
        for term, group in self.terms.items() if amal.domain_weights else ():
            proj = plan.projections.get(group[0])
            if proj is not None and not bool(proj.any(0).all()):
                self.known_classes[term] = proj.any(0)
        self.adapters = nn.ModuleDict()
        self.ensembles = nn.ModuleDict()
        #: the features this objective reads, tapped here and nowhere else: the student's, and each
        #: tapped teacher's (what a teacher cache must store: :func:`amalgam.distill.cache.open_cache`)
        self.student_tap: Optional[FeatureTap] = None
        self.teacher_taps: dict[str, FeatureTap] = {}
        needs_features = _ensemble_needs_features(amal)
        tap_module = student_tap_module(plan, getattr(student, "spec", None))
        if tap_module is not None:
            self._tap_student(student, tap_module)
        if amal.features != "none":
            self._build_feature_terms(FEATURE_TERMS.get(amal.features), amal.taps)
        for term, group in self.terms.items():
            if len(group) > 1:
                extra = {"in_features": self.student_tap.value.shape[1]} if needs_features else {}
                make = LOGIT_ENSEMBLES.get(amal.ensemble.type)
                self.ensembles[term] = make(num_teachers=len(group), **amal.ensemble.kwargs(), **extra)
        # the hooks go when the objective does (they hold no reference to it)
        weakref.finalize(self, _detach, [self.student_tap, *self.teacher_taps.values()])

    def _dummy(self) -> torch.Tensor:
        return torch.rand(2, 3, *tuple(self.plan.recipe.data.image_size))

    def _tap_student(self, student: nn.Module, module_name: str) -> None:
        self.student_tap = FeatureTap.on(student, module_name, "amalgamation.student_tap")
        was_training = student.training
        student.eval()
        with torch.no_grad():
            student(self._dummy())
        student.train(was_training)

    def _build_feature_terms(self, make, taps: dict[str, str]) -> None:
        for name, module_name in taps.items():
            teacher = self.plan.teachers[name]
            tap = FeatureTap.on(teacher.model, module_name, f"amalgamation.taps.{name}")
            self.teacher_taps[name] = tap
            _, feature = teacher.answer(self._dummy(), tap)
            self.adapters[name] = make(self.student_tap.value.shape[1], feature.shape[1])

    def task_weights(self) -> dict[str, float]:
        """Each term's weight now (fixed, learned ``exp(-s)``, or ``1 / initial loss``)."""
        return self.weighting.weights()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints before the weighting module kept the uncertainty log-variances at the top
        for key in [k for k in state_dict if k.startswith(prefix + "log_vars.")]:
            state_dict[prefix + "weighting." + key[len(prefix) :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(
        self,
        student_out: dict[str, torch.Tensor],
        images: torch.Tensor,
        source: torch.Tensor,
        targets: Optional[Targets] = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss and each term's unweighted value (``<teacher>``, ``<a+b>`` for an ensemble
        group, and ``<teacher>/features``).

        ``targets`` supplies each teacher's output (e.g. from the teacher cache); by default the
        teachers run on ``images``.
        """
        targets = targets or live_targets(self.plan.teachers, images, self.teacher_taps)
        total = images.new_zeros(())
        parts: dict[str, float] = {}
        for term, group in self.terms.items():
            first = self.plan.teachers[group[0]]
            ids = torch.tensor(self.plan.source_ids[group[0]], device=source.device)
            idx = torch.isin(source, ids).nonzero().flatten()
            if idx.numel() == 0:
                continue  # masked: none of this batch's samples come from the teacher's sources
            outputs = [targets(name, idx) for name in group]
            target = outputs[0][0] if len(group) == 1 else self._ensemble(term, [o[0] for o in outputs], idx)
            task = first.task
            s_out = student_out[task.name][idx]
            extra = dict(self.loss_options[term])
            if term in self.known_classes:
                extra["weights"] = domain_weights(s_out, self.known_classes[term])
            options = DistillOptions(self.plan.projections[group[0]], self.temperature, **extra)
            loss = distill(task, s_out, target, options)
            _check_finite(loss, term, task.name)
            parts[term] = loss.item()
            total = total + self.weighting(term, loss)
            for name, (_, feature) in zip(group, outputs):
                if name in self.adapters:
                    feat = self.adapters[name](self.student_tap.value[idx], feature)
                    _check_finite(feat, f"{name}/features", task.name)
                    parts[f"{name}/features"] = feat.item()
                    total = total + self.feature_weight * feat
        return total, parts

    def _ensemble(self, term: str, logits: list[torch.Tensor], idx: torch.Tensor) -> torch.Tensor:
        """One target (as logits at the recipe's temperature) from a group's teachers."""
        z = torch.stack(logits).float()  # [K, B, C, ...]
        k, b, c = z.shape[:3]
        pixels = z[0, 0, 0].numel()
        flat = z.reshape(k, b, c, pixels).movedim(2, 3).reshape(k, b * pixels, c)  # dense: every pixel a sample
        features = None
        if self.student_tap is not None:
            f = self.student_tap.value[idx]
            features = (f.mean((2, 3)) if f.dim() == 4 else f).repeat_interleave(pixels, 0)
        p, _ = self.ensembles[term](flat, self.temperature, features=features)
        p = p.reshape(b, pixels, c).movedim(1, 2).reshape(z.shape[1:])
        # T * log p at temperature T gives back exactly p
        return self.temperature * p.clamp_min(1e-8).log()


def task_weighting(
    spec: Union[str, dict[str, float]], plan: Plan, terms: dict[str, list[str]], epoch_steps: Optional[int]
) -> TaskWeighting:
    """The weighting ``amalgamation.task_weights`` names, or fixed weights resolved per term (its
    first teacher's name, then that teacher's task, else 1).

    Args:
        spec: a registered name (``TASK_WEIGHTINGS``) or ``{task or teacher: weight}``.
        terms: term name -> its teachers (one, or an ensemble group).
        epoch_steps: optimizer steps of one epoch (None: unknown; a scheme that needs it refuses).
    """
    if isinstance(spec, str):
        return TASK_WEIGHTINGS.get(spec)(list(terms), epoch_steps)
    first = {term: group[0] for term, group in terms.items()}
    return FixedWeights({t: spec.get(n, spec.get(plan.teachers[n].task.name, 1.0)) for t, n in first.items()})


def learned_task_weights(objective_state: dict) -> dict[str, float]:
    """``{term: exp(-s)}`` of a saved objective (a checkpoint's ``"objective"``) with uncertainty
    weights: the fixed ``task_weights`` that keep its balance of terms, e.g. to fine-tune its student.
    Empty when the objective had other weights. Reads checkpoints from before the weighting module too."""
    found = {}
    for key, value in objective_state.items():
        for prefix in ("weighting.log_vars.", "log_vars."):
            if key.startswith(prefix):
                found[key[len(prefix) :]] = math.exp(-float(value))
    return found


@torch.no_grad()
def domain_weights(student_logits: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """The student's probability that each sample (pixel) is one of a teacher's labels.

    ``known`` is the ``[U]`` mask of unified classes the teacher's labels cover
    (``projection.any(0)``).

    A teacher without a background answers every input with one of its own labels, also inputs
    of classes it never saw (a classifier of shoes asked about a shirt): weighing its term by this
    probability keeps such answers from pulling the student's scores among the teacher's labels.
    """
    return student_logits.float().softmax(1)[:, known.to(student_logits.device)].sum(1)


def _detach(taps: list[Optional[FeatureTap]]) -> None:
    for tap in taps:
        if tap is not None:
            tap.detach()


def _check_finite(loss: torch.Tensor, term: str, task: str) -> None:
    if not torch.isfinite(loss):
        raise AmalgamError(f"loss of teacher term '{term}' ({task}) is {loss.item()}: training stopped")
