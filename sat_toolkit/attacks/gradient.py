"""The attacker's oracle: per-sample loss, logits and the gradient w.r.t. the input.

All forward/backward passes of the gradient attacks go through :class:`LossGradient`, so
precision handling lives in one place:

* ``fp32`` (default) disables any autocast the caller may be running under, so the
  attack is computed in full precision whatever the training step does;
* ``bf16`` runs the forward under autocast on the input's device (bf16 has fp32's
  exponent range, so gradients do not underflow and need no scaling);
* ``fp16`` does the same with loss scaling: fp16 gradients of a small loss underflow to
  exactly zero, which would look like gradient masking. The scale is static
  (``loss_scale``) but applied to the logit gradient normalised to a maximum of 1, see
  :meth:`LossGradient._scaled_input_grad`.

The loss is always evaluated on float32 logits. Gradients are taken with
``torch.autograd.grad`` w.r.t. the input only.
"""

from __future__ import annotations

import contextlib
import typing
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from sat_toolkit.attacks.losses import Loss

#: The attacker's forward-pass precision.
PrecisionName = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = typing.get_args(PrecisionName)
_AUTOCAST_DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _full_precision(device_type: str) -> contextlib.AbstractContextManager[object]:
    """Loss arithmetic is float32 whatever autocast the caller runs under."""
    return torch.autocast(device_type, enabled=False)


class Precision:
    """How the attacker's forward passes are computed."""

    def __init__(self, mode: str = "fp32", loss_scale: float = 1024.0) -> None:
        if mode not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {mode!r}")
        self.mode = mode
        self.loss_scale = float(loss_scale) if mode == "fp16" else 1.0

    def autocast(self, device_type: str) -> contextlib.AbstractContextManager[object]:
        if self.mode == "fp32":
            return torch.autocast(device_type, enabled=False)
        return torch.autocast(device_type, dtype=_AUTOCAST_DTYPE[self.mode])

    def __repr__(self) -> str:
        return f"Precision({self.mode!r}, loss_scale={self.loss_scale})"


class LossGradient:
    """Evaluates ``loss(model(x), y, target)`` per sample and its input gradient.

    Also records, per sample of the full batch, whether any gradient it returned was
    non-zero; a sample whose gradient is exactly zero at every evaluation gives a
    gradient attacker nothing to follow (the classic gradient-masking symptom).
    """

    def __init__(
        self,
        model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
        loss: Loss,
        precision: Precision,
        batch_size: int,
        device: torch.device,
        independent: bool = True,
    ) -> None:
        self.model = model
        self.independent = independent
        self.loss = loss
        self.precision = precision
        self.device_type = device.type
        self.nonzero = torch.zeros(batch_size, dtype=torch.bool, device=device)
        self.evaluations = 0

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, index: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss [B], logits [B, C], grad like x) at ``x``; ``index`` maps rows to the full batch."""
        leaf = x.detach().requires_grad_(True)
        with torch.enable_grad():
            with self.precision.autocast(self.device_type):
                logits = self.model(leaf)
            with _full_precision(self.device_type):
                logits = logits.float()
                loss = self.loss(logits, y, target)
                if self.precision.mode == "fp16":
                    grad = self._scaled_input_grad(leaf, logits, loss)
                else:
                    (grad,) = torch.autograd.grad(loss.sum(), leaf)
        nonzero = grad.flatten(1).ne(0).any(dim=1)
        if index is None:
            self.nonzero |= nonzero
        else:
            self.nonzero[index] |= nonzero
        self.evaluations += 1
        return loss.detach(), logits.detach(), grad

    def _scaled_input_grad(
        self, leaf: torch.Tensor, logits: torch.Tensor, loss: torch.Tensor
    ) -> torch.Tensor:
        """Input gradient through an fp16 network without underflow.

        The loss gradient w.r.t. the (float32) logits is computed first and rescaled so its
        largest entry is ``loss_scale`` (per sample when samples are independent, i.e.
        BatchNorm in eval mode; per batch otherwise, so batch-coupled gradients stay
        exact). The fp16 backward pass then carries well-scaled numbers, and the input
        gradient is unscaled in float32. A confidently classified sample has a logit
        gradient of 1e-8 or less, which a flat scale would leave to underflow to zero.
        """
        (grad_logits,) = torch.autograd.grad(loss.sum(), logits, retain_graph=True)
        peak = (
            grad_logits.abs().amax(dim=1)
            if self.independent
            else grad_logits.abs().amax().expand(len(grad_logits))
        )
        scale = self.precision.loss_scale / peak.clamp_min(1e-30)
        (grad,) = torch.autograd.grad(logits, leaf, grad_outputs=grad_logits * scale.unsqueeze(1))
        return grad.div_(scale.view(-1, *([1] * (grad.dim() - 1))).to(grad.dtype))

    @torch.no_grad()
    def evaluate(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits) without a gradient: for the final iterate, where none is needed."""
        with self.precision.autocast(self.device_type):
            logits = self.model(x)
        with _full_precision(self.device_type):
            logits = logits.float()
            return self.loss(logits, y, target), logits

    @property
    def zero_grad(self) -> torch.Tensor | None:
        """Per sample: True if every gradient evaluated for it was exactly zero."""
        return ~self.nonzero if self.evaluations else None


@torch.no_grad()
def predict(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, precision: Precision
) -> torch.Tensor:
    """Float32 logits of ``model`` at ``x``, without a graph."""
    with precision.autocast(x.device.type):
        logits = model(x)
    return logits.float()
