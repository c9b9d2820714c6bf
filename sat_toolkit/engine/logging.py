"""Progress bars and hyper-parameter flattening for TensorBoard."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tqdm.auto import tqdm


def flatten_hparams(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and None become strings.

    TensorBoard's hparams plugin accepts only scalars and strings.
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_hparams(value, prefix=f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def progress_bar(
    total: int, initial: int, *, enabled: bool, unit: str = "step", desc: str = "training"
) -> tqdm:
    """A tqdm bar with ETA; disabled bars cost nothing."""
    return tqdm(total=total, initial=initial, disable=not enabled, unit=unit, desc=desc, dynamic_ncols=True)
