"""Classic multi-teacher and peer distillation parts, usable in any training loop.

- :mod:`amalgam.kd.logit_ensembles`: several teachers' logits -> one soft target.
- :mod:`amalgam.kd.feature_ensembles`: FEED adaptors and similarity-preserving losses.
- :mod:`amalgam.kd.peers`: DML, ONE and KDCL-MinLogit online distillation.
- :mod:`amalgam.teachers.subteachers`: several sub-teachers made from one teacher.
"""

from amalgam.kd.feature_ensembles import FEATURE_ENSEMBLES, FEEDLoss, SimilarityLoss
from amalgam.kd.logit_ensembles import LOGIT_ENSEMBLES, LogitEnsemble, kd_loss
from amalgam.kd.peers import ONE, dml_loss, kdcl_minlogit_loss, one_loss

__all__ = [
    "FEATURE_ENSEMBLES",
    "FEEDLoss",
    "LOGIT_ENSEMBLES",
    "LogitEnsemble",
    "ONE",
    "SimilarityLoss",
    "dml_loss",
    "kd_loss",
    "kdcl_minlogit_loss",
    "one_loss",
]
