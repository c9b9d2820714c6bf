"""``wide_resnet``: Wide ResNet (Zagoruyko & Komodakis 2016), the CIFAR adversarial-training
workhorse (WRN-28-10 in Rice et al. 2020 and RobustBench's Linf baselines, WRN-34-10 in
TRADES and MART).

WRN-d-k has a 3x3 stem of 16 channels, three stages of ``(d - 4) / 6`` pre-activation
blocks with 16k, 32k and 64k channels (strides 1, 2, 2), a final BN -> activation, global
pooling and a linear head: PreAct ResNet-18's body
(:class:`~sat_toolkit.models.preact_resnet.PreActResNetBody`, whose block is BN-act-conv3x3
twice with a 1x1 projection fed with the pre-activated input where the shape changes) with
three wider stages, as in the reference code adversarial-training papers use; dropout is
left out, as those papers train without it.
"""

from __future__ import annotations

from typing import Annotated, Any

from torch import nn

from sat_toolkit.activations.factory import ActivationSpec
from sat_toolkit.data.info import DatasetInfo
from sat_toolkit.errors import SatError
from sat_toolkit.models.base import ModelBuilder, PositiveInt
from sat_toolkit.models.preact_resnet import PreActResNetBody
from sat_toolkit.params import Param

STEM_CHANNELS = 16
STAGE_STRIDES = (1, 2, 2)


def blocks_per_stage(depth: int) -> int:
    """``(depth - 4) / 6``: two convolutions per block, three stages, plus stem and head."""
    return (depth - 4) // 6


class WideResNet(ModelBuilder):
    """Wide ResNet WRN-depth-widen_factor for small images (WRN-28-10 by default).

    Args:
        depth: layers with weights; ``depth - 4`` must be a multiple of 6 (16, 22, 28, 34, 40...).
        widen_factor: channel multiplier k of the three stages (16k, 32k, 64k channels).
    """

    name = "wide_resnet"
    description = "Wide ResNet WRN-d-k (Zagoruyko & Komodakis 2016) for small images; WRN-28-10 by default"

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """A depth the three-stage layout can hold: ``6n + 4``."""
        depth = params.get("depth", 28)
        if (depth - 4) % 6:
            raise SatError(
                f"depth: {depth} is not 6n + 4 (e.g. 16, 22, 28, 34, 40): WRN stages need whole blocks"
            )

    def __init__(self, depth: Annotated[int, Param(ge=10)] = 28, widen_factor: PositiveInt = 10) -> None:
        self.depth = depth
        self.widen_factor = widen_factor

    def params(self) -> dict[str, Any]:
        return {"depth": self.depth, "widen_factor": self.widen_factor}

    def build_body(self, info: DatasetInfo, activation: ActivationSpec) -> nn.Module:
        widths = [STEM_CHANNELS * self.widen_factor * 2**index for index in range(len(STAGE_STRIDES))]
        return PreActResNetBody(
            info, activation, STEM_CHANNELS, widths, STAGE_STRIDES, blocks_per_stage(self.depth)
        )
