"""ReLU forward, smooth backward: the paper's gradient-only study (PAPER.md, Result 1).

:class:`SmoothGradientReLU` computes exactly ``relu(x)`` in the forward pass. In the
backward pass it uses the gradient of a smooth activation (parametric softplus with
alpha = 10 by default, or any registered smooth activation) for the phases it is enabled
for: the attacker's backward passes (inside :func:`sat_toolkit.phase.attack_phase`), the
optimiser's (everything else), or both. The phase is read when the forward pass builds
the autograd graph, so it belongs to the graph, not to whichever thread runs backward.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sat_toolkit.activations.base import Activation
from sat_toolkit.activations.builtin import ParametricSoftplus
from sat_toolkit.phase import Phase, current_phase, surrogate_gradients_enabled


def _smooth_gradient(smooth_fn: nn.Module, x: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    """grad_out * d smooth_fn(x) / dx, with a closed form where we have one."""
    if isinstance(smooth_fn, ParametricSoftplus):
        return grad_out * torch.sigmoid(smooth_fn.alpha * x)
    with torch.enable_grad():
        leaf = x.detach().requires_grad_(True)
        (grad_in,) = torch.autograd.grad(smooth_fn(leaf), leaf, grad_out)
    return grad_in


class _ReLUWithSmoothGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, smooth_fn: nn.Module) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.smooth_fn = smooth_fn
        return torch.relu(x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        return _smooth_gradient(ctx.smooth_fn, x, grad_out), None


def _smooth_activation(smooth: str, params: dict[str, Any]) -> tuple[type[nn.Module], dict[str, Any]]:
    """The activation ``smooth`` names and ``params`` checked against it; one-line errors
    filed under ``smooth`` or ``smooth_params``."""
    from sat_toolkit.activations.factory import resolve_activation
    from sat_toolkit.errors import SatError
    from sat_toolkit.plugins.instantiate import checked_parameters

    try:
        smooth_cls = resolve_activation(smooth)
    except SatError as exc:
        raise SatError(f"smooth: {exc.message}") from None
    if not getattr(smooth_cls, "smooth", False):
        raise SatError(
            f"smooth: {smooth!r} is not a smooth activation; pick one whose 'smooth' flag is true "
            "(see 'sat-toolkit activations')"
        )
    try:
        return checked_parameters("activation", {"name": smooth, **params})
    except SatError as exc:
        raise SatError(f"smooth_params: {exc.message}") from None


class SmoothGradientReLU(Activation):
    """Forward: ReLU, bit for bit. Backward: a smooth activation's gradient where enabled.

    Args:
        smooth: registry name of the smooth activation whose gradient is used.
        smooth_params: keyword parameters for it (default ``{"alpha": 10}`` for
            ``parametric_softplus``).
        attacker: use the smooth gradient in the attacker's backward passes.
        optimizer: use the smooth gradient in the optimiser's backward passes.
    """

    name = "relu_smooth_grad"
    description = "ReLU forward; smooth gradient for the attacker and/or the optimiser"
    smooth = False

    def __init__(
        self,
        smooth: str = "parametric_softplus",
        smooth_params: dict[str, Any] | None = None,
        attacker: bool = True,
        optimizer: bool = True,
    ) -> None:
        super().__init__()
        if smooth_params is None and smooth == "parametric_softplus":
            smooth_params = {"alpha": 10.0}
        smooth_cls, typed = _smooth_activation(smooth, smooth_params or {})
        self.smooth_name = smooth
        self.smooth_params = dict(smooth_params or {})
        self.smooth_fn = smooth_cls(**typed)
        self.attacker = bool(attacker)
        self.optimizer = bool(optimizer)

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """The nested activation, checked with the recipe (a misspelt or uninstalled ``smooth``
        passed validation and stopped the run when it built the model)."""
        smooth = params.get("smooth", "parametric_softplus")
        smooth_params = params.get("smooth_params")
        if smooth_params is None and smooth == "parametric_softplus":
            smooth_params = {"alpha": 10.0}
        _smooth_activation(smooth, smooth_params or {})

    def hparams(self) -> dict[str, object]:
        return {
            "smooth": self.smooth_name,
            "smooth_params": self.smooth_params,
            "attacker": self.attacker,
            "optimizer": self.optimizer,
        }

    def uses_smooth_gradient(self, phase: Phase) -> bool:
        """Whether a graph built in ``phase`` back-propagates the smooth gradient
        (never inside :func:`sat_toolkit.phase.true_gradients`)."""
        if not surrogate_gradients_enabled():
            return False
        return self.attacker if phase is Phase.ATTACK else self.optimizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and x.requires_grad):
            return torch.relu(x)
        if self.uses_smooth_gradient(current_phase()):
            return _ReLUWithSmoothGradient.apply(x, self.smooth_fn)
        return torch.relu(x)
