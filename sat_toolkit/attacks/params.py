"""Parsing of attack parameters as they come from TOML recipes.

Recipes write budgets the way papers do (``eps = "4/255"``), so every pixel-space
quantity goes through :func:`parse_fraction`. A mistake becomes a one-line
:class:`~sat_toolkit.errors.SatError` naming the parameter, never a traceback deep
inside an attack loop.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable

from sat_toolkit.errors import SatError

_FRACTION = re.compile(
    r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?:/\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?))?\s*$"
)


def parse_fraction(
    value: object, name: str, *, allow_zero: bool = True, maximum: float | None = None
) -> float:
    """A non-negative finite number from a float, an int or a string such as ``"4/255"``.

    Args:
        value: the raw recipe value.
        name: the parameter's name, used in the error message.
        allow_zero: whether 0 is a valid value (an eps of 0 is; a step size is not).
        maximum: an inclusive upper bound, if any.
    """
    if isinstance(value, bool) or value is None:
        number = math.nan
    elif isinstance(value, numbers.Real):
        number = float(value)
    elif isinstance(value, str):
        match = _FRACTION.match(value)
        if match is None:
            number = math.nan
        else:
            numerator = float(match.group(1))
            denominator = float(match.group(2)) if match.group(2) is not None else 1.0
            number = numerator / denominator if denominator != 0 else math.nan
    else:
        number = math.nan
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        kind = "a positive" if not allow_zero else "a non-negative"
        raise SatError(
            f"attack parameter '{name}': expected {kind} number or a fraction like '4/255', got {value!r}"
        )
    if maximum is not None and number > maximum:
        raise SatError(f"attack parameter '{name}' must be at most {maximum}, got {value!r}")
    return number


def parse_int(value: object, name: str, *, minimum: int = 1) -> int:
    """An integer of at least ``minimum`` (booleans and floats such as 2.5 are refused)."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok and isinstance(value, float) and value.is_integer():
        value, ok = int(value), True
    if not ok or int(value) < minimum:  # type: ignore[arg-type]
        raise SatError(f"attack parameter '{name}': expected an integer >= {minimum}, got {value!r}")
    return int(value)  # type: ignore[arg-type]


def parse_probability(value: object, name: str) -> float:
    """A number in [0, 1] (fractions such as ``"4/5"`` allowed)."""
    return parse_fraction(value, name, maximum=1.0)


def parse_choice(value: object, name: str, choices: Iterable[str]) -> str:
    """One of a fixed set of strings."""
    options = tuple(choices)
    if not isinstance(value, str) or value not in options:
        raise SatError(f"attack parameter '{name}' must be one of {', '.join(options)}; got {value!r}")
    return value
