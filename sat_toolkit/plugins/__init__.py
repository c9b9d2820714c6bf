"""Plugin discovery: hook specs, the host, and the records it keeps."""

from sat_toolkit.plugins.manager import (
    DISABLE_ENV_VAR,
    ENTRY_POINT_GROUP,
    PluginHost,
    PluginRecord,
    PluginWarning,
    get_plugin_host,
    reset_plugin_host,
)
from sat_toolkit.plugins.specs import PluginKind, hookimpl

__all__ = [
    "DISABLE_ENV_VAR",
    "ENTRY_POINT_GROUP",
    "PluginHost",
    "PluginKind",
    "PluginRecord",
    "PluginWarning",
    "get_plugin_host",
    "hookimpl",
    "reset_plugin_host",
]
