"""Check a TOML value against a Python type hint, converting where that is lossless.

Used for the recipe's own fields and for plugin parameters (from the constructor's
annotations), so both follow one set of rules: an integer is fine where a float is
expected (and becomes a float); a boolean is never a number; a float-typed value may be
written as a fraction string such as ``"4/255"``; ``None`` in a hint is ignored (TOML has
no null, leaving the key out is how a recipe says "default").
"""

from __future__ import annotations

import collections.abc
import datetime
import math
import types
import typing
from typing import Any

from sat_toolkit.recipe.numbers import is_fraction, parse_number


class Invalid(ValueError):
    """The value does not fit the hint; the message says what was expected."""


def toml_type(value: object) -> str:
    """How the user wrote it, in TOML words: ``string 'x'``, ``boolean true``."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value!r}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, collections.abc.Mapping):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, (datetime.date, datetime.time)):
        return f"date/time {value}"
    return f"{type(value).__name__} {value!r}"


def describe(hint: Any) -> str:
    """``a number``, ``an integer``, ``one of 'no', 'bf16'``: what a hint asks for."""
    origin = typing.get_origin(hint)
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if _is_union(hint):
        return " or ".join(describe(a) for a in typing.get_args(hint) if a is not type(None))
    if origin in _SEQUENCES or hint in _SEQUENCES:
        return "an array"
    if origin in _MAPPINGS or hint in _MAPPINGS:
        return "a table"
    return getattr(hint, "__name__", str(hint))


_SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.MutableSequence)
_MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def is_known(hint: Any) -> bool:
    """True when :func:`coerce` can check values against the hint (not ``Any``, a class...)."""
    if hint in (bool, int, float, str) or hint in _SEQUENCES or hint in _MAPPINGS:
        return True
    origin = typing.get_origin(hint)
    if origin is typing.Literal or origin in _SEQUENCES or origin in _MAPPINGS:
        return True
    if _is_union(hint):
        return all(is_known(a) for a in typing.get_args(hint) if a is not type(None))
    return False


def accepts_float(hint: Any) -> bool:
    """Whether a fraction string may be turned into a float for this hint."""
    if hint is float:
        return True
    if _is_union(hint):
        return any(accepts_float(a) for a in typing.get_args(hint))
    return not is_known(hint)


def coerce(value: Any, hint: Any) -> Any:
    """The value converted to fit ``hint``; raises :class:`Invalid` when it cannot.

    Hints this module does not understand (``Any``, arbitrary classes) let the value
    through, except that a fraction string becomes a float: ``"4/255"`` is never meant
    literally.
    """
    if not is_known(hint):
        return _float(value) if is_fraction(value) else value
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
            # 1e3 and 1000.0 are floats in TOML; name the integer spelling rather than guess.
            raise Invalid(f"expected an integer, got float {value!r}; write {int(value)}")
    elif hint is float:
        return _float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif typing.get_origin(hint) is typing.Literal:
        choices = typing.get_args(hint)
        if any(value == c and type(value) is type(c) for c in choices):
            return value
        raise Invalid(f"must be {describe(hint)}, got {toml_type(value)}")
    elif _is_union(hint):
        return _union(value, hint)
    elif hint in _SEQUENCES or typing.get_origin(hint) in _SEQUENCES:
        return _sequence(value, hint)
    elif (hint in _MAPPINGS or typing.get_origin(hint) in _MAPPINGS) and isinstance(
        value, collections.abc.Mapping
    ):
        return dict(value)
    raise Invalid(f"expected {describe(hint)}, got {toml_type(value)}")


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise Invalid(f"expected a number, got {toml_type(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise Invalid(f"must be a finite number, got {value}")
    try:
        return parse_number(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def _union(value: Any, hint: Any) -> Any:
    members = [a for a in typing.get_args(hint) if a is not type(None)]
    # Strings last: "4/255" should become a float when a float is allowed.
    ordered = [m for m in members if m is not str] + [m for m in members if m is str]
    for member in ordered:
        try:
            return coerce(value, member)
        except Invalid as exc:
            # "4/0" is a fraction gone wrong, never a string: say why the number failed.
            if member is float and is_fraction(value):
                raise exc from None
            continue
    raise _mismatch(hint, value)


def _mismatch(hint: Any, value: Any) -> Invalid:
    """What was expected; a lone number where an array is asked for (``mean = 0.5``) is
    shown as the one-element array that was probably meant."""
    text = f"expected {describe(hint)}, got {toml_type(value)}"
    members = typing.get_args(hint) if _is_union(hint) else (hint,)
    wants_array = any(m in _SEQUENCES or typing.get_origin(m) in _SEQUENCES for m in members)
    if wants_array and isinstance(value, (int, float)) and not isinstance(value, bool):
        text += f"; write it as [{value!r}]"
    return Invalid(text)


def _sequence(value: Any, hint: Any) -> Any:
    if not isinstance(value, (list, tuple)):
        raise _mismatch(hint, value)
    args = typing.get_args(hint)
    origin = typing.get_origin(hint) or hint
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            raise Invalid(f"expected an array of {len(args)} values, got {len(value)}")
        return tuple(_item(v, a, i) for i, (v, a) in enumerate(zip(value, args, strict=True)))
    item_hint = args[0] if args else Any
    items = [_item(v, item_hint, i) for i, v in enumerate(value)]
    return tuple(items) if origin is tuple else items


def _item(value: Any, hint: Any, index: int) -> Any:
    try:
        return coerce(value, hint)
    except Invalid as exc:
        raise Invalid(f"item {index}: {exc}") from None
