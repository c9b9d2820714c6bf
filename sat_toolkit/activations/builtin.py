"""The built-in activations: ReLU and the smooth family studied in the SAT paper.

Formulas follow PAPER.md. Each class is registered by name through the toolkit's own
entry point (``sat_toolkit.builtin.activations``), just as a third-party package would.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import nn

from sat_toolkit.activations import cpu_math
from sat_toolkit.activations.base import Activation
from sat_toolkit.params import Param

#: A positive ``alpha`` (a sharpness, or CELU's scale): 0 or less has no meaning.
Sharpness = Annotated[float, Param(gt=0)]


class ReLU(Activation):
    """max(x, 0): the non-smooth baseline."""

    name = "relu"
    description = "max(x, 0); gradient jumps from 0 to 1 at x = 0"
    smooth = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x)


class Softplus(Activation):
    """log(1 + e^x)."""

    name = "softplus"
    description = "log(1 + e^x)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cpu_math.softplus(x)


class ParametricSoftplus(Activation):
    """(1/alpha) log(1 + e^(alpha x)); gradient sigmoid(alpha x). Tends to ReLU as alpha grows.

    Args:
        alpha: sharpness; larger is closer to ReLU (the paper's default is 10).
    """

    name = "parametric_softplus"
    description = "(1/a) log(1 + e^(a x)), a = alpha (default 10)"

    def __init__(self, alpha: Sharpness = 10.0) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def hparams(self) -> dict[str, object]:
        return {"alpha": self.alpha}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cpu_math.softplus(x, beta=self.alpha)


class SiLU(Activation):
    """x * sigmoid(x) (Swish): the paper's best activation."""

    name = "silu"
    description = "x * sigmoid(x) (Swish)"
    also_known_as = ("swish",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x)


class GELU(Activation):
    """x * Phi(x); ``approximate="tanh"`` is the variant the official code uses.

    Args:
        approximate: 'none' for the exact Phi, 'tanh' for the official code's approximation.
    """

    name = "gelu"
    description = "x * Phi(x); approximate = 'none' (exact) or 'tanh'"

    def __init__(self, approximate: Literal["none", "tanh"] = "none") -> None:
        super().__init__()
        self.approximate = approximate

    def hparams(self) -> dict[str, object]:
        return {"approximate": self.approximate}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate=self.approximate)


class ELU(Activation):
    """x for x >= 0, alpha (e^x - 1) otherwise. Smooth only for alpha = 1.

    Args:
        alpha: the negative saturation value; only alpha = 1 gives a continuous gradient.
    """

    name = "elu"
    description = "x if x >= 0 else alpha (e^x - 1)"

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def hparams(self) -> dict[str, object]:
        return {"alpha": self.alpha}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cpu_math.elu(x, alpha=self.alpha)


class CELU(Activation):
    """max(0, x) + min(0, alpha (e^(x/alpha) - 1)): ELU made C1 for every alpha.

    Args:
        alpha: the negative saturation value (the gradient is continuous for every alpha).
    """

    name = "celu"
    description = "max(0, x) + min(0, alpha (e^(x/alpha) - 1))"

    def __init__(self, alpha: Sharpness = 1.0) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def hparams(self) -> dict[str, object]:
        return {"alpha": self.alpha}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cpu_math.elu(x, alpha=self.alpha, input_scale=1.0 / self.alpha)  # F.celu


class SmoothReLU(Activation):
    """x - (1/a) log(1 + a x) for x >= 0, else 0. Value and gradient are 0 at x = 0.

    The official SAT code learns ``a`` as ``b**2``; with ``learnable=True`` we do the same,
    with ``b`` initialised to ``sqrt(alpha)`` (the official ``b = 20`` is ``alpha = 400``).

    Args:
        alpha: sharpness a; larger is closer to ReLU.
        learnable: learn a during training (as b**2, as the official code does).
    """

    name = "smoothrelu"
    description = "x - log(1 + a x)/a for x >= 0 else 0; a = alpha, learnable optional"

    def __init__(self, alpha: Sharpness = 20.0, learnable: bool = False) -> None:
        super().__init__()
        self.learnable = bool(learnable)
        self._alpha_init = float(alpha)
        if self.learnable:
            self.b = nn.Parameter(torch.tensor(math.sqrt(alpha)))

    @property
    def alpha(self) -> torch.Tensor | float:
        """The current a: a python float when fixed (exact), b**2 when learnable."""
        return self.b * self.b if self.learnable else self._alpha_init

    def hparams(self) -> dict[str, object]:
        return {"alpha": self._alpha_init, "learnable": self.learnable}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha
        if isinstance(alpha, torch.Tensor):
            alpha = alpha.to(dtype=x.dtype)
        positive = x.clamp(min=0)
        # log1p keeps precision near 0; for large x the log term is tiny next to x.
        return positive - cpu_math.log1p_nonnegative(alpha * positive) / alpha


BUILTIN_ACTIVATIONS: list[type[Activation]] = [
    ReLU,
    Softplus,
    ParametricSoftplus,
    SiLU,
    GELU,
    ELU,
    CELU,
    SmoothReLU,
]
