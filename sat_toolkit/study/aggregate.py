"""Seeds -> one row per cell label: mean, sample std and n, each number with its sources.

Numbers are accuracies as fractions, exactly as the runs' ``metrics.json`` hold them;
``mean`` is :func:`statistics.fmean` and ``std`` the sample standard deviation
:func:`statistics.stdev` (``None`` for a single seed). Every number carries the runs it
came from (run directory, its ``recipe.toml``, and the per-run value), so a figure in the
report can be traced to the exact runs and recipes without guessing.

Changes versus the baseline are computed inside a group (same values on every other axis)
two ways. *Paired by seed*, the one the report shows: a seed fixes the data order and,
where the architecture is the same, the initial weights, so the seed-k cell of a row and
of the baseline differ only in the axis value; the mean of the per-seed differences gets
a Student-t confidence interval (``CONFIDENCE``, n - 1 degrees of freedom), and a change
whose interval excludes 0 is *beyond seed noise*. Pairing removes the between-seed
variation both rows share, so it detects smaller changes than comparing the two means.
Also kept: the difference of means with the Welch standard error sqrt(s1^2/n1 + s2^2/n2),
which treats the rows' seeds as independent runs.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sat_toolkit.recipe import RECIPE_FILE
from sat_toolkit.recipe.schema import DEFAULT_VALIDATION_LABEL
from sat_toolkit.study.grid import FinishedCells, cell_label, cells, labels, read_finished
from sat_toolkit.study.spec import StudySpec

METRICS = ("clean_accuracy", "robust_accuracy", "pgd")
#: Two-sided coverage of the paired interval.
CONFIDENCE = 0.95
#: Paired differences (multiples of one image over the test set) closer than this are the
#: same difference; float rounding alone leaves about 1e-17 between them.
NO_SPREAD = 1e-9


def stat(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "std", "n"}`` (``std`` is the sample std, None below two values)."""
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "n": len(values),
    }


def difference_standard_error(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    """Standard error of ``a.mean - b.mean`` for independent samples; None without two seeds each."""
    if a["std"] is None or b["std"] is None:
        return None
    return math.sqrt(a["std"] ** 2 / a["n"] + b["std"] ** 2 / b["n"])


def paired_difference(
    mine: dict[int, float], theirs: dict[int, float], confidence: float = CONFIDENCE
) -> dict[str, Any] | None:
    """Per-seed differences ``mine[k] - theirs[k]`` over the seeds both have, their mean and interval.

    ``interval`` (and ``beyond_noise``, true when it excludes 0) needs two paired seeds;
    with one the mean is the single difference. None when no seed is shared.

    Where every seed gives the same difference (one image on each of two seeds, say), the
    Student-t interval has zero width, which would call any such difference beyond noise:
    the seeds show no spread to judge the noise by, so ``beyond_noise`` stays None there.
    """
    from scipy import stats

    seeds = sorted(set(mine) & set(theirs))
    if not seeds:
        return None
    differences = [mine[k] - theirs[k] for k in seeds]
    mean = statistics.fmean(differences)
    result: dict[str, Any] = {
        "seeds": seeds,
        "differences": differences,
        "mean": mean,
        "std": None,
        "n": len(seeds),
        "confidence": confidence,
        "interval": None,
        "beyond_noise": None,
    }
    if len(seeds) > 1:
        std = statistics.stdev(differences)
        half = float(stats.t.ppf(0.5 + confidence / 2, len(seeds) - 1)) * std / math.sqrt(len(seeds))
        spread = std > NO_SPREAD
        result.update(
            std=std,
            interval=[mean - half, mean + half],
            beyond_noise=bool(mean - half > 0 or mean + half < 0) if spread else None,
        )
    return result


def pgd_label(evaluation: dict[str, Any]) -> str | None:
    """The first evaluation attack whose label starts with 'pgd' (the PGD-k figure), if any."""
    return next((label for label in evaluation.get("attacks", {}) if label.lower().startswith("pgd")), None)


def _source(run_dir: Path, seed: int, value: float) -> dict[str, Any]:
    return {"seed": seed, "run_dir": str(run_dir), "recipe": str(run_dir / RECIPE_FILE), "value": value}


def _metric(runs: list[tuple[int, Path, dict[str, Any]]], pick: Any) -> dict[str, Any] | None:
    sources = []
    for seed, run_dir, evaluation in runs:
        value = pick(evaluation)
        if value is not None:
            sources.append(_source(run_dir, seed, value))
    if not sources:
        return None
    return {**stat([s["value"] for s in sources]), "runs": sources}


def collect(spec: StudySpec, finished_cells: FinishedCells | None = None) -> list[dict[str, Any]]:
    """One row per cell label (grid order) from the finished runs; rows with no run have n = 0."""
    usable = (finished_cells or read_finished(spec)).metrics
    finished: dict[str, list[tuple[int, Path, dict[str, Any]]]] = {}
    for cell in cells(spec):
        metrics = usable.get(cell.key)
        if metrics is not None:
            finished.setdefault(cell.label, []).append((cell.seed, cell.run_dir, metrics["evaluation"]))
    rows = []
    # Without a baseline nothing is compared, so nothing is grouped either: one flat table.
    group_names = [axis.name for axis in spec.group_axes] if spec.compare_axis else []
    for values in labels(spec):
        label = cell_label(values)
        runs = sorted(finished.get(label, []))
        pgd_labels = {pgd_label(evaluation) for _, _, evaluation in runs} - {None}
        pgd = next(iter(pgd_labels)) if len(pgd_labels) == 1 else None
        row: dict[str, Any] = {
            "label": label,
            "axes": dict(values),
            "group": {name: values[name] for name in group_names},
            "seeds_expected": list(spec.seeds),
            "seeds_finished": [seed for seed, _, _ in runs],
            "samples": sorted({evaluation.get("samples") for _, _, evaluation in runs} - {None}),
            "clean_accuracy": _metric(runs, lambda e: e.get("clean_accuracy")),
            "robust_accuracy": _metric(runs, lambda e: e.get("robust_accuracy")),
            "pgd": None,
            "pgd_label": pgd,
            "change_vs_baseline": None,
        }
        if pgd is not None:
            row["pgd"] = _metric(runs, lambda e, k=pgd: e["attacks"].get(k, {}).get("robust_accuracy"))
        rows.append(row)
    _add_changes(spec, rows)
    return rows


def learning_curves(
    spec: StudySpec, finished_cells: FinishedCells | None = None
) -> dict[str, dict[str, Any]]:
    """label -> its validation history averaged over the finished seeds, and its end point.

    ``validation``: one point per epoch that every finished seed validated (clean and
    validation-attack accuracy on the fixed test subset, see
    :func:`~sat_toolkit.engine.evaluation.validate`); ``attacks``: which attacks those were
    (records from before runs named it used PGD-10); ``final``: the final evaluation's
    clean and worst-case accuracy, at the run's last epoch. Why: a table of end points
    cannot show whether more training would still have helped, the curve can. Labels
    whose runs never validated are left out.
    """
    usable = (finished_cells or read_finished(spec)).metrics
    runs: dict[str, list[dict[str, Any]]] = {}
    for cell in cells(spec):
        metrics = usable.get(cell.key)
        if metrics is not None:
            runs.setdefault(cell.label, []).append(metrics)
    out = {}
    for label, members in runs.items():
        histories = [
            {v["epoch"]: v for v in m.get("validation") or [] if _finite(v.get("robust_accuracy"))}
            for m in members
        ]
        shared = sorted(set.intersection(*(set(h) for h in histories)))
        if not shared:
            continue
        epochs = {m.get("epochs") for m in members}
        attacks = {h[epoch].get("attack", DEFAULT_VALIDATION_LABEL) for h in histories for epoch in shared}
        out[label] = {
            "seeds": len(members),
            "attacks": sorted(attacks),
            "validation": [
                {
                    "epoch": epoch,
                    "clean_accuracy": statistics.fmean(h[epoch]["clean_accuracy"] for h in histories),
                    "robust_accuracy": statistics.fmean(h[epoch]["robust_accuracy"] for h in histories),
                }
                for epoch in shared
            ],
            "final": {
                "epoch": epochs.pop() if len(epochs) == 1 else None,
                **{key: _mean_of(m["evaluation"].get(key) for m in members) for key in METRICS[:2]},
            },
        }
    return out


def validation_attack_names(learning: dict[str, dict[str, Any]]) -> str:
    """The validation attacks behind a study's learning curves, e.g. ``"PGD-10"``."""
    names = {name for curve in learning.values() for name in curve["attacks"]}
    return " / ".join(sorted(names)) or DEFAULT_VALIDATION_LABEL


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _mean_of(values: Any) -> float | None:
    kept = [v for v in values if _finite(v)]
    return statistics.fmean(kept) if kept else None


def _by_seed(metric: dict[str, Any]) -> dict[int, float]:
    return {source["seed"]: source["value"] for source in metric["runs"]}


def _add_changes(spec: StudySpec, rows: list[dict[str, Any]]) -> None:
    """Each row's change in robust and clean accuracy vs the baseline row of its group."""
    compare = spec.compare_axis
    if compare is None:
        return
    for row in rows:
        base = next(
            (r for r in rows if r["group"] == row["group"] and r["axes"][compare.name] == spec.baseline),
            None,
        )
        if base is None:
            continue
        change: dict[str, Any] = {"baseline": base["label"]}
        for key in ("robust_accuracy", "clean_accuracy"):
            mine, theirs = row[key], base[key]
            if mine is None or theirs is None:
                change[key] = None
                continue
            change[key] = {
                "paired": paired_difference(_by_seed(mine), _by_seed(theirs)),
                "difference_of_means": mine["mean"] - theirs["mean"],
                "standard_error": difference_standard_error(mine, theirs),
                "runs": [{**s, "row": row["label"]} for s in mine["runs"]]
                + [{**s, "row": base["label"]} for s in theirs["runs"]],
            }
        row["change_vs_baseline"] = change
