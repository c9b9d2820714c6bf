"""The module the ``sat_toolkit`` entry point names: one hook per kind, each returning classes."""

from __future__ import annotations

from sat_extra_activations.activations import Mish, PSSiLU
from sat_extra_activations.attacks import MIFGSM
from sat_extra_activations.schedules import Triangular
from sat_toolkit.plugins import hookimpl


@hookimpl
def sat_register_activations() -> list[type]:
    return [Mish, PSSiLU]


@hookimpl
def sat_register_attacks() -> list[type]:
    return [MIFGSM]


@hookimpl
def sat_register_schedules() -> list[type]:
    return [Triangular]
