"""JSON and TOML parsing whose every failure is the format's own decode error.

The standard parsers recurse once per level of nesting, so a file of a few thousand opening
brackets (damaged, or crafted) makes ``json.loads`` and ``tomllib.loads`` raise
``RecursionError``. Each reader of a run directory, checkpoint, study ledger or recipe
catches the format's decode error and turns it into a one-line message; a
``RecursionError`` would slip past all of them as a traceback. Every file sat-toolkit reads
is therefore parsed here, where that case becomes the decode error those readers already
handle.
"""

from __future__ import annotations

import json
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

TOMLDecodeError = tomllib.TOMLDecodeError
NESTED_TOO_DEEPLY = "nested too deeply to parse"


class JSONNestedTooDeeply(json.JSONDecodeError):
    """A JSON document whose nesting exceeds the interpreter's recursion limit."""

    def __init__(self, document: str) -> None:
        ValueError.__init__(self, NESTED_TOO_DEEPLY)  # str(error) is the reason alone, no position
        self.msg, self.doc, self.pos, self.lineno, self.colno = NESTED_TOO_DEEPLY, document, 0, 1, 1


class TOMLNestedTooDeeply(TOMLDecodeError):
    """A TOML document whose nesting exceeds the interpreter's recursion limit."""

    def __init__(self) -> None:
        # Python 3.14's TOMLDecodeError wants (msg, doc, pos) and warns on a bare message.
        ValueError.__init__(self, NESTED_TOO_DEEPLY)


def loads_json(text: str) -> Any:
    """``json.loads``; a document nested too deeply raises :class:`json.JSONDecodeError` too."""
    try:
        return json.loads(text)
    except RecursionError:
        raise JSONNestedTooDeeply(text) from None


def loads_toml(text: str) -> dict[str, Any]:
    """``tomllib.loads``; a document nested too deeply raises ``TOMLDecodeError`` too."""
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise TOMLNestedTooDeeply() from None
