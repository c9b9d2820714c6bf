"""What ``sat-toolkit plugins --show NAME`` prints: a plugin's parameters, one row each.

Read from the schema the constructor declares (:func:`sat_toolkit.params.declared`: name,
type, default, ``Param`` bounds and doc), the same one recipe validation checks, so nothing
is written twice. A parameter without a ``Param(doc=...)`` shows the first sentence of its
entry in the ``Args:`` section of the class docstring (or of a base class's, for
parameters it inherits, such as an attack's ``bn_mode``).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from typing import Any

_ARG_LINE = re.compile(r"^(\s*)([A-Za-z_*][\w, *]*):\s*(.*)$")


@dataclasses.dataclass(frozen=True)
class ParameterRow:
    """One constructor parameter as a user sets it in a recipe table."""

    name: str
    type: str
    default: str
    bounds: str
    doc: str

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def parameter_rows(kind: str, cls: type) -> list[ParameterRow]:
    """Every keyword parameter of ``cls``'s constructor (``**kwargs`` last, as one row)."""
    from sat_toolkit.params import declared

    schema = declared(cls)
    if schema is None:
        return []
    docs = _documented(cls)
    rows = []
    for name, spec in schema.params.items():
        default = "(required)" if spec.required else default_text(spec.default)
        bounds = spec.param.bounds_text()
        names = spec.param.names()
        if names is not None:
            bounds = ", ".join(filter(None, [bounds, "one of " + ", ".join(names)]))
        doc = spec.param.doc or docs.get(name, "")
        rows.append(ParameterRow(name, type_name(spec.hint), default, bounds, doc))
    if schema.takes_kwargs:
        rows.append(ParameterRow(f"**{schema.kwargs}", "", "", "", ""))
    return rows


def default_text(value: Any) -> str:
    """A default as a recipe would write it: ``4/255`` for SAT's budget, else its ``repr``."""
    if isinstance(value, float) and 0 < value < 1:
        multiple = round(value * 255)
        if multiple and abs(value - multiple / 255) < 1e-12 and len(repr(value)) > 8:
            return f"{multiple}/255"
    return repr(value)


def type_name(hint: Any) -> str:
    """``int``, ``"sgd" | "adamw"``, ``float | None``, ``tuple[float, ...]``; empty when unannotated."""
    if hint is Any:
        return ""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return " | ".join(f'"{a}"' if isinstance(a, str) else repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if hint is type(None):
        return "None"
    if args:
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return getattr(hint, "__name__", str(hint))


def _documented(cls: type) -> dict[str, str]:
    """Parameter name -> first sentence of its ``Args:`` entry, the class's own before its bases'."""
    docs: dict[str, str] = {}
    for klass in cls.__mro__:
        for name, text in _args_section(inspect.getdoc(klass) or "").items():
            if not text.lower().startswith("see "):  # "see Attack": the base class says it
                docs.setdefault(name, text)
    return docs


def _args_section(doc: str) -> dict[str, str]:
    """Google-style ``Args:`` entries (``a, b: text`` documents both), joined over their lines."""
    lines = doc.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Args:") + 1
    except StopIteration:
        return {}
    entries: dict[str, str] = {}
    indent: int | None = None
    current: list[str] = []
    for line in lines[start:]:
        if line.strip() and indent is not None and len(line) - len(line.lstrip()) < indent:
            break  # the section ended (a dedented line)
        match = _ARG_LINE.match(line)
        if match and (indent is None or len(match.group(1)) == indent):
            indent = len(match.group(1))
            current = [name.strip().lstrip("*") for name in match.group(2).split(",")]
            for name in current:
                entries[name] = match.group(3).strip()
        elif line.strip() and current:
            for name in current:
                entries[name] = f"{entries[name]} {line.strip()}".strip()
        elif not line.strip() and indent is not None:
            current = []
    return {name: _first_sentence(text) for name, text in entries.items()}


def _first_sentence(text: str) -> str:
    """Up to the first full stop outside parentheses that ends a sentence ("e.g." does not)."""
    depth, end = 0, len(text)
    for index, char in enumerate(text):
        depth += char == "("
        depth -= char == ")"
        rest = text[index + 1 : index + 3]
        if depth == 0 and char in ".;" and (rest == "" or (rest[0] == " " and rest[1:].isupper())):
            end = index
            break
    return re.sub(r":\w+:`~?([^`]+)`", r"\1", text[:end]).replace("``", "").strip()
