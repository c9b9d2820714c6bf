"""JSON and TOML parsing whose every failure is the format's own decode error.

Every reader of a run directory, checkpoint, study ledger or recipe catches the format's
decode error and turns it into a one-line message. Deep nesting, damaged or crafted, gets
past that in two ways: the parsers recurse once per level, so a few thousand opening
brackets raise ``RecursionError`` (json below Python 3.13, tomllib always), and what does
parse (TOML's ``[a.a.a...]`` headers build any depth without recursing; json from 3.13
takes about 8000 levels) overflows the first caller that walks it recursively (comparing
recipes, copying them). Every file sat-toolkit reads is therefore parsed here: a document
nested deeper than :data:`MAX_DEPTH` is the decode error those readers already handle.
"""

from __future__ import annotations

import json
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

TOMLDecodeError = tomllib.TOMLDecodeError
#: Tables and arrays inside one another; what sat-toolkit writes and reads nests 6 deep at most.
MAX_DEPTH = 64
NESTED_TOO_DEEPLY = f"nested too deeply to parse (more than {MAX_DEPTH} levels)"


class JSONNestedTooDeeply(json.JSONDecodeError):
    """A JSON document nested deeper than :data:`MAX_DEPTH`."""

    def __init__(self, document: str) -> None:
        ValueError.__init__(self, NESTED_TOO_DEEPLY)  # str(error) is the reason alone, no position
        self.msg, self.doc, self.pos, self.lineno, self.colno = NESTED_TOO_DEEPLY, document, 0, 1, 1

    def __reduce__(self) -> tuple[type, tuple[str]]:  # the base's would pass (msg, doc, pos)
        return type(self), (self.doc,)


class TOMLNestedTooDeeply(TOMLDecodeError):
    """A TOML document nested deeper than :data:`MAX_DEPTH`."""

    def __init__(self, document: str) -> None:
        # Not the base's __init__: Python 3.14's wants (msg, doc, pos) and warns on a bare
        # message, older ones take the message alone. Its attributes, as 3.14 sets them:
        ValueError.__init__(self, NESTED_TOO_DEEPLY)
        self.msg, self.doc, self.pos, self.lineno, self.colno = NESTED_TOO_DEEPLY, document, 0, 1, 1

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return type(self), (self.doc,)


def _too_deep(value: Any) -> bool:
    """Whether ``value`` nests lists and dicts deeper than :data:`MAX_DEPTH` (no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                if depth + 1 > MAX_DEPTH:
                    return True
                stack.append((child, depth + 1))
    return False


def loads_json(text: str) -> Any:
    """``json.loads``; a document nested too deeply raises :class:`json.JSONDecodeError` too."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise JSONNestedTooDeeply(text) from None
    if _too_deep(value):
        raise JSONNestedTooDeeply(text)
    return value


def loads_toml(text: str) -> dict[str, Any]:
    """``tomllib.loads``; a document nested too deeply raises ``TOMLDecodeError`` too."""
    try:
        value = tomllib.loads(text)
    except RecursionError:
        raise TOMLNestedTooDeeply(text) from None
    if _too_deep(value):
        raise TOMLNestedTooDeeply(text)
    return value
