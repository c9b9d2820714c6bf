"""The model plugin contract.

A model plugin is a class with a registry ``name`` and a one-line ``description``, built
from keyword parameters only (architecture hyper-parameters such as ``width``), whose
``build(info, activation)`` returns an ``nn.Module`` that

* takes images in [0, 1] (``N x C x H x W``) and returns ``N x num_classes`` logits;
* starts with :class:`~sat_toolkit.models.Normalize` (the dataset's mean/std);
* puts a fresh instance of ``activation`` at every place the network has an activation;
* carries ``sat_config``, enough to rebuild it (:mod:`sat_toolkit.models.config`).

:class:`ModelBuilder` does the common part; a subclass writes ``params()`` and
``build_body(info, activation)``. Subclassing is a convenience, not a requirement.
"""

from __future__ import annotations

import abc
from typing import Annotated, Any, ClassVar

from torch import nn

from sat_toolkit.activations.factory import ActivationFactory, ActivationSpec
from sat_toolkit.data.info import DatasetInfo
from sat_toolkit.models.config import make_sat_config
from sat_toolkit.models.normalize import Normalize, NormalizedModel
from sat_toolkit.params import Param

#: Widths, depths, resolutions: a count of at least one.
PositiveInt = Annotated[int, Param(ge=1)]
#: A multiplier of a width or depth.
PositiveFloat = Annotated[float, Param(gt=0)]
#: A dropout or drop-path probability: 1 would drop everything.
DropRate = Annotated[float, Param(ge=0, lt=1)]


class ModelBuilder(abc.ABC):
    """Base class for model plugins: validates, builds the body, wraps and labels it."""

    name: ClassVar[str]
    description: ClassVar[str] = ""

    @abc.abstractmethod
    def params(self) -> dict[str, Any]:
        """Every keyword parameter (defaults included) that rebuilds this builder."""

    @abc.abstractmethod
    def build_body(self, info: DatasetInfo, activation: ActivationSpec) -> nn.Module:
        """The network proper: normalised ``info.input_shape`` images -> logits."""

    def build(self, info: DatasetInfo, activation: ActivationSpec) -> NormalizedModel:
        """``NormalizedModel(Normalize(info.mean, info.std), body)`` with ``sat_config`` set."""
        if not isinstance(info, DatasetInfo):
            raise TypeError(f"build() needs a DatasetInfo, got {type(info).__name__}")
        ActivationFactory(activation)  # a bad activation spec fails here, before any layer is built
        model = NormalizedModel(Normalize(info.mean, info.std), self.build_body(info, activation))
        model.sat_config = make_sat_config(self.name, self.params(), activation, info)
        return model

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"
