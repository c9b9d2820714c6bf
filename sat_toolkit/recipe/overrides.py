"""``--set key.path=value`` overrides, applied to the raw recipe before validation.

The value is read as a TOML value when it parses as one (``3``, ``1e-3``, ``true``,
``"quoted"``, ``[0.3, 0.6]``, ``{name = "smoothrelu", alpha = 20}``) and as a bare
string otherwise, so ``--set activation=gelu`` and ``--set attack.train.eps=8/255`` need
no shell-quoted TOML. Because validation runs afterwards, an override of a key that does
not exist is reported like any unknown key, with the closest valid one.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from typing import Any

from sat_toolkit.recipe.coerce import toml_type
from sat_toolkit.recipe.errors import Problem, RecipeError
from sat_toolkit.recipe.toml_io import TOMLDecodeError, tomllib

_KEY_PART = re.compile(r"^[A-Za-z0-9_-]+$")


def parse_value(text: str) -> Any:
    """A TOML value if ``text`` is one, else ``text`` itself (stripped)."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except TOMLDecodeError:
        return text.strip()


def parse_override(item: str) -> tuple[tuple[str, ...], Any]:
    """``"attack.train.eps=8/255"`` -> ``(("attack", "train", "eps"), "8/255")``."""
    key, sep, value = item.partition("=")
    parts = tuple(part.strip() for part in key.strip().split("."))
    if not sep or not all(_KEY_PART.match(part) for part in parts):
        raise RecipeError([f"--set {item}: expected KEY.PATH=VALUE, e.g. --set optimizer.lr=0.05"])
    return parts, parse_value(value)


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[str]) -> tuple[dict[str, Any], list[str]]:
    """A deep copy of ``raw`` with every override applied, and the dotted keys they set.

    Missing tables on the way are created. A plain name on the way is promoted to a
    table (``activation = "smoothrelu"`` plus ``--set activation.alpha=5`` gives
    ``{name = "smoothrelu", alpha = 5}``); any other non-table is an error.
    """
    result: dict[str, Any] = copy.deepcopy(dict(raw))
    problems: list[Problem] = []
    applied: list[str] = []
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
            table[parts[-1]] = value
            applied.append(".".join(parts))
    if problems:
        raise RecipeError(problems)
    return result, applied


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
            problem = Problem(problem.path, problem.message + " (from --set)", problem.unknown_key)
        marked.append(problem)
    return marked
