"""The study report: ``report.md`` (the paper's table layout), ``report.json``, ``scatter.png``,
where the runs validated during training ``curves.png``, and where rows are compared with
a baseline on paired seeds ``changes.png``.

Everything is rebuilt from the run directories and the ledger, never from memory of the
current invocation, so ``--report-only`` gives the same report as the run that finished
the study, and a report can always be regenerated after runs are added or repaired.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sat_toolkit.errors import SatError
from sat_toolkit.parsing import TOMLDecodeError, loads_toml
from sat_toolkit.recipe import RECIPE_FILE
from sat_toolkit.recipe.finished import REDO
from sat_toolkit.study.aggregate import collect, learning_curves, validation_attack_names
from sat_toolkit.study.grid import FinishedCells, cells, read_finished
from sat_toolkit.study.ledger import LEDGER_FILE, Ledger, hardware, wall_clock_seconds
from sat_toolkit.study.plot import changes, curves, scatter
from sat_toolkit.study.reuse import read_origin
from sat_toolkit.study.spec import REPORT_JSON, StudySpec

REPORT_MD = "report.md"
SCATTER_PNG = "scatter.png"
CURVES_PNG = "curves.png"
CHANGES_PNG = "changes.png"
STATISTICS = (
    "accuracies are fractions of the evaluated test images; mean = statistics.fmean over seeds, "
    "std = statistics.stdev (sample std, n - 1; null for one seed); a change vs the baseline is "
    "the difference of the two rows' means"
)


def write_report(
    spec: StudySpec, *, echo: Callable[[str], Any] = print, command: str | None = None
) -> dict[str, Path]:
    """Aggregate the finished runs and write the report's files; return their paths.

    ``command`` is the command that asked for the report, quoted in the header when it
    differs from the commands that ran the cells (``--report-only``).
    """
    finished_cells = read_finished(spec)
    rows = collect(spec, finished_cells)
    if not any(row["seeds_finished"] for row in rows):
        raise SatError(_nothing_to_report(spec, finished_cells))
    context = _context(spec, command, finished_cells)
    learning = learning_curves(spec, finished_cells)
    out = spec.output_dir
    out.mkdir(parents=True, exist_ok=True)
    payload = {**context, "rows": rows, "learning_curves": learning}
    _atomic_write(out / REPORT_JSON, json.dumps(_standard_json(payload), indent=2, allow_nan=False) + "\n")
    compare = spec.compare_axis
    drawn = changes(  # first: the markdown shows it where it was drawn
        rows,
        out / CHANGES_PNG,
        title=f"{spec.name}: change against the baseline",
        compare_axis=compare.name if compare else None,
        baseline=spec.baseline,
    )
    validation_attack = validation_attack_names(learning) if learning else None
    text = markdown(spec, rows, context, validation_attack=validation_attack, changes_figure=bool(drawn))
    _atomic_write(out / REPORT_MD, text)
    scatter(
        rows,
        out / SCATTER_PNG,
        title=f"{spec.name}: mean ± std over seeds ({context['cells']['finished']} runs)",
        compare_axis=compare.name if compare else None,
        baseline=spec.baseline,
    )
    paths = {"markdown": out / REPORT_MD, "json": out / REPORT_JSON, "scatter": out / SCATTER_PNG}
    if learning:
        title = f"{spec.name}: validation by epoch, mean over finished seeds"
        paths["curves"] = curves(learning, out / CURVES_PNG, title=title)
    else:
        (out / CURVES_PNG).unlink(missing_ok=True)  # from an earlier report whose runs are gone
    if drawn:
        paths["changes"] = drawn
    else:
        (out / CHANGES_PNG).unlink(missing_ok=True)
    figures = ", ".join(p.name for key, p in paths.items() if key != "markdown")
    for key, why in context["cells"]["damaged"].items():
        echo(f"warning: {key}: metrics.json is damaged ({why}); left out of the report; {REDO}")
    for key, changed in context["cells"]["stale"].items():
        echo(f"warning: {key}: its run differs from the study file now ({changed}); left out of the report")
    for key, why in context["reused_damaged"].items():
        echo(f"warning: {key}: its reused.json is damaged ({why}); the report cannot say where it trained")
    if context["ledger_damaged"]:
        echo(
            f"warning: {out / LEDGER_FILE} is damaged ({context['ledger_damaged']}); the report leaves out "
            "the wall time, hardware and commands it records (restore it to have them)"
        )
    echo(f"report: {paths['markdown']} ({figures})")
    return paths


def _nothing_to_report(spec: StudySpec, finished_cells: FinishedCells) -> str:
    """Why no cell can be reported: none ran, or the runs there are of other settings (most
    often a ``--set`` the study ran with and the report command left out)."""
    if not finished_cells.stale:
        return (
            f"study {spec.name}: no finished runs under {spec.output_dir}; run the study first "
            f"(sat-toolkit study {spec.path})"
        )
    changed = next(iter(finished_cells.stale.values()))
    commands = [i.get("command") for i in Ledger(spec.output_dir).invocations if i.get("command")]
    ran = f"; it ran as: {commands[-1]}" if commands else ""
    return (
        f"study {spec.name}: the {len(finished_cells.stale)} finished run(s) under {spec.output_dir} "
        f"have other settings than this study asks for ({changed}): the study file or its base recipe "
        f"changed since they ran (restore it), or they ran with a --set this command lacks{ran}"
    )


def _context(spec: StudySpec, command: str | None, finished_cells: FinishedCells) -> dict[str, Any]:
    """Everything the header states: where the numbers came from, on what, at what cost."""
    ledger = Ledger(spec.output_dir)
    all_cells = cells(spec)
    attempts = [a for c in all_cells for a in ledger.attempts(c.key)]
    ran = {a.get("invocation") for a in attempts}  # killed ones included: their attempts say "interrupted"
    invocations = [i for i in ledger.invocations if i.get("id") in ran]
    usable = finished_cells.metrics
    finished = [c for c in all_cells if c.key in usable]
    evaluations = [usable[c.key]["evaluation"] for c in finished]
    origins = {c.key: read_origin(c.run_dir) for c in finished}  # reused.json, read once per cell
    machines = []
    for entry in invocations:
        if entry.get("hardware") and entry["hardware"] not in machines:
            machines.append(entry["hardware"])
    compare = spec.compare_axis
    return {
        "study": spec.name,
        "description": spec.description,
        "study_file": _shown(spec.path),
        "base_recipe": _shown(spec.base),
        "output_dir": _shown(spec.output_dir),
        "overrides": list(spec.overrides),
        "axes": {axis.name: {label: list(o) for label, o in axis.values.items()} for axis in spec.axes},
        "seeds": list(spec.seeds),
        "baseline": spec.baseline,
        "compare_axis": compare.name if compare else None,
        "group_axes": [axis.name for axis in spec.group_axes] if compare else [],
        "cells": {
            "expected": len(all_cells),
            "finished": len(finished),
            "missing": [c.key for c in all_cells if c not in finished],
            # A finished cell whose metrics.json cannot be read: it counts as missing, and says why.
            "damaged": finished_cells.damaged,
            # A finished run of settings the study file no longer asks for: missing too.
            "stale": finished_cells.stale,
        },
        "test_images": sorted({e.get("samples") for e in evaluations} - {None}),
        "eps": sorted({_train_eps(c.run_dir) for c in finished} - {None}),
        "eval_attacks": _attacks(evaluations),
        "hardware": machines,
        "devices": sorted({str(usable[c.key].get("device") or "unknown") for c in finished}),
        "hardware_of_report": hardware(),
        "wall_seconds": {
            "elapsed": round(wall_clock_seconds(invocations), 2),
            "cells": round(sum(a.get("seconds", 0.0) for a in attempts), 2),
            "invocations": len(invocations),
        },
        "ledger_damaged": ledger.damaged,
        "reused": {c.key: shown for c in finished if (shown := _origin(c.run_dir, *origins[c.key]))},
        "reused_damaged": {c.key: why for c in finished if (why := origins[c.key][1])},
        "commands": list(dict.fromkeys(i["command"] for i in invocations)),
        "report_command": command,
        "invocations": invocations,
        "statistics": STATISTICS,
    }


def _train_eps(run_dir: Path) -> float | None:
    """attack.train.eps from the run's resolved recipe (eval attacks inherit it)."""
    try:
        recipe = loads_toml((run_dir / RECIPE_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, TOMLDecodeError):
        return None
    eps = recipe.get("attack", {}).get("train", {}).get("eps")
    return float(eps) if isinstance(eps, (int, float)) and not isinstance(eps, bool) else None


def _attacks(evaluations: list[dict[str, Any]]) -> dict[str, str]:
    """label -> 'name, k steps' for every evaluation attack, in order of first appearance.

    An attack only some runs made (e.g. ``pgd20/surrogate_grad``, run only for models whose
    surrogate gradient serves the attacker) says in how many.
    """
    out: dict[str, str] = {}
    count: dict[str, int] = {}
    for evaluation in evaluations:
        for label, outcome in evaluation.get("attacks", {}).items():
            count[label] = count.get(label, 0) + 1
            if label in out:
                continue
            settings = outcome.get("settings") or {}
            parts = [str(settings.get("name", label))]
            parts += [f"{key} {settings[key]}" for key in ("steps", "restarts", "loss") if key in settings]
            out[label] = ", ".join(parts)
    for label, seen in count.items():
        if seen < len(evaluations):
            out[label] += f"; in {seen} of {len(evaluations)} runs"
    return out


# -- markdown ------------------------------------------------------------------------------
def _pct(stat: dict[str, Any] | None) -> str:
    if stat is None:
        return "—"
    text = f"{100 * stat['mean']:.1f}"
    return text if stat["std"] is None else f"{text} ± {100 * stat['std']:.1f}"


def _change(change: dict[str, Any] | None, key: str, is_baseline: bool) -> str:
    """``+1.2 [+0.3, +2.1]*``: the seed-paired mean change in points, its interval, * beyond noise."""
    if is_baseline:
        return "(baseline)"
    if change is None or change.get(key) is None or change[key].get("paired") is None:
        return "—"
    paired = change[key]["paired"]
    text = f"{100 * paired['mean']:+.1f}"
    if paired["interval"] is None:
        return f"{text} (1 seed)"
    low, high = paired["interval"]
    if paired["beyond_noise"] is None:  # every seed the same difference: a zero-width interval says nothing
        return f"{text} (same on all {paired['n']} seeds)"
    return f"{text} [{100 * low:+.1f}, {100 * high:+.1f}]" + ("*" if paired["beyond_noise"] else "")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def markdown(
    spec: StudySpec,
    rows: list[dict[str, Any]],
    context: dict[str, Any],
    *,
    validation_attack: str | None = None,
    changes_figure: bool = False,
) -> str:
    """The report as markdown: header (provenance) then the table(s), where the runs
    validated (``validation_attack`` names the attack) the learning curves, and with
    ``changes_figure`` (drawn by :func:`~sat_toolkit.study.plot.changes`) the changes."""
    lines = [f"# Study `{spec.name}`", ""]
    if spec.description:
        lines += [spec.description, ""]
    lines += _header(context)
    compare = spec.compare_axis
    pgd = {row["pgd_label"] for row in rows if row["pgd_label"]}
    pgd_title = f"PGD ({', '.join(sorted(pgd))}) %" if pgd else None
    first = compare.name if compare else "setting"
    headers = [first, "clean acc %", "robust acc % (worst case)"]
    if pgd_title:
        headers.append(pgd_title)
    if compare:
        headers += [f"Δ robust vs {spec.baseline}", f"Δ clean vs {spec.baseline}"]
    headers.append("seeds")
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        name = ", ".join(f"{k} = {v}" for k, v in row["group"].items())
        groups.setdefault(name, []).append(row)
    note = (
        "Cells: mean ± sample std over seeds (% of the evaluated test images). Robust accuracy is the "
        "worst case over the evaluation attacks per image."
    )
    if compare:
        note += (
            f" Δ: the change in points against the {spec.baseline} row of the same group, paired by seed "
            "(a seed fixes the data order and, for the same architecture, the initial weights): the mean "
            "of the per-seed differences and its 95% Student-t interval; * marks a change whose interval "
            "excludes 0, i.e. beyond seed noise. report.json also holds the difference of means with "
            "its Welch standard error."
        )
    lines += [note + " Every number is traced to its runs and recipes in report.json.", ""]
    for name, members in groups.items():
        if name:
            lines += [f"### {name}", ""]
        lines.append("| " + " | ".join(headers) + " |")
        lines.append("|" + "|".join("---" for _ in headers) + "|")
        for row in members:
            is_base = compare is not None and row["axes"][compare.name] == spec.baseline
            cells_ = [row["axes"][compare.name] if compare else row["label"]]
            cells_ += [_pct(row["clean_accuracy"]), _pct(row["robust_accuracy"])]
            if pgd_title:
                cells_.append(_pct(row["pgd"]))
            if compare:
                change = row["change_vs_baseline"]
                cells_ += [
                    _change(change, "robust_accuracy", is_base),
                    _change(change, "clean_accuracy", is_base),
                ]
            cells_.append(f"{len(row['seeds_finished'])}/{len(row['seeds_expected'])}")
            lines.append("| " + " | ".join(cells_) + " |")
        lines.append("")
    if compare and len(groups) > 1:
        lines += _across_groups(spec, groups)
    lines += ["![clean vs robust accuracy](scatter.png)", ""]
    if changes_figure:
        lines += [
            "The changes of the table against the baseline, seed-paired: each row's mean change "
            "with its 95% interval; a filled dot is beyond seed noise (the interval excludes 0), a "
            "grey square a change measured on one seed (no interval).",
            "",
            f"![changes against the baseline]({CHANGES_PNG})",
            "",
        ]
    if validation_attack:
        lines += [
            f"Learning curves: the validation after each epoch (clean and {validation_attack} accuracy on "
            "`train.validate_samples` fixed test images), mean over each row's finished seeds, "
            "and at the last epoch the final evaluation (clean accuracy on the line; the worst "
            "case as a cross). Their numbers are report.json's `learning_curves`.",
            "",
            f"![learning curves]({CURVES_PNG})",
            "",
        ]
    return "\n".join(lines)


def _across_groups(spec: StudySpec, groups: dict[str, list[dict[str, Any]]]) -> list[str]:
    """One table of the changes with a column per group: does the gap change with, e.g., capacity?"""
    compare = spec.compare_axis
    assert compare is not None
    names = list(groups)
    headers = [compare.name] + [f"Δ robust, {g}" for g in names] + [f"Δ clean, {g}" for g in names]
    lines = [
        f"### Change vs {spec.baseline} across groups",
        "",
        "The Δ columns above side by side (points, seed-paired mean [95% interval], * beyond noise).",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    by_value = {g: {row["axes"][compare.name]: row for row in rows} for g, rows in groups.items()}
    for value in compare.values:
        if value == spec.baseline:
            continue
        cells_ = [value]
        for key in ("robust_accuracy", "clean_accuracy"):
            for g in names:
                row = by_value[g].get(value)
                cells_.append(_change(row["change_vs_baseline"], key, False) if row else "—")
        lines.append("| " + " | ".join(cells_) + " |")
    return [*lines, ""]


def _header(context: dict[str, Any]) -> list[str]:
    cells_ = context["cells"]
    images = ", ".join(str(n) for n in context["test_images"]) or "?"
    eps = ", ".join(f"{e:.4g}" for e in context["eps"]) or "n/a"
    attacks = "; ".join(f"{label} ({what})" for label, what in context["eval_attacks"].items()) or "none"
    lines = [
        f"- study file: `{context['study_file']}`; base recipe: `{context['base_recipe']}`",
        f"- runs: {cells_['finished']} of {cells_['expected']} finished, in `{context['output_dir']}`",
        f"- test images evaluated per run: {images} (a fixed, seeded subset of the test split)",
        f"- eps (attack.train.eps, inherited by the evaluation attacks): {eps}",
        f"- evaluation suite (robust = worst case per image): {attacks}",
    ]
    all_reused = bool(context["reused"]) and len(context["reused"]) == cells_["finished"]
    for machine in context["hardware"] or [context["hardware_of_report"]]:
        why = "every finished run was reused" if all_reused else "no run recorded its machine"
        note = "" if context["hardware"] else f" (where this report was built; {why})"
        features = f" ({machine['cpu_features']})" if machine.get("cpu_features") else ""
        lines.append(
            f"- hardware: {machine['cpu']}{features}, {machine['cores']} core(s) available to the study, "
            f"torch {machine['torch']}, Python {machine['python']}{note}"
        )
    if context["devices"]:
        lines.append(f"- runs trained and evaluated on: {', '.join(context['devices'])}")
    wall = context["wall_seconds"]
    jobs = sorted({f"{i['jobs']} job(s) x {i['threads_per_job']} thread(s)" for i in context["invocations"]})
    if wall["invocations"]:
        lines.append(
            f"- wall time: {_duration(wall['elapsed'])} over {wall['invocations']} invocation(s) "
            f"({', '.join(jobs)}); {_duration(wall['cells'])} summed over cells"
        )
    elif context.get("ledger_damaged"):
        lines.append(f"- wall time: not known (study.json is damaged: {context['ledger_damaged']})")
    elif all_reused:
        lines.append("- wall time: none spent here, every finished run was reused (see below)")
    else:
        lines.append(
            "- wall time: not recorded (no study.json: the runs were not made by `sat-toolkit study`)"
        )
    for command in context["commands"]:
        lines.append(f"- command: `{command}`")
    if context["reused"]:
        shown = "; ".join(f"{key} from `{origin}`" for key, origin in context["reused"].items())
        lines.append(
            f"- reused, not trained here (the same recipe, in every key that can change a result; its "
            f"time and machine are in the report where it was trained): {shown}"
        )
    if context["report_command"] and context["report_command"] not in context["commands"]:
        lines.append(f"- report rebuilt by: `{context['report_command']}`")
    if cells_["missing"]:
        shown = ", ".join(cells_["missing"][:8]) + (" ..." if len(cells_["missing"]) > 8 else "")
        lines.append(f"- **incomplete**: missing {shown}")
    for key, why in cells_.get("damaged", {}).items():
        lines.append(f"- **damaged**: {key}'s metrics.json ({why}), left out")
    for key, changed in cells_.get("stale", {}).items():
        lines.append(f"- **stale**: {key} ran with settings the study no longer has ({changed}), left out")
    return [*lines, ""]


def _origin(run_dir: Path, trained_in: str | None, damaged: str | None) -> str | None:
    """Where a reused run was trained (None: here), from :func:`read_origin`'s answer. A damaged
    ``reused.json`` says so: read as the copy's own directory, the report said the run was
    reused from itself."""
    if damaged is not None:
        return f"an unknown run ({_shown(run_dir)}/reused.json is damaged: {damaged})"
    return _shown(Path(trained_in)) if trained_in else None


def _shown(path: Path) -> str:
    """Relative to the working directory when inside it, so a committed report names no home directory."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _standard_json(value: Any) -> Any:
    """``value`` with every NaN or infinity as null: report.json is read by tools (JavaScript's
    ``JSON.parse`` among them) that refuse Python's ``NaN`` token."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _standard_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_standard_json(item) for item in value]
    return value


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
