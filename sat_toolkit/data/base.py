"""The dataset plugin contract.

A dataset plugin is a class with a registry ``name``, a one-line ``description``, built
from keyword parameters only (a recipe's ``[data]`` table maps onto them), with:

* ``info() -> DatasetInfo``: cheap, loads nothing; enough to build a model.
* ``load(split) -> torch.utils.data.Dataset`` for ``split`` in ``{"train", "test"}``,
  yielding ``(image float32 C x H x W in [0, 1], label int64)``.

:class:`DatasetSource` implements the common part (split checks, ``limit_train`` /
``limit_test``, caching, conversion from the Hugging Face store to tensors); a subclass
writes ``info()`` and ``_load_store(split)``. Subclassing is a convenience, not a
requirement.
"""

from __future__ import annotations

import abc
from typing import Annotated, Any, ClassVar

import datasets

from sat_toolkit.data.info import DatasetInfo
from sat_toolkit.data.tensor_dataset import TensorImageDataset
from sat_toolkit.errors import SatError
from sat_toolkit.params import Param

SPLITS = ("train", "test")


#: ``limit_train`` / ``limit_test``: keep only the first N examples of a split (quick runs).
Limit = Annotated[int | None, Param(ge=1)]


class DatasetSource(abc.ABC):
    """Base class for dataset plugins backed by an in-memory Hugging Face store.

    Args:
        limit_train: keep only the first N training examples (quick runs, smoke tests).
        limit_test: keep only the first N test examples.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: Raw value of a white pixel in the store; images are divided by it, once, on conversion.
    pixel_max: ClassVar[float] = 255.0
    #: ``(channels, height, width)`` when the dataset fixes it; read by recipe validation
    #: (which builds no dataset) to bound an L2 eps by the largest possible perturbation.
    input_shape: ClassVar[tuple[int, int, int] | None] = None

    def __init__(self, limit_train: Limit = None, limit_test: Limit = None) -> None:
        self.limit_train = limit_train
        self.limit_test = limit_test
        self._cache: dict[str, TensorImageDataset] = {}

    @abc.abstractmethod
    def info(self) -> DatasetInfo:
        """Shape, classes and normalisation statistics (computed on the training split)."""

    @abc.abstractmethod
    def _load_store(self, split: str) -> datasets.Dataset:
        """The full split as a store (schema in :mod:`sat_toolkit.data.store`)."""

    def params(self) -> dict[str, Any]:
        """The keyword parameters that rebuild this source (saved with checkpoints)."""
        return {"limit_train": self.limit_train, "limit_test": self.limit_test}

    def load(self, split: str) -> TensorImageDataset:
        """The split as a tensor-backed dataset; converted once, then cached on this instance."""
        if split not in SPLITS:
            raise SatError(f"dataset '{self.name}': unknown split {split!r}; use one of {', '.join(SPLITS)}")
        if split not in self._cache:
            store = self._load_store(split)
            limit = self.limit_train if split == "train" else self.limit_test
            if limit is not None and limit < len(store):
                store = store.select(range(limit))
            self._cache[split] = TensorImageDataset.from_store(store, pixel_max=self.pixel_max)
        return self._cache[split]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items() if v is not None)
        return f"{type(self).__name__}({args})"
