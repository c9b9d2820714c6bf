"""The grid: every (axis values x seed) cell, its recipe, its directory and where it stands.

Each cell is an ordinary run: the base recipe with the study's overrides, any
command-line ``--set``, the cell's axis values' overrides (so an axis keeps its values
whatever the command line sets), then ``run.seed`` and ``run.output_dir`` set by the
study. An axis value that replaces a whole table (``objective=trades``) keeps what the
overrides before it set inside that table. Every cell's recipe is resolved before
anything trains, so a typo in one axis value fails the whole study in a second instead
of an hour in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sat_toolkit.errors import SatError
from sat_toolkit.recipe import Recipe, RecipeError, check_run_dir, load_recipe
from sat_toolkit.recipe.finished import read_finished_metrics
from sat_toolkit.recipe.rundir import RunInProgress, as_read_back, differences, read_saved_recipe
from sat_toolkit.study.spec import LABEL_SEPARATOR, StudyError, StudySpec

LOG_DIR = "logs"


def run_log(run_dir: Path) -> Path:
    """The log of the cell run in ``<output_dir>/<label>/seed<k>``: ``<output_dir>/logs/<label>-seed<k>.log``.

    Derived from the run directory alone, so a run copied from another study (see
    :mod:`~sat_toolkit.study.reuse`) finds its log there too.
    """
    return run_dir.parent.parent / LOG_DIR / f"{run_dir.parent.name}-{run_dir.name}.log"


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run of the study: an axis-value combination (``label``) and a seed."""

    label: str
    values: dict[str, str]  # axis name -> value label, in axis order
    seed: int
    run_dir: Path
    overrides: tuple[str, ...]

    @property
    def key(self) -> str:
        """``small+relu/seed0``: unique in the study; also the cell's path under output_dir."""
        return f"{self.label}/seed{self.seed}"

    @property
    def log_path(self) -> Path:
        return run_log(self.run_dir)


@dataclasses.dataclass(frozen=True)
class PlannedCell:
    """A cell with its resolved recipe and what running it means now.

    ``status`` is ``done`` (metrics.json with an evaluation), ``resume`` (a checkpoint at
    ``step`` of the run's ``total_steps``, None where the checkpoint cannot tell:
    :func:`~sat_toolkit.engine.checkpoint.run_length`), ``new``, or ``running`` (another
    process holds the run: another invocation of the study, perhaps on another machine
    sharing the directory). The runner looks at a cell again when it starts it, since
    another invocation may have moved it on meanwhile.
    """

    cell: Cell
    recipe: Recipe
    status: str
    step: int
    total_steps: int | None = None

    @property
    def resume_point(self) -> str:
        """``step 1872 of 5616``, or ``step 1872`` where the run's length is not known."""
        return f"step {self.step}" + (f" of {self.total_steps}" if self.total_steps else "")

    @property
    def trained(self) -> float:
        """The share of its training the cell has done: 0 for a new cell, or where its
        checkpoint does not tell the run's length."""
        return min(1.0, self.step / self.total_steps) if self.total_steps else 0.0


def cell_label(values: dict[str, str]) -> str:
    return LABEL_SEPARATOR.join(values.values())


def labels(spec: StudySpec) -> list[dict[str, str]]:
    """Every axis-value combination, in axis order (the first axis varies slowest)."""
    names = [axis.name for axis in spec.axes]
    return [
        dict(zip(names, combo, strict=True)) for combo in itertools.product(*(a.values for a in spec.axes))
    ]


def cells(spec: StudySpec) -> list[Cell]:
    """All cells, seed-major: every label's first seed runs before any second seed.

    Why seed-major: a study stopped half-way still has every row of the table (with fewer
    seeds) instead of all seeds of half the rows.
    """
    out = []
    for seed in spec.seeds:
        for values in labels(spec):
            overrides = list(spec.overrides)
            for axis in spec.axes:
                overrides.extend(axis.values[values[axis.name]])
            label = cell_label(values)
            run_dir = spec.output_dir / label / f"seed{seed}"
            overrides += [f"run.seed={seed}", f"run.output_dir={json.dumps(str(run_dir))}"]
            out.append(Cell(label, values, seed, run_dir, tuple(overrides)))
    return out


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    """The run's metrics if it finished (an intact metrics.json), else None (damaged ones too:
    :func:`~sat_toolkit.recipe.finished.read_finished_metrics` says why)."""
    return read_finished_metrics(run_dir)[0]


@dataclasses.dataclass
class FinishedCells:
    """What a study's run directories hold, read once for a report.

    Attributes:
        metrics: key -> the metrics of a finished run of the cell as the study file now
            defines it.
        damaged: key -> why the cell's metrics.json cannot be read.
        stale: key -> how the cell's finished run differs from what the study file (or
            its base recipe) now asks; a run would refuse such a cell, so a report leaves
            it out too rather than show old numbers under the new settings.
    """

    metrics: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    damaged: dict[str, str] = dataclasses.field(default_factory=dict)
    stale: dict[str, str] = dataclasses.field(default_factory=dict)


def read_finished(spec: StudySpec) -> FinishedCells:
    """Every cell's finished run, each metrics.json and recipe read once (see :class:`FinishedCells`)."""
    found = FinishedCells()
    for cell in cells(spec):
        metrics, why = read_finished_metrics(cell.run_dir)
        if why:
            found.damaged[cell.key] = why
        elif metrics is not None:
            changed = _changed_since(spec, cell)
            if changed:
                found.stale[cell.key] = changed
            else:
                found.metrics[cell.key] = metrics
    return found


def _changed_since(spec: StudySpec, cell: Cell) -> str:
    """The settings of the cell's saved run that its recipe now sets otherwise ('' if none).

    Keys the saved recipe lacks are not counted: they were added to the toolkit after the
    run, which ran with what their default now says (a published study's older cells
    would otherwise all be stale); a run refuses those too, a report need not.
    """
    try:
        with warnings.catch_warnings():  # override notes were said when the cell ran
            warnings.simplefilter("ignore")
            recipe = load_recipe(spec.base, cell.overrides)
    except RecipeError as exc:
        return f"its recipe no longer loads: {exc.problems[0] if exc.problems else exc}"
    return _changes(cell.run_dir, recipe, new_keys=False)


def select(all_cells: list[Cell], only: tuple[str, ...]) -> list[Cell]:
    """The cells ``only`` names, in study order: a label means all its seeds, ``label/seedK``
    one cell; empty means every cell.

    Why: a long grid is often run in the order that answers a question first (seed 1 of
    the two rows that decide a default), not only in its seed-major order.
    """
    if not only:
        return all_cells
    known = {c.label for c in all_cells} | {c.key for c in all_cells}
    if unknown := [name for name in only if name not in known]:
        example = all_cells[0].key if all_cells else "LABEL/seedK"
        labels_known = ", ".join(dict.fromkeys(c.label for c in all_cells))
        raise StudyError(
            [
                f"--only {name!r} names no cell; use a label ({labels_known}) or one cell as e.g. {example!r}"
                for name in unknown
            ]
        )
    return [c for c in all_cells if c.label in only or c.key in only]


def study_recipes(spec: StudySpec, planned: Sequence[PlannedCell]) -> dict[str, Recipe]:
    """Every cell's recipe by key, not only the ``planned`` ones' (an ``--only`` selection):
    the time estimate weighs the cells to run against every finished cell on record. A
    cell whose recipe does not resolve is left out; :func:`plan` reports it once it is run.
    """
    recipes = {p.cell.key: p.recipe for p in planned}
    for cell in cells(spec):
        if cell.key not in recipes:
            with contextlib.suppress(RecipeError):
                recipes[cell.key] = load_recipe(spec.base, cell.overrides)
    return recipes


#: Where a problem an override caused came from, in a study: one of three places.
OVERRIDDEN_HERE = " (from the study's set, its axis values or the command line's --set)"


def plan(spec: StudySpec, only: tuple[str, ...] = ()) -> list[PlannedCell]:
    """Resolve every cell's recipe (of those ``only`` names, see :func:`select`) and check
    its directory; all problems in one error.

    A directory holding a *different* run (the study or its base changed since) is an
    error here, before anything trains, rather than a failure in the middle of the study.
    """
    from sat_toolkit.engine.checkpoint import checkpoint_step, latest_checkpoint, run_length

    problems: dict[str, list[str]] = {}  # message -> cell labels, so one typo is one line
    planned = []
    failed: set[str] = set()
    for cell in select(cells(spec), only):
        if cell.label in failed:
            continue
        try:
            recipe = load_recipe(spec.base, cell.overrides)
        except RecipeError as exc:
            failed.add(cell.label)
            for problem in exc.problems:  # the recipe loader blames '--set'; here any override may have
                text = str(problem).replace(" (from --set)", OVERRIDDEN_HERE)
                problems.setdefault(text, []).append(cell.label)
            continue
        try:
            resume_flag = check_run_dir(cell.run_dir, recipe, resume=True)
        except RunInProgress:
            planned.append(PlannedCell(cell, recipe, "running", 0))
            continue
        except SatError as exc:
            changed = _changes(cell.run_dir, recipe)
            message = (
                f"holds a different run ({changed}): the study or its base recipe changed since it ran; "
                "use another study.output_dir (or --output-dir), or remove the old runs"
                if changed
                else exc.format_message()
            )
            problems.setdefault(message, []).append(cell.key)
            continue
        checkpoint = latest_checkpoint(cell.run_dir) if resume_flag else None
        step = checkpoint_step(checkpoint) if checkpoint is not None else 0
        status = "done" if read_metrics(cell.run_dir) else "resume" if checkpoint is not None else "new"
        total = run_length(checkpoint, recipe) if status == "resume" else None
        planned.append(PlannedCell(cell, recipe, status, step, total))
    if problems:
        lines = [f"{_which(where)}: {message}" for message, where in problems.items()]
        raise StudyError(lines, str(spec.path))
    return planned


def _which(where: list[str]) -> str:
    """``cell a`` / ``cells a, b, c and 5 more``: short enough for one line."""
    names = list(dict.fromkeys(where))
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"cell{'s' if len(names) > 1 else ''} {shown}"


def _changes(run_dir: Path, recipe: Recipe, *, new_keys: bool = True) -> str:
    """``train.epochs: 1 -> 2; ...`` between the saved run and this cell's recipe ('' if unreadable).

    ``new_keys=False`` leaves out keys the saved recipe lacks (see :func:`_changed_since`).
    """
    if (saved := read_saved_recipe(run_dir)) is None:
        return ""
    changed = differences(saved, as_read_back(recipe))
    if not new_keys:
        changed = [line for line in changed if ": '<unset>' -> " not in line]
    return "; ".join(changed[:3]) + (f"; and {len(changed) - 3} more" if len(changed) > 3 else "")
