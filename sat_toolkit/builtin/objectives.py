"""Registers the built-in training objectives, exactly as a third-party plugin would."""

from __future__ import annotations

from sat_toolkit.objectives import BUILTIN_OBJECTIVES
from sat_toolkit.plugins import hookimpl


@hookimpl
def sat_register_objectives() -> list[type]:
    return list(BUILTIN_OBJECTIVES)
