"""``preact_resnet18``: PreAct ResNet-18 (He et al. 2016, "Identity Mappings in Deep
Residual Networks") for small images, the usual CIFAR-style adaptation.

Small-input changes from the ImageNet network: a 3x3 stride-1 stem and no max-pool, so
an 8x8 image still reaches the last stage at 1x1 and a 28x28 one at 4x4. Pre-activation
order (BN -> activation -> conv) inside each block, a final BN -> activation before
pooling, and a 1x1 projection shortcut, fed with the pre-activated input, where the
shape changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from sat_toolkit.activations.factory import ActivationSpec, create_activation
from sat_toolkit.data.info import DatasetInfo
from sat_toolkit.models.base import ModelBuilder, PositiveInt

BLOCKS_PER_STAGE = 2
STAGE_STRIDES = (1, 2, 2, 2)


class PreActBlock(nn.Module):
    """BN-act-conv3x3, BN-act-conv3x3, plus the identity (or a 1x1 projection)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, activation: ActivationSpec) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.act1 = create_activation(activation)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act2 = create_activation(activation)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.act2(self.bn2(out)))
        return out + shortcut


class PreActResNetBody(nn.Module):
    """Stem -> stages of :class:`PreActBlock` -> BN-act -> global pool -> linear.

    ``stage_widths``, ``strides`` and ``blocks`` describe the stages, so PreAct ResNet-18
    and Wide ResNet (:mod:`sat_toolkit.models.wide_resnet`) share this body.
    """

    def __init__(
        self,
        info: DatasetInfo,
        activation: ActivationSpec,
        stem_width: int,
        stage_widths: Sequence[int],
        strides: Sequence[int],
        blocks: int,
    ) -> None:
        super().__init__()
        self.stem = nn.Conv2d(info.channels, stem_width, 3, stride=1, padding=1, bias=False)
        stages: list[nn.Module] = []
        in_channels = stem_width
        for out_channels, stride in zip(stage_widths, strides, strict=True):
            layers = []
            for block in range(blocks):
                layers.append(PreActBlock(in_channels, out_channels, stride if block == 0 else 1, activation))
                in_channels = out_channels
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(in_channels)
        self.act = create_activation(activation)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(in_channels, info.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stages(self.stem(x))
        return self.head(self.pool(self.act(self.bn(out))))


class PreActResNet18(ModelBuilder):
    """PreAct ResNet-18 for small images.

    Args:
        width: channels of the first stage (64 in the paper; stages use 1, 2, 4, 8 x width).
    """

    name = "preact_resnet18"
    description = "PreAct ResNet-18 (He et al. 2016) with a 3x3 stem for small images; width multiplier"

    def __init__(self, width: PositiveInt = 64) -> None:
        self.width = width

    def params(self) -> dict[str, Any]:
        return {"width": self.width}

    def build_body(self, info: DatasetInfo, activation: ActivationSpec) -> nn.Module:
        widths = [self.width * 2**index for index in range(len(STAGE_STRIDES))]
        return PreActResNetBody(info, activation, self.width, widths, STAGE_STRIDES, BLOCKS_PER_STAGE)
