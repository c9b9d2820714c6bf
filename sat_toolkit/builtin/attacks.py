"""Registers the built-in attacks, exactly as a third-party plugin would."""

from __future__ import annotations

from sat_toolkit.attacks import BUILTIN_ATTACKS
from sat_toolkit.plugins import hookimpl


@hookimpl
def sat_register_attacks() -> list[type]:
    return list(BUILTIN_ATTACKS)
