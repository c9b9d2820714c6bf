"""Exponential moving average of the weights, checkpointed with the run."""

from __future__ import annotations

from typing import Any

from torch import nn


class WeightEMA:
    """timm's ``ModelEmaV3`` does the averaging; this wrapper gives accelerate the
    ``state_dict``/``load_state_dict`` pair it needs to save the averaged weights.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        from timm.utils import ModelEmaV3

        self.ema = ModelEmaV3(model, decay=decay, stochastic_rounding=False)

    def update(self, model: nn.Module, step: int) -> None:
        self.ema.update(model, step=step)

    @property
    def module(self) -> nn.Module:
        return self.ema.module

    def state_dict(self) -> dict[str, Any]:
        return self.ema.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema.load_state_dict(state)
