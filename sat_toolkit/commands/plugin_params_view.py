"""What ``sat-toolkit plugins --show NAME`` prints: a plugin's parameters, one row each.

Read from the places a plugin already declares them, so nothing is written twice: the
constructor's signature (name, annotation, default), the range checks recipe validation
applies to well-known names (:data:`sat_toolkit.recipe.plugin_params.PARAM_BOUNDS`), and
the first sentence of each parameter's entry in the ``Args:`` section of the class
docstring (or of a base class's, for parameters it inherits, such as an attack's
``bn_mode``).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
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
    from sat_toolkit.recipe.plugin_params import PARAM_BOUNDS

    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return []
    docs = _documented(cls)
    bounds = PARAM_BOUNDS.get(kind, {})
    rows = []
    for name, param in signature.parameters.items():
        if param.kind is param.VAR_POSITIONAL:
            continue
        shown = f"**{name}" if param.kind is param.VAR_KEYWORD else name
        annotation = "" if param.annotation is param.empty else _type_text(param.annotation)
        if param.kind is param.VAR_KEYWORD:
            default = ""
        else:
            default = "(required)" if param.default is param.empty else repr(param.default)
        rows.append(
            ParameterRow(shown, annotation, default, _bounds_text(bounds.get(name, {})), docs.get(name, ""))
        )
    return rows


def _type_text(annotation: Any) -> str:
    return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", repr(annotation))


def _bounds_text(bounds: dict[str, float]) -> str:
    signs = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return ", ".join(f"{signs[k]} {int(v) if float(v).is_integer() else f'{v:g}'}" for k, v in bounds.items())


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
