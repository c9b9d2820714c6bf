"""The module the ``sat_toolkit`` entry point names: one hook, returning the classes."""

from __future__ import annotations

from sat_extra_activations.activations import Mish, PSSiLU
from sat_toolkit.plugins import hookimpl


@hookimpl
def sat_register_activations() -> list[type]:
    return [Mish, PSSiLU]
