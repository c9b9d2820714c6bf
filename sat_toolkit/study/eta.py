"""How long is left of a study? Measured cell times, not a guess from step counts.

A study's cells are full runs (training and evaluation) whose cost depends on the model,
the data, the machine and what else runs on it. The cells of one study are alike (they
differ in one axis value and the seed), so the best predictor of the next cell is the
cells already finished: those of earlier invocations (from the ledger, when they ran
from scratch) and those finished now. The estimate is printed with the plan when there is
such a measurement, and again after every cell. Where the cells are not alike (a budget
sweep, an objective study), the estimate says so (:func:`uneven_note`).
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from typing import Any

from sat_toolkit.evaluation.cost import rough_duration
from sat_toolkit.recipe import Recipe

#: Said with every estimate of a study whose cells differ in what sets a cell's cost.
UNEVEN_CELLS = (
    "; its cells differ in training length, batch, training attack or objective, which this "
    "estimate does not weigh: cells longer than the one measured will take longer"
)


def cost_shape(recipe: Recipe) -> tuple[object, ...]:
    """What makes one cell of a study dearer than another: how many steps it trains, of what
    batch, with how many attack steps each, for which objective (the evaluation is the same
    for every cell of a study, and an activation or a seed barely moves a step's time)."""
    return (
        recipe.train.epochs,
        recipe.train.steps,
        recipe.data.batch_size,
        recipe.attack.train.params.get("steps"),
        recipe.objective.name,
    )


def uneven_note(recipes: Sequence[Recipe]) -> str:
    """:data:`UNEVEN_CELLS` when ``recipes`` differ in :func:`cost_shape`, else ``""``.

    The estimates measure one cell (the probe) or the median finished cell and count every
    cell as that long; a budget sweep's 24-epoch cells or an objective study's TRADES cells
    (10 attack steps a step, not 1) take several times as long, so the estimate says so
    rather than pass for a measurement of them.
    """
    return UNEVEN_CELLS if len({cost_shape(r) for r in recipes}) > 1 else ""


@dataclasses.dataclass
class StudyEta:
    """Seconds per cell measured so far, and what they predict for the cells left."""

    jobs: int
    seconds: list[float] = dataclasses.field(default_factory=list)  # whole cells, from step 0

    @classmethod
    def from_ledger(cls, cells: dict[str, list[dict[str, Any]]], jobs: int) -> StudyEta:
        """Cells that earlier invocations ran from scratch to the end (resumed ones ran part of a cell)."""
        eta = cls(jobs)
        for attempts in cells.values():
            for attempt in attempts:
                if attempt.get("outcome") == "finished" and not attempt.get("resumed_from_step"):
                    eta.record(float(attempt["seconds"]))
        return eta

    def record(self, seconds: float) -> None:
        self.seconds.append(seconds)

    def per_cell(self) -> float | None:
        """The median cell: one slow cell (a busy machine) moves it less than a mean."""
        return statistics.median(self.seconds) if self.seconds else None

    def remaining(self, waiting: int, running_for: Sequence[float] = ()) -> float | None:
        """Wall seconds until the last cell ends: ``running_for`` holds how long each cell
        already started has run (it needs the median minus that, at least 0), and the
        ``waiting`` cells each take the first of the ``jobs`` workers to free up.

        Why not rounds of whole cells: after one of two side-by-side cells finishes, the
        other is nearly done too; counting it as a whole cell overstates the time left by
        up to a cell.
        """
        per_cell = self.per_cell()
        if per_cell is None:
            return None
        busy = [max(0.0, per_cell - elapsed) for elapsed in running_for]
        workers = sorted(busy + [0.0] * max(0, self.jobs - len(busy)))
        for _ in range(waiting):
            workers[0] += per_cell
            workers.sort()
        return max(workers, default=0.0)

    def describe(self, waiting: int, running_for: Sequence[float] = ()) -> str | None:
        """``estimated time left: 42 min for 7 cells (...)``, or None before any measurement."""
        cells_left = waiting + len(running_for)
        left = self.remaining(waiting, running_for)
        if left is None or cells_left <= 0:
            return None
        jobs = f", {self.jobs} at a time" if self.jobs > 1 else ""
        return (
            f"estimated time left: {rough_duration(left)} for {cells_left} cell(s){jobs} "
            f"(median {rough_duration(self.per_cell() or 0.0)} per cell over {len(self.seconds)} finished)"
        )
