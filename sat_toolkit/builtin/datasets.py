"""Registers the built-in datasets, exactly as a third-party plugin would."""

from __future__ import annotations

from sat_toolkit.data import BUILTIN_DATASETS
from sat_toolkit.data.hub import HubImages
from sat_toolkit.data.imagefolder import ImageFolder
from sat_toolkit.data.synthetic import Synthetic
from sat_toolkit.plugins import hookimpl


@hookimpl
def sat_register_datasets() -> list[type]:
    return [*BUILTIN_DATASETS, ImageFolder, HubImages, Synthetic]
