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
from collections.abc import Callable
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

TOMLDecodeError = tomllib.TOMLDecodeError
#: Tables and arrays inside one another; what sat-toolkit writes and reads nests 6 deep at most.
MAX_DEPTH = 64
NESTED_TOO_DEEPLY = f"nested too deeply to parse (more than {MAX_DEPTH} levels)"


class _NestedTooDeeply(ValueError):
    """What both formats' errors for a document nested too deeply share.

    Not the decode errors' own ``__init__``: json's and Python 3.14's TOMLDecodeError want
    (msg, doc, pos), and 3.14 warns on a bare message, while older TOMLDecodeErrors take the
    message alone. The attributes are set as those errors set them, and ``__reduce__``
    rebuilds the error from its document, so it survives pickling like the parsers' own.
    """

    def __init__(self, document: str) -> None:
        ValueError.__init__(self, NESTED_TOO_DEEPLY)  # str(error) is the reason alone, no position
        self.msg, self.doc, self.pos, self.lineno, self.colno = NESTED_TOO_DEEPLY, document, 0, 1, 1

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return type(self), (self.doc,)


class JSONNestedTooDeeply(_NestedTooDeeply, json.JSONDecodeError):
    """A JSON document nested deeper than :data:`MAX_DEPTH`."""


class TOMLNestedTooDeeply(_NestedTooDeeply, TOMLDecodeError):
    """A TOML document nested deeper than :data:`MAX_DEPTH`."""


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


def _parse(parse: Callable[[str], Any], text: str, too_deep: type[_NestedTooDeeply]) -> Any:
    """``parse(text)``, with nesting too deep for it, or past :data:`MAX_DEPTH`, as ``too_deep``."""
    try:
        value = parse(text)
    except RecursionError:
        raise too_deep(text) from None
    if _too_deep(value):
        raise too_deep(text)
    return value


def loads_json(text: str) -> Any:
    """``json.loads``; a document nested too deeply raises :class:`json.JSONDecodeError` too."""
    return _parse(json.loads, text, JSONNestedTooDeeply)


def loads_toml(text: str) -> dict[str, Any]:
    """``tomllib.loads``; a document nested too deeply raises ``TOMLDecodeError`` too."""
    return _parse(tomllib.loads, text, TOMLNestedTooDeeply)
