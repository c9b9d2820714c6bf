"""Normalisation as the model's first layer, so the model takes pixels in [0, 1].

SAT's epsilon is defined in [0, 1] pixel space. With normalisation inside the model, an
attack perturbs and clips the raw pixels and never needs to know the dataset's
statistics; a checkpoint carries them too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, for ``N x C x H x W`` input.

    ``mean`` and ``std`` are buffers: they follow ``.to(device)`` / ``.half()`` and are
    saved in ``state_dict``, but no optimiser ever sees them.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or not mean:
            raise ValueError(f"mean and std need one value per channel, got {list(mean)} and {list(std)}")
        if min(std) <= 0:
            raise ValueError(f"std must be > 0, got {list(std)}")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class NormalizedModel(nn.Module):
    """``body(normalize(x))``: what every model plugin's ``build`` returns.

    Attributes:
        normalize: the :class:`Normalize` layer.
        body: the network proper, which sees normalised inputs.
        sat_config: how to rebuild this model (see :mod:`sat_toolkit.models.config`);
            set by ``build``.
    """

    sat_config: dict[str, Any]

    def __init__(self, normalize: Normalize, body: nn.Module) -> None:
        super().__init__()
        self.normalize = normalize
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalize(x))
