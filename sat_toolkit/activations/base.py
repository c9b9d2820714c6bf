"""The activation plugin contract.

An activation plugin is an ``nn.Module`` subclass with a registry ``name``, a one-line
``description`` and a ``smooth`` flag (True when its gradient is continuous, which is
what SAT asks of it); ``also_known_as`` may list the other names the literature uses, so
that a recipe asking for one of them is told the registry name. It is built from keyword
parameters only, so a recipe line such as ``activation = {name = "smoothrelu", alpha = 20}``
maps onto ``SmoothReLU(alpha=20)``.
Subclassing :class:`Activation` is a convenience, not a requirement.
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn


class Activation(nn.Module):
    """Base class for the toolkit's activations (and a handy one for plugins)."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    smooth: ClassVar[bool] = True
    also_known_as: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        # An explicit signature: activations without parameters accept none.
        super().__init__()

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.hparams().items())

    def hparams(self) -> dict[str, object]:
        """The keyword parameters that rebuild this module (saved with checkpoints)."""
        return {}
