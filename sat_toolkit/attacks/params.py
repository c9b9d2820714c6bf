"""Budgets written the way papers write them (``"4/255"``), for the Python API and the CLI.

Attack *constructors* never parse: recipe validation and ``create_attack`` hand them
floats already checked against their declared schema (:mod:`sat_toolkit.params`). What is
left is :func:`parse_fraction` for functions that take a budget directly from a user,
such as :func:`sat_toolkit.evaluation.evaluate` and ``sat-toolkit eval --eps``.
"""

from __future__ import annotations

import math
import numbers
import re

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
