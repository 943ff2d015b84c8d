"""Labels: the algebra of label spaces (unify, project, look up, partial-label KL), look-alike
names across teachers (:mod:`~amalgam.labels.taxonomy`) and label relations suggested from the
teachers' predictions (:mod:`~amalgam.labels.suggest`).

``from amalgam.labels import LabelSpace, IGNORE, ...`` is the path task plugins use.
"""

from amalgam.labels.algebra import (
    IGNORE,
    LabelSpace,
    apply_lookup,
    extents,
    lookup,
    missing_labels,
    partial_label_kl,
    partial_label_nll,
    project_log_probs,
    projection,
    unify,
)

__all__ = [
    "IGNORE",
    "LabelSpace",
    "apply_lookup",
    "extents",
    "lookup",
    "missing_labels",
    "partial_label_kl",
    "partial_label_nll",
    "project_log_probs",
    "projection",
    "unify",
]
