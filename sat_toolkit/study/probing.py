"""A study's first estimate, printed with its plan: measured cells, else timed probes.

Cells that are alike (:func:`~sat_toolkit.study.eta.cells_alike`, judged over the whole
study, not only the cells ``--only`` selects, since every finished cell on record is a
measurement) take the median finished cell, else one probe of the first cell's own run
(:func:`~sat_toolkit.engine.probe.probe_run_cost`, about 20 s). Unlike cells (a budget
sweep, an objective study) are probed once per kind, again on every restart: the finished
cells give the machine's pace only against a prediction of each. Probes are skipped for
cells of fewer than ``MIN_STEPS_TO_PROBE`` steps, whose probe would cost a noticeable part
of a cell.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from sat_toolkit.errors import SatError
from sat_toolkit.evaluation.cost import rough_duration
from sat_toolkit.recipe import Recipe
from sat_toolkit.study.eta import UNEVEN_CELLS, StudyEta, cells_alike, step_shape
from sat_toolkit.study.grid import PlannedCell

if TYPE_CHECKING:
    from sat_toolkit.engine.probe import RunCostEstimate

#: Cells shorter than this many optimiser steps are not probed before the study starts.
MIN_STEPS_TO_PROBE = 200
#: The probes of a study of unlike cells: step_shape -> (the cell probed, its estimate).
Probes = dict[str, tuple[PlannedCell, "RunCostEstimate"]]


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the body with ``threads`` torch threads, then restore the count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def first_estimate(
    eta: StudyEta,
    recipes: Mapping[str, Recipe],
    todo: Sequence[PlannedCell],
    threads: int,
    *,
    probe: bool = True,
) -> tuple[list[str], str]:
    """The lines to print with the plan, and the caveat every later estimate carries ('' or
    :data:`UNEVEN_CELLS`). ``recipes`` holds every cell of the study by key; ``eta`` gets
    the probes' predictions when the cells are not alike.
    """
    waiting = [p.cell.key for p in todo]
    if cells_alike(list(recipes.values())):
        line = eta.describe(waiting) or (probe_line(todo[0], len(todo), eta.jobs, threads) if probe else None)
        return ([line] if line else []), ""
    lines = []
    if probe:
        probes, failure = probe_each_kind(todo, threads)
        if probes:
            resume_at = {p.cell.key: p.step for p in todo if p.status == "resume"}
            eta.predicted = {
                key: probes[shape][1].for_recipe(recipe, resume_at.get(key, 0)).seconds
                for key, recipe in recipes.items()
                if (shape := step_shape(recipe)) in probes
            }
            return [_unlike_line(eta, todo, probes)], ""
        lines += [failure] if failure else []
    if measured := eta.describe(waiting):  # not probed: the cells count alike, and say so
        lines.append(measured + UNEVEN_CELLS)
    return lines, UNEVEN_CELLS


def probe_line(planned: PlannedCell, cells: int, jobs: int, threads: int) -> str | None:
    """``estimated time: about 3.4 h for 18 cells ...`` from a probe of ``planned``'s run, or None.

    For a study whose cells are alike. The probe runs with the thread count each cell will
    get; every cell counts as a whole one (a cell to resume has part of its training done,
    so the estimate errs long there).
    """
    probes, failure = probe_each_kind([planned], threads)
    if not probes:
        return failure
    ((_, estimate),) = probes.values()
    rounds = -(-cells // jobs)
    together = f", {jobs} at a time" if jobs > 1 else ""
    return (
        f"estimated time: about {rough_duration(rounds * estimate.seconds)} for {cells} cell(s){together}, "
        f"{rough_duration(estimate.seconds)} per cell ({estimate.describe()}); from a "
        f"{estimate.probe_seconds:.0f} s probe of {planned.cell.label} seed {planned.cell.seed}"
    )


def probe_each_kind(todo: Sequence[PlannedCell], threads: int) -> tuple[Probes | None, str | None]:
    """Probe the first cell left of each kind (:func:`~sat_toolkit.study.eta.step_shape`).

    ``(probes, None)``; ``(None, why)`` when a probe failed; ``(None, None)`` when the
    cells are too short to probe.
    """
    from sat_toolkit.engine.probe import probe_run_cost

    first_of_kind: dict[str, PlannedCell] = {}
    for p in todo:
        first_of_kind.setdefault(step_shape(p.recipe), p)
    probes: Probes = {}
    for shape, p in first_of_kind.items():
        try:
            with torch_threads(threads):
                estimate = probe_run_cost(p.recipe, min_total_steps=MIN_STEPS_TO_PROBE)
        except Exception as exc:  # noqa: BLE001 - the cell itself will fail and be reported, with its log
            return None, _failed_probe(p, exc)
        if estimate is None:
            return None, None
        probes[shape] = (p, estimate)
    return probes, None


def _unlike_line(eta: StudyEta, todo: Sequence[PlannedCell], probes: Probes) -> str:
    """``estimated time: about 9 h for 4 cell(s), 1.5 h to 4.6 h per cell (...); from ... probes``."""
    waiting = [p.cell.key for p in todo]
    per_cell = sorted(eta.seconds_of(key) or 0.0 for key in waiting)
    shortest, longest = rough_duration(per_cell[0]), rough_duration(per_cell[-1])
    together = f", {eta.jobs} at a time" if eta.jobs > 1 else ""
    kinds = "; ".join(
        f"{p.cell.label} seed {p.cell.seed}: {estimate.describe()}" for p, estimate in probes.values()
    )
    probe_seconds = sum(estimate.probe_seconds for _, estimate in probes.values())
    return (
        f"estimated time: about {rough_duration(eta.remaining(waiting) or 0.0)} for {len(todo)} cell(s)"
        f"{together}, {shortest if shortest == longest else f'{shortest} to {longest}'} per cell "
        f"({eta.basis()}); from {probe_seconds:.0f} s of probes of {len(probes)} kind(s) of cell: {kinds}"
    )


def _failed_probe(planned: PlannedCell, exc: Exception) -> str:
    why = exc.format_message() if isinstance(exc, SatError) else f"{type(exc).__name__}: {exc}"
    return f"no time estimate: the probe of {planned.cell.label} seed {planned.cell.seed} failed ({why})"
