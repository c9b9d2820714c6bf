"""Training metrics between two log points, reduced over all processes when logged."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn


class TrainingWindow:
    """Running training metrics between two log points (cheap: no extra forward passes)."""

    def __init__(self) -> None:
        self.loss_sum = 0.0
        self.attack_loss_sum = 0.0
        self.correct = 0
        self.count = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss_sum += float(loss) * len(y)
        # The attacker's objective (plain cross-entropy) at the adversarial examples, as the
        # training model scores them; differs from the loss only by label smoothing.
        self.attack_loss_sum += float(F.cross_entropy(logits.float(), y)) * len(y)
        self.correct += int((logits.argmax(1) == y).sum())
        self.count += len(y)

    def flush(
        self, accelerator: Accelerator, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> dict[str, float]:
        """Averages since the last flush (over all processes), plus clean accuracy on this batch."""
        totals = torch.tensor(
            [self.loss_sum, self.attack_loss_sum, self.correct, self.count],
            device=accelerator.device,
            dtype=torch.float64,
        )
        totals = accelerator.reduce(totals, reduction="sum")
        was_training = model.training
        model.eval()
        with torch.no_grad():
            clean = (model(x).argmax(1) == y).float().mean()
        model.train(was_training)
        clean = accelerator.reduce(clean, reduction="mean")
        self.loss_sum, self.attack_loss_sum, self.correct, self.count = 0.0, 0.0, 0, 0
        count = max(float(totals[3]), 1.0)
        return {
            "loss": float(totals[0]) / count,
            "attack_loss": float(totals[1]) / count,
            "adv_accuracy": float(totals[2]) / count,
            "clean_accuracy": float(clean),
        }
