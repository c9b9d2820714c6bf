"""MI-FGSM, the momentum iterative fast gradient sign method (Dong et al., CVPR 2018).

Iterated FGSM (PGD without a random start) follows the sign of the current gradient, so
on a curved loss surface its steps zig-zag and it overfits the model it attacks. MI-FGSM
accumulates a velocity of L1-normalised gradients and steps along the sign of that
velocity instead, which stabilises the direction; the paper introduced it to make
adversarial examples transfer better between models. With ``decay = 0`` and one step it
is exactly FGSM.

The class subclasses the toolkit's ``Attack``: ``perturb`` (validation, the model-state
guarantee, the attack phase) comes from the base, and only ``_perturb`` is written here.
The attack draws no random numbers, so it never needs ``self.generator``.
"""

from __future__ import annotations

from typing import Annotated, Any

import torch

from sat_toolkit.attacks import Attack, AttackResult, LossGradient, resolve_loss
from sat_toolkit.attacks.base import Model, Positive, Steps
from sat_toolkit.params import Param


class MIFGSM(Attack):
    """``g <- decay * g + grad / ||grad||_1``, then ``x <- proj(x + step_size * sign(g))``, ``steps`` times.

    Args:
        steps: number of iterations (>= 1).
        decay: momentum factor mu (>= 0; the paper uses 1.0, 0 gives iterated FGSM).
        step_size: step per iteration; default ``eps / steps``, so the last iterate can
            just reach the border of the ball, as in the paper.
        eps, norm, bn_mode, precision, loss_scale, seed: see ``sat_toolkit.attacks.Attack``
            (only ``"linf"`` is supported; ``seed`` is accepted for uniformity and unused).
    """

    name = "mifgsm"
    description = "momentum iterative FGSM (Dong et al. 2018): sign steps along accumulated gradients"
    supported_norms = ("linf",)

    def __init__(
        self,
        *,
        steps: Steps = 10,
        decay: Annotated[float, Param(ge=0)] = 1.0,
        step_size: Positive | None = None,
        **threat: Any,
    ) -> None:
        super().__init__(**threat)  # the threat model; values arrive typed and checked
        self.steps = steps
        self.decay = decay
        self.step_size = step_size
        self._loss = resolve_loss("ce", targeted=False)

    def _perturb(self, model: Model, x: torch.Tensor, y: torch.Tensor, eps: float) -> AttackResult:
        projection = self.projection_cls(x, eps)
        grad_fn = LossGradient(
            model, self._loss, self._precision, x.shape[0], x.device, self.bn_mode == "eval"
        )
        step = self.step_size if self.step_size is not None else eps / self.steps
        velocity = torch.zeros_like(x)
        x_adv = x.clone()
        for _ in range(self.steps):
            _, _, grad = grad_fn(x_adv, y, None)
            l1 = grad.abs().flatten(1).sum(1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
            velocity = velocity.mul_(self.decay).add_(grad / l1)
            x_adv = projection(velocity.sign().mul_(step).add_(x_adv))
        return AttackResult(x_adv=projection.finalize(x_adv).detach(), zero_grad=grad_fn.zero_grad, eps=eps)
