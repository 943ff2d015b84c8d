"""The amalgamation objective: per-teacher distillation terms, feature terms (:mod:`amalgam.distill.features`)
and task weighting."""

from __future__ import annotations

import math
import weakref
from typing import Optional, Union

import torch
from torch import nn

from amalgam.config.ensembles import Member, group_weight, label_order, same_label_groups
from amalgam.distill.features import FEATURE_TERMS
from amalgam.distill.plan import Plan
from amalgam.distill.targets import NonFiniteRows, Targets, live_targets, take_rows
from amalgam.distill.weighting import TASK_WEIGHTINGS, FixedWeights, TaskWeighting
from amalgam.errors import AmalgamError, RecipeError
from amalgam.kd import LOGIT_ENSEMBLES
from amalgam.kd.class_balance import pixel_weight_options
from amalgam.kd.logit_ensembles import build_logit_ensemble
from amalgam.students.build import default_student_tap
from amalgam.task import DistillOptions, distill
from amalgam.teachers.taps import FeatureTap, TapNotRun
from amalgam.training.schedule import steps_per_epoch


def ensemble_groups(plan: Plan) -> list[list[str]]:
    """Teachers an ``amalgamation.ensemble`` merges: two or more of one labelled task with the same
    label set (in any order), background and sources; each such group gives one distillation term
    (the rule of :mod:`amalgam.config.ensembles`)."""
    members = [
        Member(n, t.task.name, t.space if t.task.labelled else None, t.source_names) for n, t in plan.teachers.items()
    ]
    return same_label_groups(members)


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
            first = plan.teachers[group[0]]  # a group's members share labels; depth teachers are never grouped
            self.loss_options[term].update(pixel_weight_options(first.task, amal), output_kind=first.output_kind)
        #: domain weights: term -> the unified classes its teachers know, for terms that know only some
        self.known_classes: dict[str, torch.Tensor] = {}
        for term, group in self.terms.items() if amal.domain_weights else ():
            proj = plan.projections.get(group[0])
            exclusive = plan.teachers[group[0]].task.exclusive_labels  # a softmax's mass: meaningless otherwise
            if exclusive and proj is not None and not bool(proj.any(0).all()):
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
        width = self.student_tap.value.shape[1] if needs_features else None
        for term, group in self.terms.items():
            if len(group) > 1:
                self.ensembles[term] = build_logit_ensemble(
                    amal.ensemble.type, len(group), width, **amal.ensemble.kwargs()
                )
        #: a group member -> the buffer holding its output channels in its group's (first member's)
        #: label order, where they differ: a buffer, so ``.to(device)`` moves it once, not every step
        self._order_buffers: dict[str, str] = {}
        for group in self.groups:
            for name in group[1:]:
                order = label_order(plan.teachers[group[0]].space, plan.teachers[name].space)
                if order is not None:  # buffers are named by position: a teacher's name may hold a "."
                    self._order_buffers[name] = f"label_order_{len(self._order_buffers)}"
                    self.register_buffer(self._order_buffers[name], torch.tensor(order), persistent=False)
        #: training rows whose teacher targets are NaN/inf, counted per teacher and epoch and left out
        self.nonfinite = NonFiniteRows()
        # the hooks go when the objective does (they hold no reference to it)
        weakref.finalize(self, _detach, [self.student_tap, *self.teacher_taps.values()])

    def _dummy(self) -> torch.Tensor:
        return torch.rand(2, 3, *tuple(self.plan.recipe.data.image_size))

    def _tap_student(self, student: nn.Module, module_name: str) -> None:
        self.student_tap = tap_student(student, module_name, self._dummy())

    def _build_feature_terms(self, make, taps: dict[str, str]) -> None:
        for name, module_name in taps.items():
            self.teacher_taps[name], feature = tap_teacher(self.plan, name, module_name, self._dummy())
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
            kept = self.nonfinite.keep(term, group, [out for out, _ in outputs], first.task)
            if kept is not None:  # a teacher's NaN/inf target teaches nothing: its rows are left out, counted
                if kept.numel() == 0:  # at weight 0, so a batch left with no term still has a graph to step
                    total = total + 0.0 * student_out[first.task.name][idx].float().nan_to_num().sum()
                    continue
                idx, outputs = idx[kept], take_rows(outputs, kept)
            logits = [self._in_group_order(name, out) for name, (out, _) in zip(group, outputs)]
            target = logits[0] if len(group) == 1 else self._ensemble(term, logits, idx)
            task = first.task
            s_out = student_out[task.name][idx]
            extra = dict(self.loss_options[term])
            if term in self.known_classes:
                extra["weights"] = domain_weights(s_out, self.known_classes[term])
            options = DistillOptions(self.plan.projections[group[0]], self.temperature, **extra)
            loss = distill(task, s_out, target, options)
            _check_finite(loss, term, task.name, s_out)
            parts[term] = loss.item()
            total = total + self.weighting(term, loss)
            for name, (_, feature) in zip(group, outputs):
                if name in self.adapters:
                    feat = self.adapters[name](self.student_tap.value[idx], feature)
                    _check_finite(feat, f"{name}/features", task.name)
                    parts[f"{name}/features"] = feat.item()
                    total = total + self.feature_weight * feat
        return total, parts

    @property
    def label_orders(self) -> dict[str, torch.Tensor]:
        """A group member's output channels in its group's (first member's) label order, where they differ."""
        return {name: getattr(self, buffer) for name, buffer in self._order_buffers.items()}

    def _in_group_order(self, name: str, out: torch.Tensor) -> torch.Tensor:
        """``name``'s output with its channels in its ensemble group's label order."""
        buffer = self._order_buffers.get(name)
        if buffer is None:
            return out
        # on the objective's device since its .to(): a no-op there, a copy only for targets elsewhere
        return out.index_select(1, getattr(self, buffer).to(out.device))

    def _ensemble(self, term: str, logits: list[torch.Tensor], idx: torch.Tensor) -> torch.Tensor:
        """One target (as logits at the recipe's temperature) from a group's teachers."""
        task = self.plan.teachers[self.terms[term][0]].task
        if not task.exclusive_labels:  # the ensembles weigh softmaxes: the task merges its own outputs
            return task.ensemble(logits)  # the recipe check allowed type: mean only
        z = torch.stack(logits).float()  # [K, B, C, ...]
        k, b, c = z.shape[:3]
        pixels = z[0, 0, 0].numel()
        flat = z.reshape(k, b, c, pixels).movedim(2, 3).reshape(k, b * pixels, c)  # dense: every pixel a sample
        features = None
        if self.student_tap is not None:
            f = self.student_tap.value[idx]
            features = (f.mean((2, 3)) if f.dim() == 4 else f).repeat_interleave(pixels, 0)
        p, _ = self.ensembles[term](flat, self.temperature, features=features, check=False)  # readings checked at load
        p = p.reshape(b, pixels, c).movedim(1, 2).reshape(z.shape[1:])
        # T * log p at temperature T gives back exactly p; the floor moves a target by 1e-8 of a probability
        return self.temperature * p.clamp_min(1e-8).log()


def task_weighting(
    spec: Union[str, dict[str, float]], plan: Plan, terms: dict[str, list[str]], epoch_steps: Optional[int]
) -> TaskWeighting:
    """The weighting ``amalgamation.task_weights`` names, or fixed weights resolved per term (the
    name of any of its teachers, which must agree: :func:`~amalgam.config.ensembles.group_weight`;
    then their task, else 1).

    Args:
        spec: a registered name (``TASK_WEIGHTINGS``) or ``{task or teacher: weight}``.
        terms: term name -> its teachers (one, or an ensemble group).
        epoch_steps: optimizer steps of one epoch (None: unknown; a scheme that needs it refuses).
    """
    if isinstance(spec, str):
        return TASK_WEIGHTINGS.get(spec)(list(terms), epoch_steps)
    weights = {}
    for term, group in terms.items():
        named = group_weight(spec, group)
        weights[term] = named if named is not None else spec.get(plan.teachers[group[0]].task.name, 1.0)
    return FixedWeights(weights)


def tap_student(student: nn.Module, module_name: str, images: torch.Tensor) -> FeatureTap:
    """A tap on the student's ``module_name`` (``amalgamation.student_tap``), read once on ``images``.

    Raises:
        RecipeError: when the module never runs in the student's forward.
    """
    tap = FeatureTap.on(student, module_name, "amalgamation.student_tap")
    was_training = student.training
    student.eval()
    with torch.no_grad():
        student(images)
    student.train(was_training)
    if tap.value is None:
        tap.detach()
        raise RecipeError("amalgamation.student_tap", never_ran(student, module_name, lambda: student(images)))
    return tap


def tap_teacher(plan: Plan, name: str, module_name: str, images: torch.Tensor) -> tuple[FeatureTap, torch.Tensor]:
    """A tap on teacher ``name``'s ``module_name`` (``amalgamation.taps``) and the feature it reads on ``images``.

    Raises:
        RecipeError: when the module never runs in the teacher's forward.
    """
    teacher = plan.teachers[name]
    key = f"amalgamation.taps.{name}"
    tap = FeatureTap.on(teacher.model, module_name, key)
    images = images.to(next(iter(teacher.model.parameters()), images).device)  # the tree search leaves it on a GPU
    try:
        with torch.no_grad():
            _, feature = teacher.answer(images, tap)
    except TapNotRun:  # answer refuses a tap that read nothing: the key and what ran inside say more here
        feature = None
    if feature is None:
        tap.detach()
        raise RecipeError(key, never_ran(teacher.model, module_name, lambda: teacher.answer(images)))
    return tap, feature


def never_ran(model: nn.Module, module_name: str, run) -> str:
    """Why a tap read nothing: its module never ran in the forward (a container such as a
    ModuleList or ModuleDict), naming the submodule that ran last, whose output a tap can read."""
    ran: list[str] = []
    module = model.get_submodule(module_name)
    hooks = [m.register_forward_hook(lambda *_, n=n: ran.append(n)) for n, m in module.named_modules() if n]
    try:
        with torch.no_grad():
            run()
    finally:
        for hook in hooks:
            hook.remove()
    msg = f"module '{module_name}' never runs in the forward (a container?)"
    if not ran:
        return msg + "; neither does any module inside it"
    top = min(n.count(".") for n in ran)  # the outermost that ran: a whole block, not one layer of it
    return msg + f"; '{module_name}.{[n for n in ran if n.count('.') == top][-1]}' inside it does"


def check_feature_taps(plan: Plan, student: nn.Module) -> None:
    """The modules the objective would tap (``amalgamation.student_tap``, ``amalgamation.taps``) run in
    their model's forward: what ``amalgam inspect`` checks before any training (the taps are removed).

    Raises:
        RecipeError: naming the key whose module never runs.
    """
    amal = plan.recipe.amalgamation
    module_name = student_tap_module(plan, getattr(student, "spec", None))
    images = torch.rand(2, 3, *tuple(plan.recipe.data.image_size))
    taps = [tap_student(student, module_name, images)] if module_name is not None else []
    try:
        for name, teacher_module in amal.taps.items() if amal.features != "none" else ():
            taps.append(tap_teacher(plan, name, teacher_module, images)[0])
    finally:
        _detach(taps)


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


def _check_finite(loss: torch.Tensor, term: str, task: str, student: Optional[torch.Tensor] = None) -> None:
    """Refuses a term that is no finite scalar tensor, or (``student``: the outputs it was computed from,
    with a graph) one without a gradient to them: a plugin's loss on detached outputs trained nothing."""
    if not isinstance(loss, torch.Tensor):
        raise AmalgamError(
            f"loss of teacher term '{term}' ({task}) is a {type(loss).__name__}, not a tensor: the task's"
            " distill_loss must return a scalar tensor computed from the student's output (its gradient trains it)"
        )
    if loss.dim() != 0:  # a plugin's unreduced loss: "ambiguous" further on
        raise AmalgamError(
            f"loss of teacher term '{term}' ({task}) is {list(loss.shape)}, not a scalar: the task's distill_loss must"
            " reduce it (a mean over pixels and images)"
        )
    # a zero without a graph is a plugin's empty-batch guard (s.new_zeros(())): harmless, not refused
    if student is not None and student.requires_grad and not loss.requires_grad and bool(loss != 0):
        raise AmalgamError(
            f"loss of teacher term '{term}' ({task}) has no gradient to the student's output (computed on"
            " detached values, under no_grad or from .item()): the student would learn nothing from it"
        )
    if not torch.isfinite(loss):
        raise AmalgamError(f"loss of teacher term '{term}' ({task}) is {loss.item()}: training stopped")
