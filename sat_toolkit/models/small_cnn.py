"""``small_cnn``: a compact all-convolutional network for 8x8 digits and 28x28 Fashion-MNIST.

Stages of 3x3 conv-BN-activation blocks; each stage after the first starts with a
stride-2 convolution (not max-pooling, which is itself non-smooth and would undercut
the point of a smooth activation); global average pooling makes it size-agnostic. The
``fc`` head instead flattens the last feature map into the linear layer, as many
hand-written adversarial training scripts do: spatial position then reaches the
classifier, at the price of one input size. Small enough to train to high digits
accuracy in seconds on a CPU.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from sat_toolkit.activations.factory import ActivationSpec, create_activation
from sat_toolkit.data.info import DatasetInfo
from sat_toolkit.models.base import DropRate, ModelBuilder, PositiveInt


class ConvBNAct(nn.Sequential):
    """3x3 convolution (no bias: BN has one), batch norm, a fresh activation."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, activation: ActivationSpec) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = create_activation(activation)


class SmallCNNBody(nn.Module):
    """Stages of ``ConvBNAct`` blocks -> global average pool -> dropout -> linear."""

    def __init__(
        self,
        info: DatasetInfo,
        activation: ActivationSpec,
        width: int,
        depth: int,
        convs_per_stage: int,
        dropout: float,
        head: str = "pool",
    ) -> None:
        super().__init__()
        stages: list[nn.Module] = []
        in_channels = info.channels
        for stage in range(depth):
            out_channels = width * 2**stage
            blocks = []
            for block in range(convs_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                blocks.append(ConvBNAct(in_channels, out_channels, stride, activation))
                in_channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.features = nn.Sequential(*stages)
        features = in_channels
        if head == "pool":
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        else:  # each stride-2 stage maps a side n to ceil(n / 2) (3x3, padding 1)
            height, width_px = info.image_size
            for _ in range(depth - 1):
                height, width_px = -(-height // 2), -(-width_px // 2)
            self.pool = nn.Flatten()
            features = in_channels * height * width_px
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(features, info.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.pool(self.features(x))))


class SmallCNN(ModelBuilder):
    """A small CNN; channels double at each stage (``width``, ``2 width``, ...).

    Args:
        width: channels of the first stage.
        depth: number of stages; stages 2.. halve the resolution (8x8 -> 4 -> 2).
        convs_per_stage: conv-BN-activation blocks per stage.
        dropout: dropout rate before the linear head.
        head: ``pool`` (global average pooling, any input size) or ``fc`` (the flattened last
            feature map, for the dataset's image size only).
    """

    name = "small_cnn"
    description = "small conv-BN-act CNN with global pooling; for 8x8 digits and 28x28 Fashion-MNIST"

    def __init__(
        self,
        width: PositiveInt = 32,
        depth: PositiveInt = 3,
        convs_per_stage: PositiveInt = 2,
        dropout: DropRate = 0.0,
        head: Literal["pool", "fc"] = "pool",
    ) -> None:
        self.width = width
        self.depth = depth
        self.convs_per_stage = convs_per_stage
        self.dropout = dropout
        self.head = head

    def params(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "depth": self.depth,
            "convs_per_stage": self.convs_per_stage,
            "dropout": self.dropout,
            "head": self.head,
        }

    def build_body(self, info: DatasetInfo, activation: ActivationSpec) -> nn.Module:
        return SmallCNNBody(
            info, activation, self.width, self.depth, self.convs_per_stage, self.dropout, self.head
        )
