"""Build attacks by name: the bridge between recipes and the plugin host."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from sat_toolkit.plugins import PluginKind, get_plugin_host
from sat_toolkit.plugins.instantiate import instantiate_plugin

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
    return instantiate_plugin(PluginKind.ATTACK, spec, defaults=defaults, **params)


def rebuild_attack(attack: Any, **changes: Any) -> Any | None:
    """The same attack class with its parameters (``hparams()``) and ``changes``; None if it has none.

    For variants of an attack an evaluation makes itself (a stronger copy for the
    convergence check, a shorter one for the cost probe): a new object, so the original's
    generators and state stay where they were.
    """
    hparams = getattr(attack, "hparams", None)
    if not callable(hparams):
        return None
    accepted = inspect.signature(type(attack)).parameters
    params = {**hparams(), **changes}
    return type(attack)(**{key: value for key, value in params.items() if key in accepted})
