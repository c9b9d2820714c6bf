"""Build any plugin from a recipe table: ``{"name": "pgd", "steps": 20}`` -> instance.

One implementation for every kind. A recipe table maps onto keyword parameters, so a
misspelt key must become one line naming the key and the valid ones, not a ``TypeError``
from deep inside a constructor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sat_toolkit.errors import SatError
from sat_toolkit.params import check, declared
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


def checked_parameters(
    kind: PluginKind | str,
    spec: PluginSpec,
    *,
    defaults: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> tuple[type, dict[str, Any]]:
    """The class ``spec`` names and its parameters, typed and checked against its schema.

    The same check a recipe's values get (:func:`sat_toolkit.params.check`), so building
    from Python refuses a value with the same words; nothing is built. ``overrides``
    replace spec values; ``defaults`` fill in only parameters the spec leaves out and the
    plugin accepts (an ensemble passes its eps to its members this way).
    """
    kind_value = PluginKind(kind).value
    name, params = split_plugin_spec(kind_value, spec)
    params.update(overrides)
    cls = get_plugin_host().get(kind_value, name)
    schema = declared(cls)
    accepted = schema.params if schema is not None else {}
    takes_kwargs = schema is None or schema.takes_kwargs
    for key, value in (defaults or {}).items():
        if key not in params and (key in accepted or takes_kwargs):
            params[key] = value
    unknown = [key for key in params if key not in accepted and not takes_kwargs]
    if unknown:
        valid = ", ".join(accepted) or "none"
        raise SatError(f"{kind_value} '{name}' has no parameter '{unknown[0]}'; valid parameters: {valid}")
    missing = [key for key, p in accepted.items() if p.required and key not in params]
    if missing:
        raise SatError(f"{kind_value} '{name}' needs the parameter '{missing[0]}'")
    typed, problems = check(cls, params)
    if problems:
        key, message = problems[0]
        prefix = f"{kind_value} '{name}'"
        if key is not None:  # "eps must be >= 0, got -1", "width: expected an integer, got ..."
            message = f"{prefix}: {key}{' ' if message.startswith('must') else ': '}{message}"
        elif not message.startswith(prefix):
            message = f"{prefix}: {message}"
        raise SatError(message)
    return cls, typed


def instantiate_plugin(
    kind: PluginKind | str,
    spec: PluginSpec,
    *,
    defaults: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> Any:
    """Construct the plugin ``spec`` names from parameters :func:`checked_parameters` passed."""
    cls, typed = checked_parameters(kind, spec, defaults=defaults, **overrides)
    return construct(kind, cls, typed)


def construct(kind: PluginKind | str, cls: type, typed: Mapping[str, Any]) -> Any:
    """``cls(**typed)``; a constructor that still refuses its values gets one line, not a traceback.

    That happens with a plugin that checks in ``__init__`` instead of declaring ``Param``
    bounds: recipe validation cannot see such checks, so they surface when the run builds it.
    """
    try:
        return cls(**typed)
    except SatError:
        raise
    except (TypeError, ValueError) as exc:
        raise SatError(f"{PluginKind(kind).value} '{getattr(cls, 'name', cls.__name__)}': {exc}") from None
