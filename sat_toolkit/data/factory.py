"""Build plugins from recipe tables: ``{"name": "digits", "limit_train": 500}`` -> instance.

Shared by dataset and model plugins. A recipe table maps onto keyword parameters, so a
misspelt key must become one line naming the key and the valid ones, not a Python
``TypeError`` from deep inside a constructor.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from sat_toolkit.errors import SatError
from sat_toolkit.plugins import PluginKind, get_plugin_host

PluginSpec = str | Mapping[str, Any]


def split_plugin_spec(kind: str, spec: PluginSpec) -> tuple[str, dict[str, Any]]:
    """``"digits"`` or ``{"name": "digits", **params}`` -> ``(name, params)``."""
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, Mapping):
        params = dict(spec)
        name = params.pop("name", None)
        if isinstance(name, str):
            return name, params
    raise SatError(f"{kind} spec must be a name or a table with a 'name' key, got {spec!r}")


def instantiate_plugin(kind: PluginKind | str, spec: PluginSpec) -> Any:
    """Look up the plugin class for ``spec`` and construct it, checking parameter names first."""
    kind_value = PluginKind(kind).value
    name, params = split_plugin_spec(kind_value, spec)
    cls = get_plugin_host().get(kind_value, name)
    signature = inspect.signature(cls)
    accepted = signature.parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    unknown = [key for key in params if key not in accepted and not takes_kwargs]
    if unknown:
        valid = ", ".join(k for k, p in accepted.items() if p.kind is not p.VAR_KEYWORD) or "none"
        raise SatError(f"{kind_value} '{name}' has no parameter '{unknown[0]}'; valid parameters: {valid}")
    missing = [
        key
        for key, p in accepted.items()
        if p.default is inspect.Parameter.empty
        and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        and key not in params
    ]
    if missing:
        raise SatError(f"{kind_value} '{name}' needs the parameter '{missing[0]}'")
    try:
        return cls(**params)
    except SatError:
        raise
    except (TypeError, ValueError) as exc:
        raise SatError(f"{kind_value} '{name}': {exc}") from None
