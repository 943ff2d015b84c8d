"""Online distillation among peers (no pre-trained teacher): DML, ONE and KDCL-MinLogit.

Each loss takes the peers' logits ``[K, B, C]`` (or a list of ``[B, C]``) and the labels and
returns ``(total, per_peer)``; every peer learns from the labels and from the others. ``ONE`` is
also a model wrapper (shared trunk, gated branches).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from amalgam.errors import AmalgamError
from amalgam.kd.logit_ensembles import kd_loss
from amalgam.registry import Registry


def _stack(logits) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor):
        shapes = [list(z.shape) for z in logits]
        if any(shape != shapes[0] for shape in shapes):  # peers of other class counts: torch.stack's raw error
            raise AmalgamError(f"peers' logits must share one shape [B, C] (one label space), got {shapes}")
    z = torch.stack(list(logits)) if not isinstance(logits, torch.Tensor) else logits
    if z.dim() != 3 or z.shape[0] < 2:
        raise AmalgamError(f"expected at least two peers' logits [K, B, C], got {list(z.shape)}")
    return z.float()


#: the label cross-entropy leaves out (F.cross_entropy's default ignore_index)
IGNORE_INDEX = -100


def _check_labels(labels: torch.Tensor, batch: int, classes: int, owner: str, ignored: bool = False) -> None:
    """Refuses labels that are not one class index per sample. ``ignored``: :data:`IGNORE_INDEX` marks
    a sample the cross-entropy leaves out (DML, ONE), though not every sample of a batch (its loss was
    NaN without a word); without it every sample needs its label (the MinLogit target gathers it: an
    ignore index failed as an out-of-bounds index). The range is checked on CPU labels only: on a
    device the check would wait for it every step."""
    if labels.shape != (batch,) or labels.is_floating_point():
        raise AmalgamError(
            f"{owner}: expected labels [B={batch}] of class indices, got {labels.dtype} {list(labels.shape)}"
        )
    on_host = labels.device.type == "cpu" and not torch.compiler.is_compiling()  # a device check would sync every step
    if not (batch and on_host):
        return
    skipped = labels == IGNORE_INDEX if ignored else torch.zeros_like(labels, dtype=torch.bool)
    if ignored and bool(skipped.all()):
        raise AmalgamError(f"{owner}: every label is {IGNORE_INDEX} (ignored): the batch has nothing to learn from")
    if not bool((((labels >= 0) & (labels < classes)) | skipped).all()):
        kept = labels[~skipped]
        low, high = kept.min().item(), kept.max().item()
        leave = f" (or {IGNORE_INDEX}, left out)" if ignored else ": its target needs every sample's label, so leave"
        leave += "" if ignored else " samples of an ignore index out first"
        raise AmalgamError(f"{owner}: labels must lie in [0, {classes}){leave}, got {low} to {high}")


def dml_loss(logits, labels: torch.Tensor, temperature: float = 1.0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Deep Mutual Learning (Zhang et al., CVPR 2018): peer k minimises
    ``CE(z_k, y) + 1/(K-1) sum_{j != k} KL(p_j || p_k)``, other peers' predictions held fixed."""
    z = _stack(logits)
    _check_labels(labels, z.shape[1], z.shape[2], "dml_loss", ignored=True)
    k = z.shape[0]
    per_peer = []
    for i in range(k):
        mimic = sum(kd_loss(z[i], F.softmax(z[j].detach() / temperature, 1), temperature) for j in range(k) if j != i)
        per_peer.append(F.cross_entropy(z[i], labels) + mimic / (k - 1))
    return torch.stack(per_peer).sum(), per_peer


class ONE(nn.Module):
    """On-the-fly Native Ensemble (Lan et al., NeurIPS 2018): shared low layers, ``m`` branches and
    a gate on the shared feature; the gated sum of the branches' logits is the ensemble teacher.

    Args:
        trunk: shared low layers, ``x -> [B, D, H, W]``.
        make_branch: builds one branch ``[B, D, H, W] -> [B, C]`` (called ``m`` times).
        channels: ``D``, the trunk's output channels (the gate's input).
        branches: ``m``.

    ``forward`` returns ``(branch_logits [m, B, C], ensemble_logits [B, C])``.
    """

    def __init__(self, trunk: nn.Module, make_branch: Callable[[], nn.Module], channels: int, branches: int = 3):
        super().__init__()
        if branches < 2:
            raise AmalgamError("ONE: needs at least two branches")
        self.trunk = trunk
        self.branches = nn.ModuleList(make_branch() for _ in range(branches))
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, branches))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x)
        z = torch.stack([b(h) for b in self.branches])  # [m, B, C]
        g = F.softmax(self.gate(h), dim=1)  # [B, m]
        return z, torch.einsum("bm,mbc->bc", g, z)


def one_loss(
    branch_logits: torch.Tensor, ensemble_logits: torch.Tensor, labels: torch.Tensor, temperature: float = 3.0
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """ONE's objective: every branch's and the ensemble's CE, plus each branch's
    ``T^2 KL(softmax(z_e / T) || softmax(z_i / T))`` towards the (detached) ensemble."""
    z = _stack(branch_logits)
    _check_labels(labels, z.shape[1], z.shape[2], "one_loss", ignored=True)
    target = F.softmax(ensemble_logits.detach().float() / temperature, 1)
    per_branch = [F.cross_entropy(zi, labels) + kd_loss(zi, target, temperature) for zi in z]
    return torch.stack(per_branch).sum() + F.cross_entropy(ensemble_logits.float(), labels), per_branch


def kdcl_minlogit_target(logits, labels: torch.Tensor) -> torch.Tensor:
    """KDCL-MinLogit (Guo et al., CVPR 2020): each peer's logits minus its label logit, then the
    element-wise minimum over peers: the ensemble that is most confident in the label."""
    z = _stack(logits)
    _check_labels(labels, z.shape[1], z.shape[2], "kdcl_minlogit")
    shifted = z - z.gather(2, labels.view(1, -1, 1).expand(z.shape[0], -1, 1))
    return shifted.min(0).values


def kdcl_minlogit_loss(
    logits, labels: torch.Tensor, temperature: float = 2.0
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Each peer: ``CE(z_k, y) + T^2 KL(softmax(z_t / T) || softmax(z_k / T))``, ``z_t`` the
    (detached) MinLogit ensemble."""
    z = _stack(logits)
    target = F.softmax(kdcl_minlogit_target(z.detach(), labels) / temperature, 1)
    per_peer = [F.cross_entropy(zi, labels) + kd_loss(zi, target, temperature) for zi in z]
    return torch.stack(per_peer).sum(), per_peer


@dataclass(frozen=True)
class PeerStrategy:
    """A registered ``peers.strategy``.

    Attributes:
        loss: ``(peer logits [K, B, C], their ensemble [B, C], labels, temperature) -> total loss``.
        shared_trunk: the peers are branches of one network on a shared trunk (ONE's gated branches),
            not independent networks.
    """

    loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]
    shared_trunk: bool = False


#: ``peers.strategy`` -> :class:`PeerStrategy`
PEER_STRATEGIES: Registry[PeerStrategy] = Registry("peer strategy")
PEER_STRATEGIES.add("dml", PeerStrategy(lambda z, ens, y, t: dml_loss(z, y, t)[0]))
PEER_STRATEGIES.add("kdcl", PeerStrategy(lambda z, ens, y, t: kdcl_minlogit_loss(z, y, t)[0]))
PEER_STRATEGIES.add("one", PeerStrategy(lambda z, ens, y, t: one_loss(z, ens, y, t)[0], shared_trunk=True))
