"""Datasets: the plugin contract, the built-in sources and fast tensor-backed serving.

Contract (see :mod:`sat_toolkit.data.base`): a dataset plugin is built from keyword
parameters, ``info()`` returns a :class:`DatasetInfo`, and ``load(split)`` returns a
map-style dataset of ``(float32 C x H x W image in [0, 1], int64 label)`` for
``split`` in ``{"train", "test"}``. Serve batches with :func:`make_loader` (a
``DataLoader``) or :func:`iterate_batches` (no ``DataLoader`` at all).
"""

from sat_toolkit.data.base import SPLITS, DatasetSource
from sat_toolkit.data.digits import Digits
from sat_toolkit.data.factory import PluginSpec, instantiate_plugin
from sat_toolkit.data.fashion_mnist import FashionMNIST
from sat_toolkit.data.idx import IdxFormatError, read_idx
from sat_toolkit.data.info import DatasetInfo
from sat_toolkit.data.tensor_dataset import TensorImageDataset, iterate_batches, make_loader

BUILTIN_DATASETS: tuple[type[DatasetSource], ...] = (Digits, FashionMNIST)


def create_dataset(spec: PluginSpec) -> DatasetSource:
    """``"digits"`` or ``{"name": "fashion_mnist", "path": "..."}`` -> a dataset plugin instance."""
    return instantiate_plugin("dataset", spec)


def check_files(dataset: object) -> None:
    """Let a split that reads files lazily check them now (``check_files()``; imagefolder does).

    The engine calls this before it writes the run directory. Splits read whole on
    ``load`` (IDX files, the digits) were checked then; hub tables are still decoded image
    by image in the loader, where a bad image is a one-line error naming it.
    """
    check = getattr(dataset, "check_files", None)
    if callable(check):
        check()


__all__ = [
    "BUILTIN_DATASETS",
    "SPLITS",
    "DatasetInfo",
    "DatasetSource",
    "Digits",
    "FashionMNIST",
    "IdxFormatError",
    "PluginSpec",
    "TensorImageDataset",
    "check_files",
    "create_dataset",
    "instantiate_plugin",
    "iterate_batches",
    "make_loader",
    "read_idx",
]
