"""A finished run's ``metrics.json``, read once and checked for what its readers take from it.

A run writes the file last, so its presence means "finished"; the run itself (``--resume``
says "nothing to do"), a study's plan, its report and its learning curves then read
numbers out of it. A file damaged by hand or by a disk (no evaluation, an accuracy that is
text or NaN, a validation record without its epoch) must read as damaged everywhere, in
one line that says how to redo it, not crash the report with a ``TypeError`` or pass as
an unfinished cell.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sat_toolkit.errors import first_line
from sat_toolkit.parsing import loads_json
from sat_toolkit.recipe.rundir import METRICS_FILE

#: What redoes a damaged file: the final evaluation runs again on the finished weights.
REDO = "delete it and run again with --resume (in a study: run the study again)"


def read_finished_metrics(run_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(metrics, None)`` for a finished run, ``(None, None)`` for one without the file,
    ``(None, why)`` for a damaged one."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return None, None
    try:
        metrics = loads_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # unreadable, not UTF-8, not JSON
        return None, f"unreadable: {first_line(error)}"
    problem = metrics_problem(metrics)
    return (None, problem) if problem else (metrics, None)


def metrics_problem(metrics: Any) -> str | None:
    """Why ``metrics`` is not what a finished run writes, in the terms of its keys; None if it is."""
    if not isinstance(metrics, dict):
        return "not a JSON object"
    evaluation = metrics.get("evaluation")
    if not isinstance(evaluation, dict):
        return "no evaluation in it"
    if not _fraction(evaluation.get("clean_accuracy")):
        return f"evaluation.clean_accuracy is {evaluation.get('clean_accuracy')!r}, not an accuracy in [0, 1]"
    robust = evaluation.get("robust_accuracy")
    if not (_fraction(robust) or robust is None):  # None: an evaluation without attacks
        return f"evaluation.robust_accuracy is {robust!r}, not an accuracy in [0, 1]"
    attacks = evaluation.get("attacks", {})
    if not isinstance(attacks, dict) or not all(isinstance(a, dict) for a in attacks.values()):
        return "evaluation.attacks is not a table of attacks"
    for label, outcome in attacks.items():
        if "robust_accuracy" in outcome and not _fraction(outcome["robust_accuracy"]):
            return f"evaluation.attacks.{label}.robust_accuracy is {outcome['robust_accuracy']!r}"
    validation = metrics.get("validation") or []
    if not isinstance(validation, list):
        return "validation is not a list of epochs"
    for index, record in enumerate(validation):
        if not isinstance(record, dict) or not _count(record.get("epoch")):
            return f"validation[{index}] has no epoch"
        clean, robust = record.get("clean_accuracy"), record.get("robust_accuracy")
        if not _fraction(clean):
            return f"validation[{index}].clean_accuracy is {clean!r}, not an accuracy in [0, 1]"
        # None or NaN: validated without an attack
        no_attack = robust is None or (isinstance(robust, float) and math.isnan(robust))
        if not (_fraction(robust) or no_attack):
            return f"validation[{index}].robust_accuracy is {robust!r}, not an accuracy in [0, 1]"
    return None


def _fraction(value: Any) -> bool:
    """A number in [0, 1]; NaN fails the comparison, so a diverged value never passes."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
