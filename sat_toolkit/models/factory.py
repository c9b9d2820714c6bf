"""Model plugins from recipe tables: ``{"name": "small_cnn", "width": 16}`` -> builder -> model."""

from __future__ import annotations

from typing import Any

from torch import nn

from sat_toolkit.activations.factory import ActivationSpec
from sat_toolkit.data.factory import PluginSpec, instantiate_plugin
from sat_toolkit.data.info import DatasetInfo


def create_model_builder(spec: PluginSpec) -> Any:
    """The model plugin named by ``spec``, constructed; unknown keys are one-line errors."""
    return instantiate_plugin("model", spec)


def create_model(spec: PluginSpec, info: DatasetInfo, activation: ActivationSpec) -> nn.Module:
    """``create_model_builder(spec).build(info, activation)``."""
    return create_model_builder(spec).build(info, activation)
