"""Reading recipe files with precise errors, and a small TOML writer for resolved recipes.

The writer covers exactly what a resolved recipe holds (tables, strings, booleans,
integers, floats, arrays, inline tables), which keeps the toolkit free of a TOML-writing
dependency; ``tomllib`` (or ``tomli`` on Python 3.10), through :mod:`sat_toolkit.parsing`,
reads it back, and the round trip is tested.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sat_toolkit.parsing import TOMLDecodeError, loads_toml
from sat_toolkit.recipe.errors import RecipeError

_LOCATION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def syntax_error(exc: TOMLDecodeError, source: str) -> RecipeError:
    """``file:line:column: invalid TOML: what`` from a tomllib error."""
    message = str(exc)
    match = _LOCATION.search(message)
    if match:
        what = message[: match.start()]
        return RecipeError([f"{source}:{match.group(1)}:{match.group(2)}: invalid TOML: {what}"])
    return RecipeError([f"{source}: invalid TOML: {message}"])


def loads(text: str, source: str = "<string>") -> dict[str, Any]:
    """Parse TOML text; a syntax error becomes a :class:`RecipeError` with its location."""
    try:
        return loads_toml(text)
    except TOMLDecodeError as exc:
        raise syntax_error(exc, source) from None


def read_file(path: str | Path) -> dict[str, Any]:
    """Parse a recipe file; a missing, unreadable or malformed file is a one-line error."""
    path = Path(path)
    if not path.exists():
        raise RecipeError([f"recipe file not found: {path}"])
    if path.is_dir():
        raise RecipeError([f"recipe path is a directory, not a TOML file: {path}"])
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError([f"{path}: not UTF-8 text (byte {exc.start}); TOML files must be UTF-8"]) from None
    except OSError as exc:
        raise RecipeError([f"cannot read recipe {path}: {exc.strerror or exc}"]) from None
    return loads(text, str(path))


# -- writing -------------------------------------------------------------------------------
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _string(text: str) -> str:
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _string(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(str(k))} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as TOML")


def dumps(data: Mapping[str, Any], header: str = "") -> str:
    """TOML text for nested mappings: scalars first, then one ``[section]`` per table.

    A table that holds only sub-tables gets no header of its own (``[attack]`` is implied
    by ``[attack.train]``). ``header`` lines are written as comments at the top.
    """
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    _table(lines, (), data)
    return "\n".join(lines).strip("\n") + "\n"


def _table(lines: list[str], path: tuple[str, ...], table: Mapping[str, Any]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, Mapping)}
    tables = {k: v for k, v in table.items() if isinstance(v, Mapping)}
    if path and (scalars or not tables):
        if lines:
            lines.append("")
        lines.append("[" + ".".join(_key(p) for p in path) + "]")
    for key, value in scalars.items():
        lines.append(f"{_key(str(key))} = {_value(value)}")
    for key, value in tables.items():
        _table(lines, (*path, str(key)), value)
