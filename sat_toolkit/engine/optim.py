"""Optimisers as the SAT recipes use them.

The official ResNet recipe applies weight decay to conv/fc weights only; timm's
``param_groups_weight_decay`` already splits 1-d parameters (norm scales, biases) out, so
we use it rather than re-implementing the split.
"""

from __future__ import annotations

import torch
from timm.optim import param_groups_weight_decay
from torch import nn

from sat_toolkit.errors import SatError

OPTIMIZERS = ("sgd", "adamw")


def build_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    nesterov: bool = True,
    betas: tuple[float, float] = (0.9, 0.999),
    exclude_norm_and_bias_from_weight_decay: bool = True,
) -> torch.optim.Optimizer:
    """SGD (Nesterov by default, as the official code) or AdamW over ``model``'s parameters."""
    if exclude_norm_and_bias_from_weight_decay and weight_decay > 0:
        params = param_groups_weight_decay(model, weight_decay=weight_decay)
    else:
        params = [
            {"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}
        ]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas)
    raise SatError(f"optimizer.name: unknown optimiser '{name}'; choose one of {', '.join(OPTIMIZERS)}")
