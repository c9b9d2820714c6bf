"""Pin what a timm-built checkpoint means: the timm version and the parameter count.

A checkpoint stores weights by name. If a later timm builds the same architecture name
differently (another layer, another width), loading could fail late or, worse, succeed
with a different network. Models built through timm therefore record the timm version and
the parameter count they were built with, and a rebuild that counts differently is refused.
"""

from __future__ import annotations

import importlib.metadata
import warnings
from typing import Any

from torch import nn

from sat_toolkit.errors import SatError


def timm_version() -> str:
    """The installed timm version, read without importing timm."""
    return importlib.metadata.version("timm")


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements; works on the ``meta`` device too."""
    return sum(p.numel() for p in module.parameters())


def check_pin(label: str, num_params: Any) -> int | None:
    """Validate a recorded ``num_params`` parameter (None: nothing recorded)."""
    if num_params is not None and (isinstance(num_params, bool) or not isinstance(num_params, int)):
        raise SatError(f"model '{label}': num_params must be an integer, got {num_params!r}")
    return num_params


def pin_build(model: nn.Module, label: str, num_params: int | None, expected_version: str | None) -> None:
    """Refuse a build that differs from the recorded one; record the pin in ``sat_config``."""
    built = count_parameters(model)
    installed = timm_version()
    if num_params is not None and built != num_params:
        raise SatError(
            f"model '{label}': timm {installed} builds {built:,} parameters, but the config says "
            f"{num_params:,} (built with timm {expected_version or 'unknown'}); install that timm version "
            "to rebuild it"
        )
    if num_params is None and expected_version not in (None, installed):
        warnings.warn(
            f"model '{label}': built with timm {installed}, the config was made with timm "
            f"{expected_version} and records no parameter count to check against",
            UserWarning,
            stacklevel=3,
        )
    model.sat_config["model"]["timm_version"] = installed
    model.sat_config["model"]["num_params"] = built
