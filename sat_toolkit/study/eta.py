"""How long is left of a study? Measured cell times, weighed by what each cell must do.

A study's cells are full runs (training and evaluation) whose cost depends on the model,
the data, the machine and what else runs on it, so the estimate rests on measurements:
the cells already finished (those of earlier invocations, from the ledger, when they ran
from scratch, and those finished now) and, before any has, a timed probe of a cell's own
run (:func:`~sat_toolkit.engine.probe.probe_run_cost`).

Most studies' cells are alike: they differ in an activation, a learning rate or a seed,
which barely moves a cell's time, so every cell counts as long as the median finished
one. Some are not: a budget sweep trains for 6 to 24 epochs, an objective study runs a
10-step TRADES attack beside PGD-1. There each kind of cell (:func:`step_shape`) is
probed once, every cell's time is predicted from its kind's probe and its own length
(:meth:`~sat_toolkit.engine.probe.RunCostEstimate.for_recipe`), and the finished cells
scale those predictions by how long they took against their own prediction (the median
ratio): the probes give the cells' relative sizes, the finished cells the machine's pace.
Where unlike cells could not be probed (the probe was skipped or failed, or the cells are
too short to probe) they still count alike, and every estimate says so
(:data:`UNEVEN_CELLS`).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from sat_toolkit.evaluation.cost import rough_duration
from sat_toolkit.recipe import Recipe

#: Said with every estimate of a study whose unlike cells were not probed.
UNEVEN_CELLS = (
    "; its cells differ in training length or in what a step or the evaluation costs, which "
    "this estimate (no probe of each kind of cell) does not weigh: cells longer than the ones "
    "measured will take longer"
)


def step_shape(recipe: Recipe) -> str:
    """What one optimiser step, one validation and the final evaluation cost depends on, as a key.

    The data and batch, the model, precision, memory layout and compilation, the training
    attack's steps and restarts, the objective, the validation's images and the evaluation's
    attacks and images. Left out are eps, the activation, learning rates, seeds, loader
    workers and the like: they barely move a step's time (the finished cells' median ratio
    absorbs what they do move), and the cells of a study that varies only them count
    alike, with no probe of each.
    """
    raw = recipe.to_dict()
    evaluation = {
        label: {key: value for key, value in spec.items() if key != "eps"} if isinstance(spec, dict) else spec
        for label, spec in raw["attack"]["eval"].items()
        if label != "seed"
    }
    train_attack = raw["attack"]["train"]
    return json.dumps(
        {
            "data": {key: value for key, value in raw["data"].items() if key != "num_workers"},
            "model": raw["model"],
            "train_attack": {k: train_attack.get(k) for k in ("name", "steps", "restarts", "precision")},
            "objective": recipe.objective.name,
            "optimizer": {key: raw["optimizer"][key] for key in ("mixed_precision", "grad_accumulation")},
            "train": {key: raw["train"][key] for key in ("validate_samples", "channels_last", "compile")},
            "evaluation": evaluation,
        },
        sort_keys=True,
        default=str,
    )


def evaluation_seconds(metrics: Mapping[str, Any] | None) -> float | None:
    """How long a finished run's final evaluation took: its attacks' seconds (metrics.json);
    None where the metrics do not say. The clean pass is left out, a forward pass per image
    beside the attacks' hundreds."""
    evaluation = (metrics or {}).get("evaluation")
    attacks = evaluation.get("attacks") if isinstance(evaluation, dict) else None
    if not isinstance(attacks, dict):
        return None
    seconds = [a.get("seconds") for a in attacks.values() if isinstance(a, dict)]
    if not seconds or not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in seconds):
        return None
    return float(sum(seconds))


def cells_alike(recipes: Sequence[Recipe]) -> bool:
    """Whether ``recipes`` cost the same: one :func:`step_shape`, trained for one length."""
    return len({(step_shape(r), r.train.epochs, r.train.steps) for r in recipes}) <= 1


#: What sets a cell's pace besides its recipe: the CPU's name, its vector units and the
#: torch threads the cell had.
Pace = tuple[Any, Any, Any]


def pace_of(hardware: Mapping[str, Any], threads: Any) -> Pace:
    """The pace key of an invocation; a record without ``cpu_features`` (written before the
    ledger named them) matches no machine that has them, so it is never mistaken for one."""
    return (hardware.get("cpu"), hardware.get("cpu_features"), threads)


@dataclasses.dataclass
class StudyEta:
    """Whole-cell seconds measured so far, and what they predict for the cells left.

    ``predicted`` maps a cell's key to the probes' prediction of its seconds, for a study
    of unlike cells (a resumed cell's prediction counts only the steps left); None counts
    every cell alike. ``trained`` maps a resumed cell's key to the share of its training
    done (:attr:`~sat_toolkit.study.grid.PlannedCell.trained`): where cells count alike, it
    is expected to take the rest of a cell's training and a whole evaluation. The final
    evaluation does not shrink with the training left, and it is no small part of a cell
    (APGD-T with 9 targets: a fifth of a converged Fashion-MNIST cell), so ``evaluated``
    holds the measured cells' evaluation seconds (:func:`evaluation_seconds`), and the
    median share of their cell they took is kept whole. Counting a resumed cell whole erred
    long by up to a cell; scaling all of it by the training left erred short by up to the
    evaluation.
    """

    jobs: int
    predicted: dict[str, float] | None = None
    measured: dict[str, float] = dataclasses.field(default_factory=dict)  # cell key -> seconds, from step 0
    trained: dict[str, float] = dataclasses.field(default_factory=dict)  # cell key -> share done
    evaluated: dict[str, float] = dataclasses.field(default_factory=dict)  # cell key -> final evaluation's s

    @classmethod
    def from_ledger(
        cls,
        cells: dict[str, list[dict[str, Any]]],
        jobs: int,
        invocations: Sequence[dict[str, Any]] = (),
        pace: Pace | None = None,
    ) -> StudyEta:
        """Cells that earlier invocations ran from scratch to the end (resumed ones ran part of
        a cell), and with ``pace`` only those run at that pace (:func:`pace_of`): a study
        continued on another machine would otherwise be timed by the first one's cells (2.6x
        off between two CPUs that both call themselves 'AMD EPYC')."""
        paces = {
            inv.get("id"): pace_of(inv.get("hardware", {}), inv.get("threads_per_job")) for inv in invocations
        }
        eta = cls(jobs)
        for key, attempts in cells.items():
            for attempt in attempts:
                if attempt.get("outcome") != "finished" or attempt.get("resumed_from_step"):
                    continue
                if pace is None or paces.get(attempt.get("invocation")) == pace:
                    eta.record(key, float(attempt["seconds"]))
        return eta

    def record(self, key: str, seconds: float, evaluation: float | None = None) -> None:
        self.measured[key] = seconds
        if evaluation is not None:
            self.evaluated[key] = evaluation

    def _evaluation_share(self) -> float:
        """The median share of a measured cell its final evaluation took (0 where none says)."""
        shares = [
            min(1.0, self.evaluated[key] / seconds)
            for key, seconds in self.measured.items()
            if key in self.evaluated and seconds > 0
        ]
        return statistics.median(shares) if shares else 0.0

    def _pace_samples(self) -> list[float]:
        """Each measured cell's seconds over its prediction; where cells count alike (no
        predictions), its seconds: what the median of them, times a cell's prediction (or 1),
        expects of that cell."""
        if self.predicted is None:
            return list(self.measured.values())
        return [
            seconds / self.predicted[key] for key, seconds in self.measured.items() if self.predicted.get(key)
        ]

    def _scale(self) -> float | None:
        """The median ratio: one slow cell (a busy machine) moves it less than a mean would."""
        ratios = self._pace_samples()
        if ratios:
            return statistics.median(ratios)
        return 1.0 if self.predicted is not None else None  # before any measurement: the probes'

    def seconds_of(self, key: str) -> float | None:
        """How long the cell ``key`` is expected to take; None before any measurement, and for
        a cell the probes did not predict (a kind no cell left to run has)."""
        scale = self._scale()
        if scale is None:
            return None
        if self.predicted is None:
            evaluation = self._evaluation_share()
            return scale * ((1.0 - evaluation) * (1.0 - self.trained.get(key, 0.0)) + evaluation)
        return scale * self.predicted[key] if key in self.predicted else None

    def remaining(self, waiting: Sequence[str], running: Mapping[str, float] | None = None) -> float | None:
        """Wall seconds until the last cell ends: ``running`` maps each cell already started
        to how long it has run (it needs its expected time less that, at least 0), and the
        ``waiting`` cells, in order, each take the first of the ``jobs`` workers to free up.

        Why not rounds of whole cells: after one of two side-by-side cells finishes, the
        other is nearly done too; counting it as a whole cell overstates the time left by
        up to a cell.
        """
        busy = []
        for key, elapsed in (running or {}).items():
            if (expected := self.seconds_of(key)) is None:
                return None
            busy.append(max(0.0, expected - elapsed))
        workers = sorted(busy + [0.0] * max(0, self.jobs - len(busy)))
        for key in waiting:
            if (expected := self.seconds_of(key)) is None:
                return None
            workers[0] += expected
            workers.sort()
        return max(workers, default=0.0)

    def describe(self, waiting: Sequence[str], running: Mapping[str, float] | None = None) -> str | None:
        """``estimated time left: 42 min for 7 cells (...)``, or None before any measurement."""
        cells_left = len(waiting) + len(running or {})
        left = self.remaining(waiting, running)
        if left is None or cells_left <= 0:
            return None
        jobs = f", {self.jobs} at a time" if self.jobs > 1 else ""
        return f"estimated time left: {rough_duration(left)} for {cells_left} cell(s){jobs} ({self.basis()})"

    def basis(self) -> str:
        """What the estimate rests on, in words."""
        ratios = self._pace_samples()
        if self.predicted is None:
            return f"median {rough_duration(statistics.median(ratios))} per cell over {len(ratios)} finished"
        if not ratios:
            return "as the probes predict"
        return (
            f"the probes' prediction x {statistics.median(ratios):.2f}, the median of "
            f"{len(ratios)} finished cell(s) against their own"
        )
