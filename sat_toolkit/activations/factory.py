"""Build activations by name: the bridge between recipes, timm and the plugin host."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from sat_toolkit.plugins import PluginKind, get_plugin_host
from sat_toolkit.plugins.instantiate import (
    checked_parameters,
    construct,
    instantiate_plugin,
    split_plugin_spec,
)

ActivationSpec = str | Mapping[str, Any]


def resolve_activation(name: str) -> type[nn.Module]:
    """The activation class registered as ``name`` (any installed plugin)."""
    return get_plugin_host().get(PluginKind.ACTIVATION, name)


def split_spec(spec: ActivationSpec) -> tuple[str, dict[str, Any]]:
    """``"silu"`` or ``{"name": "smoothrelu", "alpha": 20}`` -> (name, params)."""
    return split_plugin_spec("activation", spec)


def create_activation(spec: ActivationSpec, **params: Any) -> nn.Module:
    """Instantiate an activation from a spec; parameter mistakes become one-line errors."""
    return instantiate_plugin(PluginKind.ACTIVATION, spec, **params)


class ActivationFactory:
    """A callable that timm accepts as ``act_layer``.

    timm calls ``act_layer(inplace=True)`` in many places; our activations never work in
    place (the attack needs the pre-activation values), so ``inplace`` is accepted and
    ignored. Each call builds a fresh module.
    """

    def __init__(self, spec: ActivationSpec) -> None:
        self.name, self.params = split_spec(spec)
        # Checked once here (a bad spec fails now); every layer's instance is then built
        # from the typed values. The prototype is what surgery compares against.
        self._cls, self._typed = checked_parameters(PluginKind.ACTIVATION, spec)
        self.prototype = construct(PluginKind.ACTIVATION, self._cls, self._typed)

    def __call__(self, inplace: bool = False, **_ignored: Any) -> nn.Module:
        return self._cls(**self._typed)

    @property
    def layer(self) -> type[nn.Module]:
        """The activation as a *class* with its parameters bound, for timm's ``act_layer``.

        Some timm layers (``BatchNormAct2d`` and friends) accept only a type, a string or a
        partial. The class subclasses the plugin's class, so ``isinstance`` checks and
        ``hparams()`` still see the registered activation.
        """
        base = type(self.prototype)
        params = dict(self._typed)

        def __init__(module: nn.Module, inplace: bool = False, **_ignored: Any) -> None:  # noqa: N807
            base.__init__(module, **params)

        return type(base.__name__, (base,), {"__init__": __init__, "__module__": base.__module__})

    def __repr__(self) -> str:
        return f"ActivationFactory({self.name!r}, {self.params!r})"
