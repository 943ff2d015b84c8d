"""Classic multi-teacher and peer distillation parts, usable in any training loop.

- :mod:`amalgam.kd.logit_ensembles`: several teachers' logits -> one soft target.
- :mod:`amalgam.kd.feature_ensembles`: FEED adaptors and similarity-preserving losses.
- :mod:`amalgam.kd.class_balance`: per-pixel weights of dense distillation (class balance, focal).
- :mod:`amalgam.kd.peers`: DML, ONE and KDCL-MinLogit online distillation (the losses and ONE's
  model; the recipe-driven loop is :mod:`amalgam.training.peer_training`).
- :mod:`amalgam.teachers.subteachers`: several sub-teachers made from one teacher.
"""

from amalgam.kd.class_balance import catch_all_labels, class_balanced_weights, focal_weights
from amalgam.kd.feature_ensembles import FEEDLoss, SimilarityLoss
from amalgam.kd.logit_ensembles import LOGIT_ENSEMBLES, LogitEnsemble, kd_loss
from amalgam.kd.peers import ONE, PEER_STRATEGIES, PeerStrategy, dml_loss, kdcl_minlogit_loss, one_loss

__all__ = [
    "FEEDLoss",
    "LOGIT_ENSEMBLES",
    "LogitEnsemble",
    "ONE",
    "PEER_STRATEGIES",
    "PeerStrategy",
    "SimilarityLoss",
    "catch_all_labels",
    "class_balanced_weights",
    "dml_loss",
    "focal_weights",
    "kd_loss",
    "kdcl_minlogit_loss",
    "one_loss",
]
