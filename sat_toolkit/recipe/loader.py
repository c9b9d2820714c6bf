"""The entry points: load a recipe file or dict, apply overrides, validate, resolve."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sat_toolkit.recipe.errors import Problem, RecipeError
from sat_toolkit.recipe.overrides import apply_overrides, mark_override_problems
from sat_toolkit.recipe.resolve import resolve
from sat_toolkit.recipe.schema import Recipe
from sat_toolkit.recipe.toml_io import loads, read_file


def load_recipe(
    source: str | Path | Mapping[str, Any], overrides: Iterable[str] = (), *, host: Any = None
) -> Recipe:
    """A validated, resolved recipe from a TOML file path or an already parsed dict.

    ``overrides`` are ``"key.path=value"`` strings (the CLI's ``--set``), applied before
    validation; one that switches a table to another plugin (``schedule.lr.name=...``)
    drops the file's parameters the new plugin does not take, warning an
    :class:`~sat_toolkit.recipe.overrides.OverrideNote` for each. Every problem is
    reported at once in a :class:`RecipeError` (a ``SatError``: exit code 2 on the
    command line). ``host`` is the plugin host to resolve names against (default: the
    process-wide one).
    """
    if isinstance(source, Mapping):
        return _resolve(source, overrides, host, None)
    return _resolve(read_file(source), overrides, host, str(source))


def recipe_from_toml(text: str, overrides: Iterable[str] = (), *, host: Any = None) -> Recipe:
    """Like :func:`load_recipe`, from TOML text (e.g. ``load(recipe.to_toml())``)."""
    return _resolve(loads(text), overrides, host, None)


def _resolve(raw: Mapping[str, Any], overrides: Iterable[str], host: Any, source: str | None) -> Recipe:
    # Switching a plugin by --set drops the old one's parameters, each with an OverrideNote.
    raw, applied = apply_overrides(raw, overrides, host=host)
    try:
        return resolve(raw, host=host, source=source)
    except RecipeError as exc:
        problems = mark_override_problems(exc.problems, applied) if applied else list(exc.problems)
        lacking = _plugins_the_run_had(source)
        if lacking is None and not applied:
            raise
        if lacking is not None:
            problems.append(Problem("", lacking))
        raise RecipeError(problems, source) from None


def _plugins_the_run_had(source: str | None) -> str | None:
    """For a finished run's own recipe.toml: the package of a plugin it used that this
    environment lacks (its metrics.json records them), so "unknown objective 'alp'" comes
    with what to install. None for any other file."""
    from sat_toolkit.recipe.rundir import RECIPE_FILE

    if source is None or Path(source).name != RECIPE_FILE:
        return None
    from sat_toolkit.plugins.provenance import missing_plugin_message
    from sat_toolkit.recipe.finished import read_finished_metrics

    metrics, _ = read_finished_metrics(Path(source).parent)
    hint = missing_plugin_message(metrics.get("plugins")) if metrics else None
    return f"the run in {Path(source).parent} {hint}" if hint else None
