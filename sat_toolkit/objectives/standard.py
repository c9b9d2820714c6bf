"""PGD adversarial training (Madry et al.) and standard (clean) training."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sat_toolkit.attacks.result import AttackResult
from sat_toolkit.objectives.base import Objective, ObjectiveLoss


class PGDAT(Objective):
    """Cross-entropy on the training attack's examples: min_w E max_{x'} CE(f(x'), y).

    SAT's objective: the paper trains every model this way, with PGD-1 as the attacker.
    """

    name = "pgd_at"
    description = "cross-entropy on the training attack's examples (Madry et al.; SAT's objective)"

    def loss(
        self,
        model: nn.Module,
        x: torch.Tensor,
        x_adv: torch.Tensor | None,
        y: torch.Tensor,
        *,
        label_smoothing: float = 0.0,
    ) -> ObjectiveLoss:
        logits = model(x if x_adv is None else x_adv)
        return ObjectiveLoss(F.cross_entropy(logits, y, label_smoothing=label_smoothing), logits)


class Standard(Objective):
    """Clean training: cross-entropy on the clean batch, no attack.

    The baseline a study puts adversarial training beside, and what the benchmarks measure
    adversarial training's cost against. The recipe's training attack still defines the
    threat model that validation and evaluation measure.
    """

    name = "standard"
    description = "standard training: cross-entropy on clean images, no attack"
    uses_attack = False

    def adversarial_examples(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Any, eps: float | None
    ) -> AttackResult | None:
        return None

    def loss(
        self,
        model: nn.Module,
        x: torch.Tensor,
        x_adv: torch.Tensor | None,
        y: torch.Tensor,
        *,
        label_smoothing: float = 0.0,
    ) -> ObjectiveLoss:
        logits = model(x)
        return ObjectiveLoss(F.cross_entropy(logits, y, label_smoothing=label_smoothing), logits)
