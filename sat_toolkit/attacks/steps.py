"""Step rules: turn an input gradient into an ascent step of a given size.

A step rule maps ``(grad, size)`` to the step; ``size`` is a float or a per-sample
tensor shaped to broadcast (APGD halves step sizes sample by sample). Rules may reuse
``grad``'s memory: the gradient is the attack's own temporary, and saving an
allocation per step keeps the hot loop as lean as a hand-written one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from sat_toolkit.attacks.registry import Registry

StepRule = Callable[[torch.Tensor, "float | torch.Tensor"], torch.Tensor]

STEP_RULES: Registry[StepRule] = Registry("step rule")


def sign_step(grad: torch.Tensor, size: float | torch.Tensor) -> torch.Tensor:
    """size * sign(grad): steepest ascent for the L-infinity norm."""
    return grad.sign_().mul_(size)


def l2_step(grad: torch.Tensor, size: float | torch.Tensor) -> torch.Tensor:
    """size * grad / ||grad||_2: steepest ascent for the L2 norm (zero gradient -> zero step)."""
    norms = grad.flatten(1).norm(dim=1).clamp_min_(1e-12)
    scale = size / norms.view(-1, *([1] * (grad.dim() - 1)))
    return grad.mul_(scale)


STEP_RULES.register("sign", sign_step)
STEP_RULES.register("l2", l2_step)

#: The step rule each norm uses unless a recipe says otherwise.
DEFAULT_STEP_RULE = {"linf": "sign", "l2": "l2"}
