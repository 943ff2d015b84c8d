"""A diverging student, found in the raw (unweighted) loss terms, where task weighting cannot hide it.

The default ``initial_loss`` weighting divides each term by its mean over the first epoch; when the
student diverges in that epoch the mean already holds the divergence, so the weighted total the log
shows stays O(1) and even falls while the raw terms are 100x the healthy run's (trial D, F2: at
``train.lr=10`` the build ended normally with a student predicting one class and 1 km depths).

Each term is therefore compared with its raw value at the first step it appeared in: the untrained
student's loss (measured before that step's update; ``student.init``'s on a warm start). Training
lowers it; a student whose loss rose far above its untrained self has diverged. A term must also
have grown past the untrained student's whole unweighted loss (the sum of every term's first
value): a term that starts near 0 (a near-uniform teacher, which the untrained student already
matches) may grow many times over and still weigh nothing (the tests' random teachers: a
classification term went from 0.001 to 0.04 of a total of 1.5 in a healthy run).
"""

from __future__ import annotations

from typing import Optional

#: An epoch's mean of a raw term over this many times the term's first-step value is divergence.
#: Measured on the quickstart world (3 epochs of 4 steps, trial D's base recipe): healthy lr 4e-3
#: stays at 0.2-0.9x in every term and epoch (the raw terms only fall); lr=10 reaches 31x
#: (cls-items) in epoch 1 and 206x in epoch 2, lr=1000 10^5x. The tests' random world stays under
#: 2x in every term that is not near 0 (see the module's doc). A healthy run's first batch would
#: have to be 10x easier than its epochs' average to reach it. The epoch means are train_log's
#: (a term's sum over all the epoch's steps, also those without its rows): never above the truth.
DIVERGED_RATIO = 10.0


class DivergenceWatch:
    """Each raw term's first value, and which terms rose over :data:`DIVERGED_RATIO` times it.

    Its state (the first values) is checkpointed, so a resumed run compares with the same ones.
    """

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        #: history rows before this one are not judged: their student is not the one ``first`` was
        #: taken from (a resume of a checkpoint written before the first values were stored)
        self.since = 0
        self._said = False

    def see(self, parts: dict[str, float]) -> None:
        """Records the first value of each term of a step (``Objective``'s unweighted ``parts``)."""
        for term, value in parts.items():
            self.first.setdefault(term, value)

    def ratios(self, row: dict) -> dict[str, float]:
        """Each term's epoch mean in ``row`` over its first value (terms whose first value is 0 have none)."""
        return {t: row[t] / v for t, v in self.first.items() if v > 0 and isinstance(row.get(t), (int, float))}

    def diverged(self, history: list[dict]) -> dict[str, tuple[float, dict]]:
        """Terms over the limit in any row from :attr:`since` on: term -> (its largest ratio, that row).
        Over the limit: over :data:`DIVERGED_RATIO` times its first value and over the sum of every
        term's first value."""
        untrained = sum(self.first.values())
        worst: dict[str, tuple[float, dict]] = {}
        for row in history[self.since :]:
            for term, ratio in self.ratios(row).items():
                grown = ratio > DIVERGED_RATIO and row[term] > untrained
                if grown and ratio > worst.get(term, (0.0, {}))[0]:
                    worst[term] = (ratio, row)
        return worst

    def line(self, history: list[dict], weighting: str, lr: float) -> Optional[str]:
        """One line naming every diverged term (None when none is), for report.json's ``warnings``."""
        worst = self.diverged(history)
        if not worst:
            return None
        terms = ", ".join(
            f"{t} {r:.3g}x ({row[t]:.4g} in epoch {row['epoch']} vs {self.first[t]:.4g} at its first step)"
            for t, (r, row) in worst.items()
        )
        hidden = f"; the logged loss is {weighting}-weighted and hides it" if weighting == "initial_loss" else ""
        return (
            f"the student diverged: its unweighted loss rose over {DIVERGED_RATIO:g}x the untrained "
            f"student's: {terms}{hidden}; its metrics are not to be trusted: lower train.lr ({lr:g})"
        )

    def new_line(self, history: list[dict], weighting: str, lr: float) -> Optional[str]:
        """:meth:`line` the first time a term is over the limit, then None: the log says it once,
        when it is found (the report has the whole run's line)."""
        if self._said:
            return None
        line = self.line(history, weighting, lr)
        self._said = line is not None
        return line

    def state_dict(self) -> dict:
        """What a resume needs: the first values and the first history row they judge."""
        return {"first": dict(self.first), "since": self.since}

    def load_state_dict(self, state: Optional[dict], judged_from: int = 0) -> None:
        """Restores :meth:`state_dict`'s state.

        Args:
            state: as :meth:`state_dict` wrote it; a flat ``{term: first value}`` (checkpoints of the
                first version); or None (checkpoints from before it), whose first values are then
                taken at the first step after the resume, from the trained student.
            judged_from: the history rows the checkpoint holds (plus a stopped epoch's, whose mean
                holds steps from before the resume): with no stored first values, none of them is
                judged: their untrained student's terms would read as a divergence from the
                trained one's (a divergence before the resume goes unnoticed: nothing is left to
                compare it with).
        """
        if state is None:
            self.first, self.since = {}, judged_from
        elif isinstance(state.get("first"), dict):
            self.first, self.since = dict(state["first"]), int(state.get("since", 0))
        else:  # {term: first value}, taken at the run's first step: every row is judged
            self.first, self.since = dict(state), 0
