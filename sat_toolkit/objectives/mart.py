"""MART (Wang et al., ICLR 2020): misclassification-aware adversarial training.

    BCE(f(x'), y) + beta * KL(f(x) || f(x')) * (1 - p_y(x))

``x'`` comes from the training attack (PGD on cross-entropy). The boosted cross-entropy
adds -log(1 - max_{j != y} p_j(x')) to CE, pushing down the strongest wrong class too; the
KL term is weighted by how *wrong* the clean prediction is, so misclassified examples,
which the paper shows matter most for robustness, get the strongest regulariser.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from sat_toolkit.errors import SatError
from sat_toolkit.objectives.base import Objective, ObjectiveLoss
from sat_toolkit.objectives.losses import kl_per_sample
from sat_toolkit.params import Param

#: Keeps log(1 - p) finite when the strongest wrong class holds all the probability.
_LOG_FLOOR = 1e-12


def boosted_cross_entropy(
    adv_logits: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """CE(f(x'), y) - mean log(1 - max_{j != y} p_j(x')): MART's BCE, averaged over the batch."""
    probs = F.softmax(adv_logits.float(), dim=1)
    strongest_wrong = probs.scatter(1, y.unsqueeze(1), float("-inf")).amax(dim=1)
    margin = -torch.log((1.0 - strongest_wrong).clamp_min(_LOG_FLOOR))
    return F.cross_entropy(adv_logits, y, label_smoothing=label_smoothing) + margin.mean()


class MART(Objective):
    """Boosted CE on the training attack's examples plus a misclassification-weighted KL.

    Args:
        beta: the weight of the KL term (lambda in the paper; 6 for CIFAR-10, as in the
            authors' code, where it is called beta).
    """

    name = "mart"
    description = "MART: boosted CE(f(x'), y) + beta * KL(f(x) || f(x')) * (1 - p_y(x)) (Wang et al. 2020)"

    def __init__(self, *, beta: Annotated[float, Param(ge=0)] = 6.0) -> None:
        self.beta = beta

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
            raise SatError("objective 'mart' needs the adversarial batch; the training attack returned none")
        clean_logits = model(x)
        adv_logits = model(x_adv)
        true_prob = F.softmax(clean_logits.float(), dim=1).gather(1, y.unsqueeze(1)).squeeze(1)
        robust = (kl_per_sample(clean_logits, adv_logits) * (1.0 - true_prob)).mean()
        loss = boosted_cross_entropy(adv_logits, y, label_smoothing) + self.beta * robust
        return ObjectiveLoss(loss, adv_logits)
