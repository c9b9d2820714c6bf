"""Build any plugin from a recipe table: ``{"name": "pgd", "steps": 20}`` -> instance.

One implementation for every kind. A recipe table maps onto keyword parameters, so a
misspelt key must become one line naming the key and the valid ones, not a ``TypeError``
from deep inside a constructor.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from sat_toolkit.errors import SatError
from sat_toolkit.plugins.manager import get_plugin_host
from sat_toolkit.plugins.specs import PluginKind

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
        raise SatError(f"{kind} spec {dict(spec)!r} needs a 'name' key, e.g. {{name = '...'}}")
    raise SatError(f"{kind} spec must be a name or a table with a 'name' key, got {spec!r}")


def constructor_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """Keyword parameters of ``cls``; none for an ``nn.Module`` without its own ``__init__``."""
    from torch import nn

    if isinstance(cls, type) and issubclass(cls, nn.Module) and cls.__init__ is nn.Module.__init__:
        return {}
    return dict(inspect.signature(cls).parameters)


def instantiate_plugin(
    kind: PluginKind | str,
    spec: PluginSpec,
    *,
    defaults: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> Any:
    """Construct the plugin ``spec`` names, checking parameter names first.

    ``overrides`` replace spec values; ``defaults`` fill in only parameters the spec leaves
    out and the plugin accepts (an ensemble passes its eps to its members this way).
    """
    kind_value = PluginKind(kind).value
    name, params = split_plugin_spec(kind_value, spec)
    params.update(overrides)
    cls = get_plugin_host().get(kind_value, name)
    accepted = constructor_parameters(cls)
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    for key, value in (defaults or {}).items():
        if key not in params and (key in accepted or takes_kwargs):
            params[key] = value
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
