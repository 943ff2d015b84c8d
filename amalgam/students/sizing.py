"""``student.encoder: auto``: the largest student of a fixed ladder that fits ``student.budget``.

The ladder (:data:`LADDER`) runs from resnet18, the default before ``auto`` (so a generous budget
gives the student of old), down to timm's smallest CNNs; every encoder on it splits into the five
stages a branched student needs, and each rung pairs it with U-Net decoder widths in proportion.
A rung is priced by building the very student the recipe describes with it (its tasks and heads,
``student.type`` and ``branch_at``) and counting its parameters; with ``budget.latency_ms`` set,
its batch-1 CPU latency is measured too (``branch_at: auto``: the cheapest tree, everything shared,
priced as the tree search prices trees). The first rung, largest first, within the budget wins.
A recipe that sets ``decoder_channels`` keeps its decoders: only the encoder climbs down (and every
rung is priced with the recipe's ``task_decoder_channels``, a dense task's own widths).

Rule (said in the build log, ``amalgam inspect`` and the report): :meth:`EncoderChoice.describe`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import torch

from amalgam.config.schema import StudentConfig
from amalgam.errors import RecipeError
from amalgam.students.budget import Budget, batch1_ms, measure_costs, resolve_budget
from amalgam.students.build import StudentSpec, build_student, count_params, has_branches, shares_decoder
from amalgam.students.tree import STAGES
from amalgam.task import get_task

AUTO = "auto"
#: the decoders of a student whose recipe names its encoder but not ``decoder_channels``
DEFAULT_DECODER_CHANNELS = (128, 64, 32, 16, 16)


@dataclass(frozen=True)
class Rung:
    """One student size: an smp encoder name and the U-Net decoder widths that go with it."""

    encoder: str
    decoder_channels: tuple[int, ...]

    def describe(self) -> str:
        """``tu-lcnet_050 [32, 24, 16, 16, 16]``."""
        return f"{self.encoder} {list(self.decoder_channels)}"


#: largest first; the comment is the encoder's own parameters (its five stages, once). Every
#: encoder has ImageNet weights in timm, so pretrained students can climb the same ladder.
LADDER: tuple[Rung, ...] = (
    Rung("resnet18", DEFAULT_DECODER_CHANNELS),  # 11.2 M: the default student before auto
    Rung("tu-resnet10t", (96, 48, 32, 16, 16)),  # 4.9 M
    Rung("tu-mobilenetv3_large_100", (64, 48, 32, 16, 16)),  # 3.0 M
    Rung("tu-lcnet_100", (64, 48, 32, 16, 16)),  # 1.0 M
    Rung("tu-lcnet_075", (48, 32, 24, 16, 16)),  # 0.58 M
    Rung("tu-lcnet_050", (32, 24, 16, 16, 16)),  # 0.27 M: the quickstart's hand-picked student
    Rung("tu-repghostnet_050", (24, 16, 16, 16, 16)),  # 0.15 M
    Rung("tu-test_efficientnet", (16, 16, 16, 16, 16)),  # 0.08 M: timm's smallest EfficientNet (r160_in1k weights)
    # Narrower decoders save parameters in the coarse blocks first: the two finest, which paint the
    # small objects, keep 16 channels (8 there lost whole classes, docs/benchmarks.md).
    Rung("tu-test_efficientnet", (8, 8, 8, 16, 16)),
    Rung("tu-test_efficientnet", (8, 8, 8, 8, 8)),  # the last resort, for teachers of ~0.3 M and less
)


@dataclass(frozen=True)
class Price:
    """What a rung's student costs: parameters and (when a latency budget is set) batch-1 ms."""

    params: int
    latency_ms: Optional[float] = None


@dataclass(frozen=True)
class EncoderChoice:
    """The rung ``auto`` chose, what it costs, the budget and the rung above it (which did not fit).

    Attributes:
        rung: the chosen encoder and decoders (what the stored StudentSpec holds).
        price: the chosen student's cost (``branch_at: auto``: its cheapest tree's).
        budget: ``student.budget`` in absolute numbers.
        above: the next rung up and its price (None: the top rung was chosen).
        user_decoders: the decoders are the recipe's ``decoder_channels``, not the ladder's.
        auto_tree: ``branch_at: auto`` (the price is the cheapest tree's; the search picks within budget).
    """

    rung: Rung
    price: Price
    budget: Budget
    above: Optional[tuple[Rung, Price]]
    user_decoders: bool
    auto_tree: bool
    dense: bool = True  # a dense head uses the decoders; a classification-only student has none

    def describe(self) -> str:
        """One line: what was chosen, its size against the teachers', the budget and the rung above."""
        decoders = "the recipe's decoders" if self.user_decoders else "decoders"
        unlimited = self.budget.params is None and self.budget.latency_ms is None
        limit = "no student.budget limit" if unlimited else f"student.budget {self.budget.describe()}"
        if unlimited and self.budget.share is not None:  # a share of nothing limits nothing
            limit += " (the teachers have no parameters)"
        widths = f"{decoders} {list(self.rung.decoder_channels)}; " if self.dense else ""
        return f"student.encoder auto -> {self.rung.encoder} ({widths}{self._size()}; {limit}; {self._above()})"

    def _size(self) -> str:
        size = f"{self.price.params:,} params"
        size += " with the whole encoder shared (the cheapest tree)" if self.auto_tree else ""
        teachers = self.budget.teacher_params
        if teachers:
            size += f", {self.price.params / teachers:.0%} of the teachers' {_millions(teachers)}"
        if self.price.latency_ms is not None:
            size += f", ~{self.price.latency_ms:.1f} ms b1"
        return size

    def _above(self) -> str:
        if self.above is None:
            return "the top rung"
        rung, price = self.above
        ms = f" and ~{price.latency_ms:.1f} ms" if price.latency_ms is not None else ""
        return f"the next rung up, {rung.describe()}, would be {_millions(price.params)}{ms}"

    def to_dict(self) -> dict:
        """``report.json``'s ``encoder_choice``."""
        above = None
        if self.above is not None:
            rung, price = self.above
            above = {"encoder": rung.encoder, "decoder_channels": list(rung.decoder_channels), **vars(price)}
        return {
            "encoder": self.rung.encoder,
            "decoder_channels": list(self.rung.decoder_channels),
            "decoders_from": "recipe" if self.user_decoders else "ladder",
            "params": self.price.params,
            "latency_ms": self.price.latency_ms,
            "priced_tree": "cheapest" if self.auto_tree else "recipe",
            "teacher_params": self.budget.teacher_params,
            "budget": {"params": self.budget.params, "share": self.budget.share, "latency_ms": self.budget.latency_ms},
            "next_rung_up": above,
            "line": self.describe(),
        }


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 100_000 else f"{n:,}"  # tiny teachers: 0.00 M would say nothing


def ladder_for(cfg: StudentConfig) -> tuple[Rung, ...]:
    """The rungs ``cfg`` climbs: :data:`LADDER`, or its encoders with the recipe's own decoders."""
    if cfg.decoder_channels is None:
        return LADDER
    mine = tuple(cfg.decoder_channels)
    encoders = dict.fromkeys(r.encoder for r in LADDER)  # in order, each encoder once
    return tuple(Rung(e, mine) for e in encoders)


def price_rung(
    rung: Rung, cfg: StudentConfig, heads: Mapping[str, int], image_size: tuple[int, int], timed: bool
) -> Price:
    """The cost of ``cfg``'s student built with ``rung`` (``timed``: its batch-1 CPU latency too)."""
    auto_tree = cfg.branch_at == AUTO and has_branches(cfg.type)
    branch_at = STAGES if auto_tree else cfg.branch_at
    own = dict(cfg.task_decoder_channels)
    spec = StudentSpec(cfg.type, rung.encoder, branch_at, list(rung.decoder_channels), dict(heads), own)
    spec.hypercolumn = hypercolumn_heads(cfg, heads)  # its wider heads are part of the price
    if auto_tree and timed:  # as the search prices trees: a sum of the parts' timings
        costs = measure_costs(spec, image_size)
        cheapest = {t: STAGES for t in heads}
        return Price(costs.params(cheapest), costs.latency_ms(cheapest))
    student = build_student(spec).eval()
    return Price(count_params(student), batch1_ms(student, image_size) if timed else None)


def choose_encoder(
    cfg: StudentConfig, heads: Mapping[str, int], teacher_params: int, image_size: tuple[int, int]
) -> EncoderChoice:
    """The largest rung whose student fits ``cfg.budget`` (see the module's doc).

    Args:
        cfg: the recipe's ``student`` section (``encoder: auto``).
        heads: task name -> output channels, as the student will have them.
        teacher_params: all teachers' parameters together (the budget is a share of them).
        image_size: the student's input (latency is measured at it).

    Raises:
        RecipeError: when not even the smallest rung fits, naming its size and the budget.
    """
    budget = resolve_budget(cfg.budget, teacher_params)
    timed = budget.latency_ms is not None
    above = None
    with torch.random.fork_rng(devices=[]):  # pricing builds students: the training's seeded stream stays put
        for rung in ladder_for(cfg):
            price = price_rung(rung, cfg, heads, image_size, timed)
            if not budget.excess(price.params, price.latency_ms):
                auto_tree = cfg.branch_at == AUTO and has_branches(cfg.type)
                user = cfg.decoder_channels is not None
                return EncoderChoice(rung, price, budget, above, user, auto_tree, _any_dense(heads))
            above = (rung, price)
    raise _too_small(budget, *above)


def kept_choice(
    rung: Rung, cfg: StudentConfig, heads: Mapping[str, int], teacher_params: int, image_size: tuple[int, int]
) -> EncoderChoice:
    """``auto``'s choice when it is given, not measured: a resumed run keeps its checkpoint's rung
    (a latency budget measured again could choose another and the checkpoint would not fit)."""
    with torch.random.fork_rng(devices=[]):
        price = price_rung(rung, cfg, heads, image_size, timed=False)
    auto_tree = cfg.branch_at == AUTO and has_branches(cfg.type)
    budget = resolve_budget(cfg.budget, teacher_params)
    return EncoderChoice(rung, price, budget, None, cfg.decoder_channels is not None, auto_tree, _any_dense(heads))


def _any_dense(heads: Mapping[str, int]) -> bool:
    return any(get_task(t).dense for t in heads)


def hypercolumn_heads(cfg: StudentConfig, heads: Mapping[str, int]) -> list[str]:
    """The dense heads ``cfg.hypercolumn`` names (true: every dense one), in head order; a student of one
    shared decoder (compact) widens every dense head when it widens any, so the spec says all of them."""
    dense = [t for t in heads if get_task(t).dense]
    named = [t for t in dense if cfg.hypercolumn is True or (cfg.hypercolumn and t in cfg.hypercolumn)]
    return dense if named and shares_decoder(cfg.type) else named


def _too_small(budget: Budget, rung: Rung, price: Price) -> RecipeError:
    share = f" ({price.params / budget.teacher_params:.0%} of the teachers')" if budget.teacher_params else ""
    ms = f" and ~{price.latency_ms:.1f} ms at batch 1" if price.latency_ms is not None else ""
    return RecipeError(
        "student.budget",
        f"no rung of student.encoder: auto fits ({budget.describe()}): the smallest, {rung.describe()}, has "
        f"{price.params:,} params{share}{ms}; raise the budget, set smaller decoder_channels or name a student.encoder",
    )
