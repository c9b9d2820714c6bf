"""Numbers as people write them in recipes: ``0.1``, ``"4/255"``, ``"8 / 255"``.

Epsilons are conventionally quoted in 255ths of the pixel range; writing ``"4/255"``
keeps the recipe readable and exact, and the resolved recipe stores the float.
"""

from __future__ import annotations

import math
import re

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_FRACTION = re.compile(rf"^\s*({_NUMBER})\s*/\s*({_NUMBER})\s*$")


def is_fraction(text: object) -> bool:
    """True for a string of the form ``"a/b"`` with numeric ``a`` and ``b``."""
    return isinstance(text, str) and _FRACTION.match(text) is not None


def parse_number(value: object) -> float:
    """A finite float from a number or a string ``"0.1"`` / ``"4/255"``.

    Booleans are refused (``True`` is an int in Python, never a sensible epsilon).
    Raises ``ValueError`` with a message fit to show the user.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got boolean {str(value).lower()}")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        match = _FRACTION.match(value)
        try:
            if match:
                denominator = float(match.group(2))
                if denominator == 0:
                    raise ValueError(f"division by zero in {value!r}; write a fraction like '4/255'")
                number = float(match.group(1)) / denominator
            else:
                number = float(value.strip())
        except ValueError as exc:
            if "division by zero" in str(exc):
                raise
            raise ValueError(f"expected a number or a fraction like '4/255', got {value!r}") from None
    else:
        raise ValueError(f"expected a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number
