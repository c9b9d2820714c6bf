"""The activations themselves: plain ``nn.Module`` subclasses built from keyword parameters.

They subclass the toolkit's ``Activation`` for its ``hparams()``/``extra_repr`` helpers;
only the class attributes ``name``, ``description`` and ``smooth`` are required.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from sat_toolkit.activations import Activation
from sat_toolkit.params import Param


class Mish(Activation):
    """x * tanh(softplus(x)): smooth, non-monotonic, close to SiLU."""

    name = "mish"
    description = "x * tanh(softplus(x)) (Misra 2019)"
    smooth = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.mish(x)


class PSSiLU(Activation):
    """Parametric shifted SiLU, x * (sigmoid(alpha x) - beta) / (1 - beta) (Dai et al. 2021).

    beta = 0 and alpha = 1 is SiLU; beta shifts the gate down so negative inputs can give
    a larger negative response, which Dai et al. found helps adversarial training.
    """

    name = "pssilu"
    description = "x * (sigmoid(a x) - b) / (1 - b); a = alpha > 0, b = beta in [0, 1)"
    smooth = True

    def __init__(
        self,
        alpha: Annotated[float, Param(gt=0)] = 1.0,
        beta: Annotated[float, Param(ge=0, lt=1)] = 0.0,
        learnable: bool = False,
    ) -> None:
        super().__init__()
        self._init = {"alpha": float(alpha), "beta": float(beta), "learnable": bool(learnable)}
        # alpha = exp(log_alpha) keeps it positive while learning.
        log_alpha = torch.tensor(math.log(alpha))
        beta_t = torch.tensor(float(beta))
        if learnable:
            self.log_alpha = nn.Parameter(log_alpha)
            self.beta = nn.Parameter(beta_t)
        else:
            self.register_buffer("log_alpha", log_alpha, persistent=False)
            self.register_buffer("beta", beta_t, persistent=False)

    def hparams(self) -> dict[str, object]:
        return dict(self._init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.log_alpha.exp().to(x.dtype)
        beta = self.beta.clamp(0.0, 0.99).to(x.dtype)
        return x * (torch.sigmoid(alpha * x) - beta) / (1 - beta)
