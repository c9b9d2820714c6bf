"""Model plugins from recipe tables: ``{"name": "small_cnn", "width": 16}`` -> builder -> model."""

from __future__ import annotations

from typing import Any

from torch import nn

from sat_toolkit.activations.factory import ActivationSpec
from sat_toolkit.data.factory import PluginSpec, instantiate_plugin, split_plugin_spec
from sat_toolkit.data.info import DatasetInfo


def create_model_builder(spec: PluginSpec) -> Any:
    """The model plugin named by ``spec``, constructed; unknown keys are one-line errors.

    A builder looked up by a qualified name (``my-models:small_cnn``, a plugin sharing a
    built-in's name) carries that name, so the ``sat_config`` it writes rebuilds the same
    plugin, not the built-in.
    """
    builder = instantiate_plugin("model", spec)
    name, _ = split_plugin_spec("model", spec)
    if name != getattr(type(builder), "name", name):
        builder.name = name
    return builder


def create_model(spec: PluginSpec, info: DatasetInfo, activation: ActivationSpec) -> nn.Module:
    """``create_model_builder(spec).build(info, activation)``."""
    return create_model_builder(spec).build(info, activation)
