"""sat_toolkit.parsing: every way deep nesting can fail becomes the format's decode error.

The readers of the project's files (tests/test_error_corpus.py and the checkpoint, study
and engine tests walk them) catch only the decode error; here the two ways nesting gets
past it are held on every Python version: the parser's own RecursionError (forced, since
the depth at which json raises it differs between versions) and a document that parses
but nests deeper than MAX_DEPTH.
"""

from __future__ import annotations

import json
import pickle

import pytest

from sat_toolkit import parsing
from sat_toolkit.parsing import MAX_DEPTH, TOMLDecodeError, loads_json, loads_toml


def _nested_list(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_the_deepest_allowed_document_parses_and_one_level_more_does_not() -> None:
    assert loads_json(_nested_list(MAX_DEPTH)) == json.loads(_nested_list(MAX_DEPTH))
    with pytest.raises(json.JSONDecodeError, match="nested too deeply to parse"):
        loads_json(_nested_list(MAX_DEPTH + 1))
    # TOML: the document is a table, so a value nests one level below it.
    assert loads_toml(f"a = {_nested_list(MAX_DEPTH - 1)}")["a"] == json.loads(_nested_list(MAX_DEPTH - 1))
    with pytest.raises(TOMLDecodeError, match="nested too deeply to parse"):
        loads_toml(f"a = {_nested_list(MAX_DEPTH)}")


def test_a_deep_toml_header_is_caught_though_tomllib_builds_it_without_recursing() -> None:
    def header(parts: int) -> str:  # the document's table, then one table per part
        return "[" + ".".join(["a"] * parts) + "]\n"

    with pytest.raises(TOMLDecodeError, match="nested too deeply"):
        loads_toml(header(MAX_DEPTH))
    assert loads_toml(header(MAX_DEPTH - 1))  # exactly the limit


def test_the_parsers_recursion_error_becomes_their_decode_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def overflow(text: str) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(parsing.json, "loads", overflow)
    monkeypatch.setattr(parsing.tomllib, "loads", overflow)
    with pytest.raises(json.JSONDecodeError) as json_error:
        loads_json("[[[")
    with pytest.raises(TOMLDecodeError) as toml_error:
        loads_toml("a = [[[")
    assert str(json_error.value) == str(toml_error.value) == parsing.NESTED_TOO_DEEPLY


@pytest.mark.parametrize("parse", [loads_json, lambda text: loads_toml(f"a = {text}")], ids=["json", "toml"])
def test_the_errors_survive_pickling_like_the_parsers_own(parse) -> None:
    """A study's worker processes send exceptions back through pickle."""
    with pytest.raises(ValueError) as info:
        parse(_nested_list(MAX_DEPTH + 1))
    copy = pickle.loads(pickle.dumps(info.value))
    assert type(copy) is type(info.value) and str(copy) == str(info.value) == parsing.NESTED_TOO_DEEPLY
    assert (copy.msg, copy.pos, copy.lineno, copy.colno) == (parsing.NESTED_TOO_DEEPLY, 0, 1, 1)
