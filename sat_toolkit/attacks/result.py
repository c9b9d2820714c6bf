"""What an attack hands back."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch


@dataclasses.dataclass
class AttackResult:
    """The adversarial batch and what the attack learnt about it.

    Attributes:
        x_adv: adversarial examples, detached, inside the eps-ball and [0, 1].
        zero_grad: per sample, True if every input gradient the attack computed for it
            was exactly zero (None for gradient-free attacks).
        success: per sample, whether ``x_adv`` fools the model as the attack saw it
            (misclassified; for targeted PGD/FGSM: predicted as the target). None when
            the attack did not need a final evaluation (single-run PGD with
            ``evaluate=False``, the lean training path).
        loss: per sample, the attack's loss at ``x_adv`` (None when not evaluated).
        target: per sample target class of a targeted attack.
        eps: the budget used for this call.
        info: attack-specific extras (e.g. queries used by Square, per-member results
            of an ensemble).
    """

    x_adv: torch.Tensor
    zero_grad: torch.Tensor | None = None
    success: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    target: torch.Tensor | None = None
    eps: float = 0.0
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def zero_grad_fraction(self) -> float:
        """Fraction of samples whose input gradient was exactly zero throughout (NaN if no gradient).

        Computed on access, so the training loop pays no device synchronisation for it.
        """
        if self.zero_grad is None or self.zero_grad.numel() == 0:
            return math.nan
        return float(self.zero_grad.float().mean())

    @property
    def success_rate(self) -> float | None:
        """Fraction of samples the attack fooled, if it evaluated them."""
        if self.success is None:
            return None
        return float(self.success.float().mean()) if self.success.numel() else 0.0
