"""``--set key.path=value`` overrides, applied to the raw recipe before validation.

The value is read as a TOML value when it parses as one (``3``, ``1e-3``, ``true``,
``"quoted"``, ``[0.3, 0.6]``, ``{name = "smoothrelu", alpha = 20}``) and as a bare
string otherwise, so ``--set activation=gelu`` and ``--set attack.train.eps=8/255`` need
no shell-quoted TOML. Because validation runs afterwards, an override of a key that does
not exist is reported like any unknown key, with the closest valid one.

Switching a plugin (``--set schedule.lr.name=one_cycle``) would otherwise keep the old
plugin's parameters from the file and then refuse them (``warmup_fraction: unknown
parameter``): the user asked for another plugin, not for its predecessor's settings.
Those the new plugin does not take are dropped, each with a one-line :class:`OverrideNote`.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from sat_toolkit.errors import SatError, first_line
from sat_toolkit.parsing import TOMLDecodeError, loads_toml
from sat_toolkit.plugins import PluginWarning
from sat_toolkit.recipe.coerce import toml_type
from sat_toolkit.recipe.errors import Problem, RecipeError
from sat_toolkit.recipe.schema import EVAL_SETTINGS, DataConfig
from sat_toolkit.recipe.toml_io import _value

_KEY_PART = re.compile(r"^[A-Za-z0-9_-]+$")
_AT_POSITION = re.compile(r" \(at [^)]*\)$")  # tomllib's position, counted in its own wrapper line

#: Recipe tables that name a plugin, by key path, and the plugin kind each names.
PLUGIN_TABLES: dict[tuple[str, ...], str] = {
    ("model",): "model",
    ("activation",): "activation",
    ("objective",): "objective",
    ("data",): "dataset",
    ("attack", "train"): "attack",
    ("schedule", "lr"): "schedule",
    ("schedule", "eps"): "schedule",
}
#: Keys of a plugin table that belong to its section, not to the plugin: never dropped.
_SECTION_KEYS: dict[str, frozenset[str]] = {
    "dataset": frozenset(f.name for f in dataclasses.fields(DataConfig) if f.name not in ("name", "params")),
}


class OverrideNote(PluginWarning):
    """``--set TABLE.name=other`` dropped a parameter from the file that the new plugin does not take.

    A :class:`~sat_toolkit.plugins.PluginWarning`, so the command line prints it as one line,
    labelled ``note:``: the user asked for the switch, nothing is wrong.
    """

    label = "note"


def parse_value(text: str) -> Any:
    """A TOML value if ``text`` is one, else ``text`` itself (stripped)."""
    try:
        return loads_toml(f"value = {text}")["value"]
    except TOMLDecodeError:
        return text.strip()


def malformed_compound(text: str) -> str | None:
    """Why ``text``, which opens a TOML table or array, is not one; None if it parses or opens neither.

    Any other text that is not TOML is a bare string (``activation=silu``), but one that
    opens with ``{`` or ``[`` was meant as a table or array: read as a name it would only
    be refused as an unknown plugin, far from the missing quote or brace.
    """
    if not text.strip().startswith(("{", "[")):
        return None
    try:
        loads_toml(f"value = {text}")
    except TOMLDecodeError as error:
        why = _AT_POSITION.sub("", first_line(error))
        return (
            f"{text.strip()} is not a TOML inline table or array ({why}); strings inside need quotes "
            """and the whole must close, e.g. 'activation={name = "smoothrelu", alpha = 20}'"""
        )
    return None


def parse_override(item: str) -> tuple[tuple[str, ...], Any]:
    """``"attack.train.eps=8/255"`` -> ``(("attack", "train", "eps"), "8/255")``."""
    key, sep, value = item.partition("=")
    parts = tuple(part.strip() for part in key.strip().split("."))
    if not sep or not all(_KEY_PART.match(part) for part in parts):
        raise RecipeError([f"--set {item}: expected KEY.PATH=VALUE, e.g. --set optimizer.lr=0.05"])
    if reason := malformed_compound(value):
        raise RecipeError([f"--set {key.strip()}: {reason}"])
    return parts, parse_value(value)


def apply_overrides(
    raw: Mapping[str, Any], overrides: Iterable[str], *, host: Any = None
) -> tuple[dict[str, Any], list[str]]:
    """A deep copy of ``raw`` with every override applied, and the dotted keys they set.

    Missing tables on the way are created. A plain name on the way is promoted to a
    table (``activation = "smoothrelu"`` plus ``--set activation.alpha=5`` gives
    ``{name = "smoothrelu", alpha = 5}``); any other non-table is an error. An override
    that replaces a whole table (``objective=trades``, ``model={name = "timm"}``) replaces
    what the file had there but keeps what earlier overrides set inside it, unless it sets
    those keys itself: a study's ``set = ["objective.beta=3"]`` is not silently lost to an
    axis value ``objective=trades`` (validation refuses it where the new plugin has no such
    parameter). An override
    that switches a plugin table to another plugin drops the table's parameters from the
    file that the new plugin does not take (:func:`drop_stale_parameters`; ``host`` is the
    plugin host to look it up in, default the process-wide one).
    """
    result: dict[str, Any] = copy.deepcopy(dict(raw))
    problems: list[Problem] = []
    applied: list[str] = []
    renames: list[tuple[str, tuple[str, ...]]] = []
    for item in overrides:
        parts, value = parse_override(item)
        table: dict[str, Any] = result
        for depth, part in enumerate(parts[:-1]):
            current = table.get(part)
            if current is None:
                current = table[part] = {}
            elif isinstance(current, str):
                current = table[part] = {"name": current}
            elif not isinstance(current, dict):
                where = ".".join(parts[: depth + 1])
                problems.append(Problem(where, f"is {toml_type(current)}, not a table; cannot --set {item}"))
                break
            table = current
        else:
            kept = _set_earlier_inside(table.get(parts[-1]), ".".join(parts), applied)
            table[parts[-1]] = _with_earlier(value, kept)
            applied.append(".".join(parts))
            if parts[-1] == "name":
                renames.append((item.strip(), parts[:-1]))
    if problems:
        raise RecipeError(problems)
    drop_stale_parameters(raw, result, renames, applied, host)
    return result, applied


def _set_earlier_inside(current: Any, dotted: str, applied: Iterable[str]) -> dict[tuple[str, ...], Any]:
    """The values earlier overrides set inside the table ``current`` (at ``dotted``), by path within it."""
    if not isinstance(current, dict):
        return {}
    kept = {}
    for key in applied:
        if key.startswith(dotted + "."):
            inner = tuple(key[len(dotted) + 1 :].split("."))
            value = _table_at(current, inner)
            if value is not None:
                kept[inner] = value
    return kept


def _with_earlier(value: Any, kept: Mapping[tuple[str, ...], Any]) -> Any:
    """``value`` (a plugin name is promoted to a table) with ``kept`` put back where it sets nothing."""
    if not kept:
        return value
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        return value  # a number or list where a table was: validation reports the type
    for inner, earlier in kept.items():
        table = value
        for part in inner[:-1]:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                break
        else:
            table.setdefault(inner[-1], earlier)
    return value


def plugin_table_kind(path: tuple[str, ...]) -> str | None:
    """The plugin kind the table at ``path`` names (``("schedule", "lr")`` -> ``"schedule"``), if any."""
    if path in PLUGIN_TABLES:
        return PLUGIN_TABLES[path]
    if len(path) == 3 and path[:2] == ("attack", "eval") and path[2] not in (*EVAL_SETTINGS, "attacks"):
        return "attack"
    return None


def drop_stale_parameters(
    raw: Mapping[str, Any],
    result: dict[str, Any],
    renames: Iterable[tuple[str, tuple[str, ...]]],
    applied: Iterable[str],
    host: Any = None,
) -> None:
    """Drop the file's parameters that a plugin table's new plugin does not take.

    ``renames`` are ``(override, table path)`` for every ``--set TABLE.name=...``; the last
    one per table decides. Kept: keys another override set, keys of the section itself
    (``data.batch_size``), and everything when the new plugin cannot be looked up (the
    validation then reports its name) or takes ``**kwargs``. Each dropped key is one
    :class:`OverrideNote`.
    """
    applied = list(applied)
    last = {path: item for item, path in renames}  # the last override of a table's name decides
    for path, item in last.items():
        kind = plugin_table_kind(path)
        if kind is None:
            continue
        before, after = _table_at(raw, path), _table_at(result, path)
        if not isinstance(before, Mapping) or not isinstance(after, dict):
            continue
        new = after.get("name")
        if not isinstance(new, str) or new == before.get("name"):
            continue
        accepted = _accepted_parameters(kind, new, host)
        if accepted is None:
            continue
        keep = accepted | _SECTION_KEYS.get(kind, frozenset()) | {"name"}
        for key in [k for k in after if k in before and k not in keep]:
            dotted = ".".join((*path, key))
            if _set_by_override(dotted, applied):
                continue
            value = after.pop(key)
            warnings.warn(
                f"--set {item}: dropped {dotted} = {_shown(value)} ({kind} '{new}' has no such parameter)",
                OverrideNote,
                stacklevel=3,
            )


def _table_at(data: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at ``path`` inside nested tables, or None where the path leaves them."""
    value: Any = data
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _accepted_parameters(kind: str, name: str, host: Any) -> frozenset[str] | None:
    """The keyword parameters of plugin ``name``; None when unknown or open (``**kwargs``)."""
    from sat_toolkit.params import declared
    from sat_toolkit.plugins import get_plugin_host

    try:
        schema = declared((host or get_plugin_host()).get(kind, name))
    except SatError:
        return None
    if schema is None or schema.takes_kwargs:
        return None
    return frozenset(schema.params)


def _set_by_override(dotted: str, applied: Iterable[str]) -> bool:
    """Whether an override set this key, something inside it, or a table holding it."""
    return any(a == dotted or a.startswith(dotted + ".") or dotted.startswith(a + ".") for a in applied)


def _shown(value: Any) -> str:
    """A value as the recipe writes it (``0.05``, ``"4/255"``, ``[30, 60]``)."""
    try:
        return _value(value)
    except TypeError:  # a TOML date or time
        return str(value)


def mark_override_problems(problems: Iterable[Problem], applied: Iterable[str]) -> list[Problem]:
    """Say ``(from --set)`` on problems an override caused, so the user looks at the command line."""
    applied = list(applied)
    marked = []
    for problem in problems:
        caused = any(
            key == problem.path
            or problem.path.startswith(key + ".")  # inside a table the override replaced
            or (problem.unknown_key and key.startswith(problem.path + "."))
            for key in applied
        )
        if caused:
            problem = dataclasses.replace(problem, message=problem.message + " (from --set)")
        marked.append(problem)
    return marked
