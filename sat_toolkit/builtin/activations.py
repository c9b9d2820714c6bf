"""Registers the built-in activations, exactly as a third-party plugin would."""

from __future__ import annotations

from sat_toolkit.activations.builtin import BUILTIN_ACTIVATIONS
from sat_toolkit.activations.surrogate import SmoothGradientReLU
from sat_toolkit.plugins import hookimpl


@hookimpl
def sat_register_activations() -> list[type]:
    return [*BUILTIN_ACTIVATIONS, SmoothGradientReLU]
