"""Build activations by name: the bridge between recipes, timm and the plugin host."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from sat_toolkit.errors import SatError
from sat_toolkit.plugins import PluginKind, get_plugin_host

ActivationSpec = str | Mapping[str, Any]


def resolve_activation(name: str) -> type[nn.Module]:
    """The activation class registered as ``name`` (any installed plugin)."""
    return get_plugin_host().get(PluginKind.ACTIVATION, name)


def split_spec(spec: ActivationSpec) -> tuple[str, dict[str, Any]]:
    """``"silu"`` or ``{"name": "smoothrelu", "alpha": 20}`` -> (name, params)."""
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, Mapping):
        params = dict(spec)
        name = params.pop("name", None)
        if not isinstance(name, str):
            raise SatError(f"activation spec {dict(spec)!r} needs a 'name' key, e.g. {{name = 'silu'}}")
        return name, params
    raise SatError(f"activation spec must be a name or a table with 'name', got {spec!r}")


def create_activation(spec: ActivationSpec, **params: Any) -> nn.Module:
    """Instantiate an activation from a spec; parameter mistakes become one-line errors."""
    name, spec_params = split_spec(spec)
    spec_params.update(params)
    cls = resolve_activation(name)
    # A plain nn.Module without its own __init__ takes no parameters (its signature says **kwargs).
    accepted = {} if cls.__init__ is nn.Module.__init__ else inspect.signature(cls).parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    unknown = [key for key in spec_params if key not in accepted and not takes_kwargs]
    if unknown:
        valid = ", ".join(accepted) or "none"
        raise SatError(f"activation '{name}' has no parameter '{unknown[0]}'; valid parameters: {valid}")
    try:
        return cls(**spec_params)
    except (TypeError, ValueError) as exc:
        raise SatError(f"activation '{name}': {exc}") from None


class ActivationFactory:
    """A callable that timm accepts as ``act_layer``.

    timm calls ``act_layer(inplace=True)`` in many places; our activations never work in
    place (the attack needs the pre-activation values), so ``inplace`` is accepted and
    ignored. Each call builds a fresh module.
    """

    def __init__(self, spec: ActivationSpec) -> None:
        self.name, self.params = split_spec(spec)
        # Built once up front: a bad spec fails here, and surgery compares against it.
        self.prototype = create_activation(self.name, **self.params)

    def __call__(self, inplace: bool = False, **_ignored: Any) -> nn.Module:
        return create_activation(self.name, **self.params)

    @property
    def layer(self) -> type[nn.Module]:
        """The activation as a *class* with its parameters bound, for timm's ``act_layer``.

        Some timm layers (``BatchNormAct2d`` and friends) accept only a type, a string or a
        partial. The class subclasses the plugin's class, so ``isinstance`` checks and
        ``hparams()`` still see the registered activation.
        """
        base = type(self.prototype)
        params = dict(self.params)

        def __init__(module: nn.Module, inplace: bool = False, **_ignored: Any) -> None:  # noqa: N807
            base.__init__(module, **params)

        return type(base.__name__, (base,), {"__init__": __init__, "__module__": base.__module__})

    def __repr__(self) -> str:
        return f"ActivationFactory({self.name!r}, {self.params!r})"
