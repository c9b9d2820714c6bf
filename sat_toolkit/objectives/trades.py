"""TRADES (Zhang et al., ICML 2019): trade clean accuracy against smoothness of the logits.

    min_w  CE(f(x), y) + beta * max_{x' in ball(x)} KL(f(x) || f(x'))

The inner maximisation is PGD on the KL term from x + 0.001 N(0, 1) (not the training
attack's own loss): it looks for the point where the prediction *changes most*, not where
the label is lost. It borrows the training attack's threat model and iteration budget
(eps, norm, steps, step size, BatchNorm mode, precision), so ``[attack.train]`` still says
how strong the attacker is and ``--set attack.train.steps=10`` works as for PGD-AT.
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
import torch.nn.functional as F
from torch import nn

from sat_toolkit.attacks.gradient import LossGradient, Precision, predict
from sat_toolkit.attacks.losses import Loss
from sat_toolkit.attacks.result import AttackResult
from sat_toolkit.attacks.state import preserve_model_state
from sat_toolkit.attacks.steps import DEFAULT_STEP_RULE, STEP_RULES
from sat_toolkit.errors import SatError
from sat_toolkit.objectives.base import Objective, ObjectiveLoss
from sat_toolkit.objectives.losses import kl_per_sample
from sat_toolkit.params import Param
from sat_toolkit.phase import attack_phase

#: The standard deviation of TRADES' random start, in [0, 1] pixel units.
START_STD = 0.001


def _kl_to_clean(
    adv_logits: torch.Tensor, y: torch.Tensor, clean_logits: torch.Tensor | None
) -> torch.Tensor:
    assert clean_logits is not None  # the clean logits travel in the loss's target slot
    return kl_per_sample(clean_logits, adv_logits)


_KL_LOSS = Loss(_kl_to_clean, description="KL(f(x) || f(x')) against the clean logits")


class TRADES(Objective):
    """CE on clean images plus ``beta`` times the KL to the worst point of the ball.

    Args:
        beta: the weight of the robustness term (6 in the paper; 1 trades robustness for
            clean accuracy).
    """

    name = "trades"
    description = "TRADES: CE(f(x), y) + beta * KL(f(x) || f(x')), x' from KL-PGD (Zhang et al. 2019)"

    def __init__(self, *, beta: Annotated[float, Param(ge=0)] = 6.0) -> None:
        self.beta = beta

    @staticmethod
    def attack_problem(attack_cls: type) -> str | None:
        """Why TRADES cannot borrow this training attack's iteration budget, or None when it can."""
        if callable(getattr(attack_cls, "resolved_step_size", None)):
            return None
        name = getattr(attack_cls, "name", attack_cls.__name__)
        return (
            f"objective 'trades' runs PGD on its KL loss with the training attack's eps, steps and "
            f"step size; attack '{name}' is not step-based: use 'pgd' or 'fgsm'"
        )

    def adversarial_examples(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Any, eps: float | None
    ) -> AttackResult:
        budget = float(attack.eps if eps is None else eps)
        x, y = x.detach(), y.detach()
        precision = Precision(attack.precision, getattr(attack, "loss_scale", 1024.0))
        step_rule = STEP_RULES.get(
            getattr(attack, "step_rule", None) or DEFAULT_STEP_RULE.get(attack.norm, "sign")
        )
        step = attack.resolved_step_size(budget)
        projection = attack.projection_cls(x, budget)
        generator = attack.generator(x.device) if hasattr(attack, "generator") else None
        with torch.inference_mode(False), preserve_model_state(model, attack.bn_mode), attack_phase():
            clean_logits = predict(model, x, precision)
            grad_fn = LossGradient(model, _KL_LOSS, precision, x.shape[0], x.device, attack.bn_mode == "eval")
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x_adv = projection(x + START_STD * noise)
            for _ in range(attack.steps):
                _, _, grad = grad_fn(x_adv, y, clean_logits)
                x_adv = projection(step_rule(grad, step).add_(x_adv))
        return AttackResult(
            x_adv=projection.finalize(x_adv).detach(), zero_grad=grad_fn.zero_grad, eps=budget
        )

    def loss(
        self,
        model: nn.Module,
        x: torch.Tensor,
        x_adv: torch.Tensor | None,
        y: torch.Tensor,
        *,
        label_smoothing: float = 0.0,
    ) -> ObjectiveLoss:
        if x_adv is None:
            raise SatError(
                "objective 'trades' needs the adversarial batch; its inner maximisation returned none"
            )
        clean_logits = model(x)
        adv_logits = model(x_adv)
        natural = F.cross_entropy(clean_logits, y, label_smoothing=label_smoothing)
        robust = kl_per_sample(clean_logits, adv_logits).mean()
        return ObjectiveLoss(natural + self.beta * robust, adv_logits)
