"""Build attacks by name: the bridge between recipes and the plugin host."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from sat_toolkit.errors import SatError
from sat_toolkit.plugins import PluginKind, get_plugin_host

AttackSpec = str | Mapping[str, Any]


def resolve_attack(name: str) -> type:
    """The attack class registered as ``name`` (by any installed plugin)."""
    return get_plugin_host().get(PluginKind.ATTACK, name)


def attack_names() -> list[str]:
    """Every attack name that can be looked up."""
    return get_plugin_host().names(PluginKind.ATTACK)


def create_attack(spec: AttackSpec, *, defaults: Mapping[str, Any] | None = None, **params: Any) -> Any:
    """Instantiate an attack from ``"pgd"`` or ``{name = "pgd", eps = "4/255", ...}``.

    ``params`` override the spec; ``defaults`` fill in only parameters the spec leaves out
    and the attack accepts (an ensemble passes its eps to its members this way).
    Mistakes become one-line :class:`SatError` messages.
    """
    if isinstance(spec, str):
        name, spec_params = spec, {}
    elif isinstance(spec, Mapping):
        spec_params = dict(spec)
        name = spec_params.pop("name", None)
        if not isinstance(name, str):
            raise SatError(f"attack spec {dict(spec)!r} needs a 'name' key, e.g. {{name = 'pgd'}}")
    else:
        raise SatError(f"attack spec must be a name or a table with 'name', got {spec!r}")
    spec_params.update(params)
    cls = resolve_attack(name)
    accepted = inspect.signature(cls).parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    for key, value in (defaults or {}).items():
        if key not in spec_params and (key in accepted or takes_kwargs):
            spec_params[key] = value
    unknown = [key for key in spec_params if key not in accepted and not takes_kwargs]
    if unknown:
        valid = ", ".join(accepted) or "none"
        raise SatError(f"attack '{name}' has no parameter '{unknown[0]}'; valid parameters: {valid}")
    try:
        return cls(**spec_params)
    except (TypeError, ValueError) as exc:
        raise SatError(f"attack '{name}': {exc}") from None
