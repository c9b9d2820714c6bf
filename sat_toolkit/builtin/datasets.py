"""Registers the built-in datasets, exactly as a third-party plugin would."""

from __future__ import annotations

from sat_toolkit.data import BUILTIN_DATASETS
from sat_toolkit.plugins import hookimpl


@hookimpl
def sat_register_datasets() -> list[type]:
    return list(BUILTIN_DATASETS)
