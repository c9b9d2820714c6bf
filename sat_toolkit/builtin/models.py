"""Registers the built-in models, exactly as a third-party plugin would."""

from __future__ import annotations

from sat_toolkit.models import BUILTIN_MODELS
from sat_toolkit.models.efficientnet import EfficientNet, EfficientNetL1
from sat_toolkit.plugins import hookimpl


@hookimpl
def sat_register_models() -> list[type]:
    return [*BUILTIN_MODELS, EfficientNet, EfficientNetL1]
