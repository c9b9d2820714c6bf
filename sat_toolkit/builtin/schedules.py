"""Registers the built-in schedules, exactly as a third-party plugin would."""

from __future__ import annotations

from sat_toolkit.plugins import hookimpl
from sat_toolkit.schedules import BUILTIN_SCHEDULES


@hookimpl
def sat_register_schedules() -> list[type]:
    return list(BUILTIN_SCHEDULES)
