"""Studies: a grid of ordinary runs (axes x seeds) and the paper-style report over them.

    spec = load_study("recipes/studies/fashion_mnist_activations.toml")
    run_study(spec, jobs=2)      # skips finished cells, resumes interrupted ones
    write_report(spec)           # report.md, report.json, scatter.png from the runs

``sat-toolkit study STUDY.toml`` is the command-line face of the same three steps.
"""

from sat_toolkit.study.aggregate import collect, stat
from sat_toolkit.study.grid import Cell, PlannedCell, cells, plan
from sat_toolkit.study.report import write_report
from sat_toolkit.study.runner import CellOutcome, StudyRun, run_study
from sat_toolkit.study.spec import Axis, StudyError, StudySpec, load_study

__all__ = [
    "Axis",
    "Cell",
    "CellOutcome",
    "PlannedCell",
    "StudyError",
    "StudyRun",
    "StudySpec",
    "cells",
    "collect",
    "load_study",
    "plan",
    "run_study",
    "stat",
    "write_report",
]
