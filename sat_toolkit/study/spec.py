"""The study file: a base recipe, a grid of ``--set`` overrides, seeds; validated up front.

A study is a TOML file with one ``[study]`` table::

    [study]
    name = "fashion_mnist_activations"      # default: the file's stem
    description = "Result 2 at small scale"  # optional, printed in the report
    base = "../fashion_mnist_silu.toml"     # required; relative to this file
    output_dir = "runs/studies/fashion_mnist_activations"  # default runs/studies/<name>
    seeds = [0, 1, 2]                       # default [0]
    baseline = "relu"                       # optional: a value label of one axis
    set = ["train.epochs=3"]                # overrides applied to every cell

    [[study.axis]]                          # one or more; the grid is their product
    name = "model"
    [study.axis.values]                     # value label -> list of --set overrides
    small = []
    wide = ["model.name=preact_resnet18", "model.width=16"]

The axis that holds ``baseline`` is the *compared* axis (its rows are compared with the
baseline row); every other axis (a capacity axis, say) splits the rows into groups, and
the comparison is made inside each group. Every problem is reported at once, one line
each with its key path, like recipe validation does; unknown keys name the closest valid
key. ``output_dir`` is relative to the current directory, like a recipe's
``run.output_dir``; ``base`` is relative to the study file, so a study and its base
recipe can move together.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sat_toolkit.recipe import RecipeError, parse_override
from sat_toolkit.recipe.coerce import toml_type
from sat_toolkit.recipe.errors import Problems, ProblemsError, join, suggest
from sat_toolkit.recipe.overrides import malformed_compound, plugin_table_kind
from sat_toolkit.recipe.toml_io import read_file

#: The report's JSON in the output directory (written by :mod:`~sat_toolkit.study.report`):
#: its ``study`` names the study that owns the directory.
REPORT_JSON = "report.json"
STUDY_KEYS = ("name", "description", "base", "output_dir", "seeds", "baseline", "set", "axis")
AXIS_KEYS = ("name", "values")
# Keys the runner sets itself for every cell; a study that set them would be ignored or fight it.
RUNNER_KEYS = ("run.seed", "run.output_dir")
# Labels name directories and join into cell labels with '+', so they stay filesystem-plain.
_LABEL = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
LABEL_SEPARATOR = "+"


class StudyError(ProblemsError):
    """The study file cannot be used; ``problems`` lists every reason, one line each."""

    subject = "study"


@dataclasses.dataclass(frozen=True)
class Axis:
    """One dimension of the grid: value label -> the overrides that value applies."""

    name: str
    values: dict[str, tuple[str, ...]]


@dataclasses.dataclass(frozen=True)
class StudySpec:
    """A validated study file. ``overrides`` already include any command-line ``--set``."""

    path: Path
    name: str
    description: str
    base: Path
    output_dir: Path
    seeds: tuple[int, ...]
    baseline: str | None
    overrides: tuple[str, ...]
    axes: tuple[Axis, ...]

    @property
    def compare_axis(self) -> Axis | None:
        """The axis whose values are compared with ``baseline`` (None without a baseline)."""
        return next((a for a in self.axes if self.baseline in a.values), None)

    @property
    def group_axes(self) -> tuple[Axis, ...]:
        """The axes that split rows into groups (a capacity axis); all axes without a baseline."""
        compare = self.compare_axis
        return tuple(a for a in self.axes if a is not compare)


def load_study(
    path: str | Path, extra_overrides: Sequence[str] = (), output_dir: str | Path | None = None
) -> StudySpec:
    """Read and validate a study file; raise one :class:`StudyError` listing every problem
    (a :class:`~sat_toolkit.errors.SatError` for an output directory it cannot use).

    ``extra_overrides`` (the command line's ``--set``) are applied to every cell after the
    study's own; ``output_dir`` replaces ``study.output_dir``.
    """
    path = Path(path)
    try:
        raw = read_file(path)
    except RecipeError as exc:  # missing file, not UTF-8, bad TOML: already one located line
        lines = [
            str(p).replace("recipe file", "study file", 1).replace("recipe path", "study path", 1)
            for p in exc.problems
        ]
        raise StudyError(lines) from None
    problems = Problems()
    spec = _Validator(path, problems).study(raw, extra_overrides, output_dir)
    if problems or spec is None:
        raise StudyError(problems, str(path))
    _refuse_unusable_output_dir(spec, "--output-dir" if output_dir is not None else "study.output_dir")
    return spec


def _refuse_unusable_output_dir(spec: StudySpec, option: str) -> None:
    """A file there failed once per cell, advising a --set the study refuses; another
    study's directory had its report overwritten by this one's."""
    from sat_toolkit.errors import SatError
    from sat_toolkit.parsing import loads_json

    out = spec.output_dir
    if out.exists() and not out.is_dir():
        raise SatError(
            f"{option} {out} is a file; the study keeps its cells and report in a directory: give another"
        )
    try:
        other = loads_json((out / REPORT_JSON).read_text(encoding="utf-8")).get("study")
    except (OSError, ValueError, AttributeError):
        return  # none yet, or unreadable: the report says so when it gets there
    if isinstance(other, str) and other != spec.name:
        raise SatError(
            f"{option} {out} holds the study '{other}' (its report.json); give the study '{spec.name}' a "
            "directory of its own"
        )


class _Validator:
    """Checks each key, collecting problems instead of stopping at the first."""

    def __init__(self, path: Path, problems: Problems) -> None:
        self.path = path
        self.problems = problems

    def study(
        self, raw: Mapping[str, Any], extra: Sequence[str], output_dir: str | Path | None
    ) -> StudySpec | None:
        for key in raw:
            if key != "study":
                self.problems.unknown("", key, ("study",), what="table")
        table = raw.get("study")
        if not isinstance(table, Mapping):
            self.problems.add("study", "required table is missing" if table is None else "must be a table")
            return None
        for key in table:
            if key not in STUDY_KEYS:
                self.problems.unknown("study", key, STUDY_KEYS)
        name = self.string(table, "name", default=self.path.stem)
        if name is not None and not _LABEL.match(name):
            self.problems.add("study.name", f"must be a plain name (letters, digits, _ . -), got {name!r}")
        description = self.string(table, "description", default="")
        base = self.base(table)
        out = self.string(table, "output_dir", default=f"runs/studies/{name}")
        seeds = self.seeds(table.get("seeds", [0]))
        overrides = self.overrides(table.get("set", []), "study.set")
        for item in extra:
            self.override(item, "--set", index=None)
        if not self.problems:
            self.set_once(list(extra), "--set")
        axes = self.axes(table.get("axis"))
        if axes is not None and not self.problems:
            self.not_overridden(extra, axes)
        baseline = self.baseline(table.get("baseline"), axes)
        if self.problems or None in (name, description, base, out, seeds, overrides, axes):
            return None
        return StudySpec(
            path=self.path,
            name=name,
            description=description,
            base=base,
            output_dir=Path(output_dir) if output_dir is not None else Path(out),
            seeds=seeds,
            baseline=baseline,
            overrides=(*overrides, *extra),
            axes=axes,
        )

    # -- scalars ---------------------------------------------------------------------------
    def string(self, table: Mapping[str, Any], key: str, *, default: str | None = None) -> str | None:
        value = table.get(key, default)
        if value is None:
            self.problems.add(join("study", key), "required")
            return None
        if not isinstance(value, str) or (key != "description" and not value):
            self.problems.add(join("study", key), f"must be a non-empty string, got {toml_type(value)}")
            return None
        return value

    def base(self, table: Mapping[str, Any]) -> Path | None:
        text = self.string(table, "base")
        if text is None:
            return None
        base = (self.path.parent / text).resolve()
        if not base.is_file():
            self.problems.add(
                "study.base", f"base recipe not found: {base} ({text!r} relative to the study file)"
            )
            return None
        return base

    def seeds(self, value: Any) -> tuple[int, ...] | None:
        ok = isinstance(value, list) and value and all(type(s) is int and s >= 0 for s in value)
        if not ok:
            self.problems.add(
                "study.seeds", f"must be a non-empty array of integers >= 0, got {_shown_seeds(value)}"
            )
            return None
        if len(set(value)) != len(value):
            self.problems.add("study.seeds", f"has repeated seeds: {value}")
            return None
        return tuple(value)

    # -- overrides -------------------------------------------------------------------------
    def overrides(self, value: Any, path: str) -> tuple[str, ...] | None:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            self.problems.add(path, f"must be an array of 'key.path=value' strings, got {toml_type(value)}")
            return None
        before = len(self.problems)
        for index, item in enumerate(value):
            self.override(item, path, index=index)
        if len(self.problems) == before:
            self.set_once(value, path)
        return tuple(value) if len(self.problems) == before else None

    def set_once(self, items: Sequence[str], path: str) -> None:
        """One list setting a key twice keeps the last silently: a "gelu" value that also
        said activation=silu trained SiLU under the label gelu."""
        earlier: list[tuple[str, list[tuple[str, ...]]]] = []  # (override, the keys it sets)
        for item in items:
            keys = _leaves_of([item])
            for key in keys:
                before = next((other for other, theirs in earlier if _shared_key([key], theirs)), None)
                if before is not None:
                    self.problems.add(
                        path, f"sets {'.'.join(key)} twice ({before!r}, then {item!r}); keep one"
                    )
                    return
            earlier.append((item, keys))

    def override(self, item: Any, path: str, *, index: int | None) -> None:
        where = path if index is None else f"{path}[{index}]"
        if not isinstance(item, str):
            self.problems.add(where, f"must be a 'key.path=value' string, got {toml_type(item)}")
            return
        if reason := malformed_compound(item.partition("=")[2]):
            self.problems.add(where, reason)
            return
        try:
            keys, _ = parse_override(item)
        except RecipeError:
            self.problems.add(where, f"expected 'key.path=value', e.g. 'optimizer.lr=0.05', got {item!r}")
            return
        if ".".join(keys) in RUNNER_KEYS:
            self.problems.add(
                where,
                f"{'.'.join(keys)} is set by the study for each cell; use study.seeds / study.output_dir",
            )

    # -- axes ------------------------------------------------------------------------------
    def axes(self, value: Any) -> tuple[Axis, ...] | None:
        if value is None:
            self.problems.add("study.axis", "required: at least one [[study.axis]] with a name and values")
            return None
        if not isinstance(value, list) or not value:
            self.problems.add("study.axis", "must be one or more [[study.axis]] tables")
            return None
        axes: list[Axis] = []
        labels: dict[str, str] = {}
        for index, entry in enumerate(value):
            axis = self.axis(entry, index)
            if axis is None:
                continue
            if any(a.name == axis.name for a in axes):
                self.problems.add(f"study.axis.{axis.name}", "two axes have this name")
                continue
            for label in axis.values:
                if label in labels:
                    self.problems.add(
                        f"study.axis.{axis.name}.values.{label}",
                        f"label also used by axis '{labels[label]}'; value labels must differ across axes",
                    )
                labels[label] = axis.name
            self.apart_from(axis, axes)
            axes.append(axis)
        return tuple(axes) if len(axes) == len(value) else None

    def apart_from(self, axis: Axis, earlier: Sequence[Axis]) -> None:
        """Two axes setting one key: in the cells that combine them the later axis wins, and
        two labels name the same run (a "gelu_wide" capacity value trained GELU under every
        activation label)."""
        for other in earlier:
            theirs = {label: _leaves_of(overrides) for label, overrides in other.values.items()}
            for label, overrides in axis.values.items():
                mine = _leaves_of(overrides)
                for other_label, their_keys in theirs.items():
                    if (shared := _shared_key(mine, their_keys)) is not None:
                        self.problems.add(
                            f"study.axis.{axis.name}.values.{label}",
                            f"sets {'.'.join(shared)}, which axis '{other.name}' value '{other_label}' "
                            "sets too: in the cells that combine them one hides the other; set each key "
                            "in one axis",
                        )
                        return

    def axis(self, entry: Any, index: int) -> Axis | None:
        where = f"study.axis[{index}]"
        if not isinstance(entry, Mapping):
            self.problems.add(where, f"must be a table ([[study.axis]]), got {toml_type(entry)}")
            return None
        name = entry.get("name")
        if isinstance(name, str) and _LABEL.match(name):
            where = f"study.axis.{name}"
        else:
            self.problems.add(
                join(where, "name"), f"required: a plain name (letters, digits, _ . -), got {_show(name)}"
            )
            name = None
        for key in entry:
            if key not in AXIS_KEYS:
                self.problems.unknown(where, key, AXIS_KEYS)
        values = entry.get("values")
        if not isinstance(values, Mapping) or not values:
            self.problems.add(join(where, "values"), 'required: a table of label = ["key=value", ...]')
            return None
        before = len(self.problems)
        parsed: dict[str, tuple[str, ...]] = {}
        for label, overrides in values.items():
            path = join(join(where, "values"), label)
            if not _LABEL.match(label):
                self.problems.add(
                    path, "labels are plain names (letters, digits, _ . -); they name directories"
                )
                continue
            checked = self.overrides(overrides, path)
            if checked is not None:
                parsed[label] = checked
        if name is None or len(self.problems) != before:
            return None
        same: dict[frozenset[tuple[tuple[str, ...], str]], str] = {}
        for label, overrides in parsed.items():
            effect = _effect(overrides)
            if effect in same:
                self.problems.add(
                    join(join(where, "values"), label),
                    f"applies the same overrides as '{same[effect]}': their cells would be the same runs "
                    "under two labels",
                )
            same.setdefault(effect, label)
        return Axis(name=name, values=parsed)

    def not_overridden(self, extra: Sequence[str], axes: tuple[Axis, ...]) -> None:
        """A command-line --set comes before the axes: one on a key an axis value sets changed
        nothing in that value's cells, without a word."""
        for item in extra:
            keys = _leaves_of([item])
            for axis in axes:
                for label, overrides in axis.values.items():
                    hit = next((o for o in overrides if _shared_key(keys, _leaves_of([o])) is not None), None)
                    if hit is not None:
                        self.problems.add(
                            "--set",
                            f"{item!r} does not reach the cells of axis '{axis.name}' value '{label}', "
                            f"whose {hit!r} comes after it; change the axis in the study file instead",
                        )
                        return

    def baseline(self, value: Any, axes: tuple[Axis, ...] | None) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            self.problems.add("study.baseline", f"must be a value label of an axis, got {toml_type(value)}")
            return None
        if axes is None:
            return value
        labels = [label for axis in axes for label in axis.values]
        if value not in labels:
            self.problems.add(
                "study.baseline", f"'{value}' is not a value label of any axis{suggest(value, labels)}"
            )
            return None
        return value


def _leaf_values(keys: tuple[str, ...], value: Any) -> list[tuple[tuple[str, ...], Any]]:
    """The key paths an override sets, with their values: a table's each key, and a plugin
    table's name for the shorthand ``activation=silu`` (its other parameters survive a
    switch of plugin)."""
    if isinstance(value, Mapping):
        return [pair for key, inner in value.items() for pair in _leaf_values((*keys, key), inner)]
    if isinstance(value, str) and plugin_table_kind(keys) is not None:
        return [((*keys, "name"), value)]
    return [(keys, value)]


def _effect(overrides: Sequence[str]) -> frozenset[tuple[tuple[str, ...], str]]:
    """What a list of overrides sets, however spelt (``activation=silu`` is
    ``activation.name=silu``; a table is its keys, in any order)."""
    return frozenset(
        (leaf, json.dumps(value, sort_keys=True, default=str))
        for item in overrides
        for leaf, value in _leaf_values(*parse_override(item))
    )


def _leaves_of(overrides: Sequence[str]) -> list[tuple[str, ...]]:
    return [leaf for item in overrides for leaf, _ in _leaf_values(*parse_override(item))]


def _shared_key(mine: list[tuple[str, ...]], theirs: list[tuple[str, ...]]) -> tuple[str, ...] | None:
    """The first of ``mine`` that touches one of ``theirs``, if any."""
    return next((key for key in mine if any(_overlap(key, other) for other in theirs)), None)


def _overlap(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Whether setting one key path touches the other (equal, or one inside the other's table)."""
    shorter = min(len(a), len(b))
    return a[:shorter] == b[:shorter]


def _show(value: Any) -> str:
    return "nothing" if value is None else toml_type(value)


def _shown_seeds(value: Any) -> str:
    """``[]`` or ``["a"]`` as written (short), where "an array" would not say what is wrong."""
    if isinstance(value, list):
        text = json.dumps(value)
        return text if len(text) <= 40 else text[:37] + "..."
    return _show(value)
