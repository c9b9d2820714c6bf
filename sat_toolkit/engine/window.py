"""Training metrics between two log points, reduced over all processes when logged, and the
divergence guard that reads them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn

from sat_toolkit.errors import SatError


class TrainingWindow:
    """Running training metrics between two log points (cheap: no extra forward passes)."""

    def __init__(self) -> None:
        self.loss_sum = 0.0
        self.attack_loss_sum = 0.0
        self.correct = 0
        self.count = 0
        self.num_classes = 0  # known from the first batch's logits

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss_sum += float(loss) * len(y)
        # The attacker's objective (plain cross-entropy) at the adversarial examples, as the
        # training model scores them; differs from the loss only by label smoothing.
        self.attack_loss_sum += float(F.cross_entropy(logits.float(), y)) * len(y)
        self.correct += int((logits.argmax(1) == y).sum())
        self.count += len(y)
        self.num_classes = logits.shape[-1]

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


class DivergenceError(SatError):
    """The training loss rose far above its early level and ``train.divergence = "stop"``."""


class DivergenceGuard:
    """Tells a run that trains on with a finite but exploding loss from one that is learning.

    A NaN stops a run by itself; a loss that climbs to thousands while staying finite would
    otherwise finish, export and exit 0. The rule, applied to each logged window's mean
    training loss after the learning-rate warm-up:

    * the early level is the mean of the first ``REFERENCE_WINDOWS`` windows after warm-up;
    * the chance level is ``ln(num_classes)``, the loss of a uniform guess;
    * a window has diverged when its loss exceeds ``max(chance, factor * min(early, chance))``:
      ``factor`` times the early level, but never less than the chance level (a tiny early
      loss rising a little is noise, not divergence) and at most ``factor`` times the chance
      level (so a run that is already lost at the end of warm-up is still caught).

    The early windows live in the train state (``loss_reference``), so a resumed run
    compares with the same level. The windows are reduced over all processes, so every rank
    reaches the same verdict.
    """

    REFERENCE_WINDOWS = 3

    def __init__(self, factor: float, warmup_steps: int) -> None:
        self.factor = factor
        self.warmup_steps = warmup_steps

    def check(self, reference: list[float], step: int, loss: float, num_classes: int) -> tuple[str, str]:
        """``("early", "")`` while warming up or recording the early windows (into ``reference``),
        ``("ok", "")`` for a judged window within bounds, ``("diverged", why)`` otherwise.
        """
        if step <= self.warmup_steps or not math.isfinite(loss):
            return "early", ""  # non-finite losses stop the run elsewhere, with their own message
        if len(reference) < self.REFERENCE_WINDOWS:
            reference.append(loss)
            return "early", ""
        early = sum(reference) / len(reference)
        chance = math.log(max(num_classes, 2))
        threshold = max(chance, self.factor * min(early, chance))
        if loss <= threshold:
            return "ok", ""
        if early > chance:
            bound = f"{self.factor:g} x the chance level ln({num_classes}); the early level was {early:.4g}"
        elif threshold == chance:
            bound = f"the chance level ln({num_classes}), and {self.factor:g} x its early level {early:.4g}"
        else:
            bound = f"{self.factor:g} x its early level {early:.4g}"
        return "diverged", f"the training loss is {loss:.4g}, above {threshold:.4g} ({bound})"
