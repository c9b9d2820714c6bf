"""Dataset and model plugins from recipe tables (the shared builder lives in the plugin host)."""

from __future__ import annotations

from sat_toolkit.plugins.instantiate import PluginSpec, instantiate_plugin, split_plugin_spec

__all__ = ["PluginSpec", "instantiate_plugin", "split_plugin_spec"]
