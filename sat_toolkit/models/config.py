"""``sat_config``: what a built model carries so a checkpoint can rebuild it.

Format (plain dicts, lists, strings and numbers: JSON/TOML/``torch.save`` friendly)::

    {
        "version": 1,
        "model": {"name": "small_cnn", "width": 32, "depth": 3, ...},  # every parameter
        "activation": "silu",            # or {"name": "smoothrelu", "alpha": 20.0}, as given
        "data_info": {"num_classes": 10, "channels": 1, "image_size": [28, 28],
                      "mean": [0.286], "std": [0.353], "class_names": [...] or None},
        "plugins": [{"kind": "activation", "name": "silu",        # added when the model is saved
                     "distribution": "smooth-adversarial-training", "version": "0.1.0"}, ...],
    }

``rebuild_model(config)`` builds the same architecture (fresh weights); load the
checkpoint's ``state_dict`` into it, normalisation buffers included. ``plugins`` (see
:mod:`sat_toolkit.plugins.provenance`) is optional, as older files lack it: it only turns
a missing plugin into the package to install.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from torch import nn

from sat_toolkit.activations.factory import ActivationSpec
from sat_toolkit.data.info import DatasetInfo
from sat_toolkit.errors import PluginLoadError, SatError, UnknownPluginError

SAT_CONFIG_VERSION = 1


def _plain(value: Any) -> Any:
    """Tuples -> lists and mappings -> dicts, recursively, so the config serialises anywhere."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return copy.deepcopy(value)


def make_sat_config(
    model_name: str, params: Mapping[str, Any], activation: ActivationSpec, info: DatasetInfo
) -> dict[str, Any]:
    """The ``sat_config`` dict described in this module's docstring."""
    return {
        "version": SAT_CONFIG_VERSION,
        "model": {"name": model_name, **_plain(params)},
        "activation": _plain(activation),
        "data_info": info.to_dict(),
    }


def rebuild_model(config: Mapping[str, Any]) -> nn.Module:
    """A freshly initialised model with the architecture ``config`` describes."""
    from sat_toolkit.models.factory import create_model_builder

    missing = [key for key in ("model", "activation", "data_info") if key not in config]
    if missing:
        raise SatError(f"sat_config lacks '{missing[0]}'; was this checkpoint saved by sat-toolkit?")
    version = config.get("version", SAT_CONFIG_VERSION)
    if version != SAT_CONFIG_VERSION:
        raise SatError(
            f"sat_config version {version} is not supported (this toolkit reads {SAT_CONFIG_VERSION})"
        )
    lacking = _missing_plugin(config, kinds=("model", "activation"))  # before building: a
    if lacking is not None:  # nested activation (relu_smooth_grad's smooth) would fail unnamed
        raise SatError(f"the model {lacking}")
    try:
        builder = create_model_builder(config["model"])
        model = builder.build(DatasetInfo.from_dict(config["data_info"]), config["activation"])
    except (UnknownPluginError, PluginLoadError):
        missing = _missing_plugin(config)
        if missing is None:
            raise
        raise SatError(f"the model {missing}") from None
    _warn_about_other_providers(config)
    return model


def _warn_about_other_providers(config: Mapping[str, Any]) -> None:
    """Say so when a recorded plugin's name now comes from another package.

    The rebuilt model then runs someone else's code under the same name (the original
    package was uninstalled and another one provides the name), which is worth one line.
    """
    import warnings

    from sat_toolkit.plugins import PluginWarning
    from sat_toolkit.plugins.provenance import sat_config_plugins

    recorded = config.get("plugins")
    if not isinstance(recorded, list):
        return
    now = {(e["kind"], e["name"]): e for e in sat_config_plugins(config)}
    for entry in recorded:
        if not isinstance(entry, Mapping):
            continue
        current = now.get((entry.get("kind"), entry.get("name")))
        if current is None or current["distribution"] in (None, entry.get("distribution")):
            continue
        warnings.warn(
            f"the model was saved with {entry['kind']} '{entry['name']}' from {entry.get('distribution')} "
            f"{entry.get('version')}; it is rebuilt with '{entry['name']}' from {current['distribution']} "
            f"{current['version']} (install {entry.get('distribution')} to get the original)",
            PluginWarning,
            stacklevel=2,
        )


def _missing_plugin(config: Mapping[str, Any], kinds: tuple[str, ...] | None = None) -> str | None:
    """What to install for a recorded plugin this environment lacks (None: nothing recorded
    is). With ``kinds``: only a plugin of those kinds whose name no installed package
    provides (one that another package provides now is rebuilt, with a warning)."""
    from sat_toolkit.plugins import get_plugin_host
    from sat_toolkit.plugins.provenance import missing_plugin_message

    entries = config.get("plugins")
    if kinds is not None and isinstance(entries, list):
        host = get_plugin_host()
        entries = [
            entry
            for entry in entries
            if isinstance(entry, Mapping)
            and entry.get("kind") in kinds
            and entry.get("name") not in host.names(entry["kind"])
        ]
    return missing_plugin_message(entries)
