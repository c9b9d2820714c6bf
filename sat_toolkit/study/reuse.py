"""Take a finished run of the very same recipe instead of training a cell again.

Studies overlap: the budget sweep's 6-epoch ReLU cell is the protocol ablation's fc_head
row, and the objective study's PGD-AT cells are the activation study's. On a CPU a cell
costs hours, so ``sat-toolkit study ... --reuse DIR`` looks under DIR for finished runs
(``recipe.toml`` beside a ``metrics.json`` with an evaluation) and copies one whose
resolved recipe equals a new cell's in every key that can change a result (the same test
as resuming: :func:`~sat_toolkit.recipe.rundir.differences`, which ignores where the run
lives, logging and checkpoint cadence) into the cell's directory. Nothing is re-measured:
the copy is that run, and ``reused.json`` beside it names where it was trained so the
report can say which numbers came from elsewhere. The copied ``recipe.toml`` keeps the
source's ``run.output_dir``, since that is where the run really was.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sat_toolkit.errors import first_line
from sat_toolkit.parsing import loads_json
from sat_toolkit.recipe import METRICS_FILE, MODEL_FILE, RECIPE_FILE, Recipe
from sat_toolkit.recipe.rundir import (
    RunInProgress,
    as_read_back,
    differences,
    hold_run_lock,
    read_saved_recipe,
)
from sat_toolkit.study.grid import PlannedCell, read_metrics, run_log
from sat_toolkit.study.ledger import now

REUSED_FILE = "reused.json"
#: What a finished run is made of; metrics.json last, since it is what marks a run finished.
RUN_FILES = (RECIPE_FILE, MODEL_FILE, REUSED_FILE, METRICS_FILE)


@dataclasses.dataclass(frozen=True)
class FinishedRun:
    """A finished run found under a ``--reuse`` directory, with its recipe as saved."""

    run_dir: Path
    recipe: dict[str, Any]

    @property
    def origin(self) -> str:
        """Where it was trained: its own directory, or the origin a copy of it names (a copy
        whose record is damaged is the nearest origin known)."""
        trained_in, _ = read_origin(self.run_dir)
        return trained_in or str(self.run_dir)


def read_origin(run_dir: Path) -> tuple[str | None, str | None]:
    """``(trained_in, None)`` from a copied run's ``reused.json``; ``(None, why)`` when the file
    is damaged; ``(None, None)`` for a run trained in its own directory (no file)."""
    path = Path(run_dir) / REUSED_FILE
    if not path.is_file():
        return None, None
    try:
        record = loads_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # unreadable, not UTF-8, not JSON
        return None, first_line(error)
    trained_in = record.get("trained_in") if isinstance(record, dict) else None
    if not isinstance(trained_in, str) or not trained_in.strip() or "\n" in trained_in:
        return None, f"'trained_in' is {trained_in!r}, not a directory"
    return trained_in, None


def finished_runs(directories: Iterable[Path]) -> list[FinishedRun]:
    """Every finished run under ``directories`` (searched recursively), in path order."""
    found: dict[Path, FinishedRun] = {}
    for directory in directories:
        for metrics in sorted(Path(directory).rglob(METRICS_FILE)):
            run_dir = metrics.parent
            if run_dir.resolve() in found or read_metrics(run_dir) is None:
                continue
            if (recipe := read_saved_recipe(run_dir)) is None:
                continue  # not a sat-toolkit run, or a damaged one: nothing to reuse
            found[run_dir.resolve()] = FinishedRun(run_dir, recipe)
    return list(found.values())


def match(recipe: Recipe, runs: Sequence[FinishedRun], *, exclude: Path | None = None) -> FinishedRun | None:
    """The first of ``runs`` made from ``recipe`` (no result-changing key differs), else None."""
    wanted = as_read_back(recipe)
    for run in runs:
        if exclude is not None and run.run_dir.resolve() == exclude.resolve():
            continue
        if not differences(run.recipe, wanted):
            return run
    return None


def matches(planned: Sequence[PlannedCell], directories: Sequence[Path]) -> dict[str, FinishedRun]:
    """cell key -> the finished run each new cell can take instead of training."""
    if not directories:
        return {}
    runs = finished_runs(directories)
    out = {}
    for p in planned:
        if p.status == "new" and (run := match(p.recipe, runs, exclude=p.cell.run_dir)) is not None:
            out[p.cell.key] = run
    return out


def adopt(source: FinishedRun, planned: PlannedCell, command: str) -> bool:
    """Copy ``source`` into the cell's directory (and its log beside the cell's); False if
    another process is working in that directory meanwhile (left to it)."""
    run_dir = planned.cell.run_dir
    try:
        lock = hold_run_lock(run_dir)
    except RunInProgress:
        return False
    try:
        note = {
            "trained_in": source.origin,
            "copied_from": str(source.run_dir),
            "copied": now(),
            "by": command,
        }
        for name in RUN_FILES:
            target = run_dir / name
            tmp = target.with_name(f".{name}.{os.getpid()}.tmp")
            if name == REUSED_FILE:
                tmp.write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")
            elif (source.run_dir / name).is_file():
                shutil.copyfile(source.run_dir / name, tmp)
            else:
                continue
            tmp.replace(target)
        log = run_log(source.run_dir)
        planned.cell.log_path.parent.mkdir(parents=True, exist_ok=True)
        with planned.cell.log_path.open("a", encoding="utf-8") as out:
            out.write(f"== {planned.cell.key}: not trained here; reused the run in {source.origin}\n")
            if log.is_file():
                out.write(log.read_text(encoding="utf-8", errors="replace"))
    finally:
        if lock is not None:
            lock.close()
    return True


def reuse_finished(
    planned: list[PlannedCell], directories: Sequence[Path], command: str
) -> tuple[list[PlannedCell], dict[str, str]]:
    """Adopt a finished run for every new cell that has one: the plan with those cells
    done, and cell key -> where each adopted run was trained."""
    found = matches(planned, directories)
    out, origins = [], {}
    for p in planned:
        source = found.get(p.cell.key)
        if source is not None and adopt(source, p, command):
            origins[p.cell.key] = source.origin
            p = dataclasses.replace(p, status="done")
        out.append(p)
    return out, origins
