"""Training metrics between two log points, kept on the device and reduced over all
processes when logged, and the divergence guard that reads them.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn

from sat_toolkit.errors import SatError


@dataclasses.dataclass(frozen=True)
class LossCheck:
    """What :meth:`TrainingWindow.check_loss` found, agreed over all processes."""

    last_loss: float  # the last micro-batch's loss, averaged over the processes
    bad_step: int | None  # the optimiser step of the first non-finite loss, or None
    bad_loss: float  # that loss (NaN or inf); NaN when there was none


class TrainingWindow:
    """Running training metrics between two log points (cheap: no extra forward passes).

    :meth:`add` runs once per micro-batch and only queues a few tiny device operations, so
    the training loop never waits for the device between log points; :meth:`flush` and
    :meth:`check_loss` are where numbers come back to the host, one transfer each. A
    non-finite loss is remembered on the device (the first one, and its step) until
    :meth:`check_loss` looks, which the trainer does at every log window and before every
    checkpoint: late enough to cost nothing, early enough that no checkpoint follows it.
    """

    def __init__(self) -> None:
        self._sums: torch.Tensor | None = None  # loss, attack loss, correct (summed over samples)
        self.count = 0  # samples, known on the host
        self.num_classes = 0  # known from the first batch's logits
        self._bad: torch.Tensor | None = None  # a non-finite loss was seen
        self._bad_loss: torch.Tensor | None = None
        self._bad_step: torch.Tensor | None = None
        self._last_loss: torch.Tensor | None = None

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, step: int) -> None:
        """Record one micro-batch of optimiser step ``step``; never synchronises."""
        loss = loss.detach().double()
        count = len(y)
        # The attacker's objective (plain cross-entropy) at the adversarial examples, as the
        # training model scores them; differs from the loss only by label smoothing.
        attack_loss = F.cross_entropy(logits.detach().float(), y).double()
        correct = (logits.detach().argmax(1) == y).sum().double()
        row = torch.stack([loss * count, attack_loss * count, correct])
        if self._sums is None:
            self._sums = torch.zeros_like(row)
        if self._bad is None:
            self._bad = torch.zeros((), dtype=torch.bool, device=loss.device)
            self._bad_loss = torch.full((), math.nan, dtype=torch.float64, device=loss.device)
            self._bad_step = torch.zeros((), dtype=torch.float64, device=loss.device)
        self._sums += row
        self.count += count
        self.num_classes = logits.shape[-1]
        first = ~torch.isfinite(loss) & ~self._bad
        self._bad_loss = torch.where(first, loss, self._bad_loss)
        self._bad_step = torch.where(first, float(step), self._bad_step)
        self._bad |= first
        self._last_loss = loss

    def check_loss(self, accelerator: Accelerator) -> LossCheck:
        """The last loss and the first non-finite one, over all processes; every process calls it."""
        device = accelerator.device
        if self._bad is None:
            mine = torch.tensor([math.nan, 0.0, math.nan, 0.0], dtype=torch.float64, device=device)
        else:
            mine = torch.stack([self._last_loss, self._bad.double(), self._bad_loss, self._bad_step])
        rows = accelerator.gather(mine.to(device).unsqueeze(0)).view(-1, 4).tolist()
        last = sum(row[0] for row in rows) / len(rows)
        bad = [row for row in rows if row[1]]
        if not bad:
            return LossCheck(last, None, math.nan)
        first = min(bad, key=lambda row: row[3])
        return LossCheck(last, int(first[3]), first[2])

    def flush(
        self, accelerator: Accelerator, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> dict[str, float]:
        """Averages since the last flush (over all processes), plus clean accuracy on this batch."""
        was_training = model.training
        model.eval()
        with torch.no_grad():
            clean = (model(x).argmax(1) == y).double().mean()
        model.train(was_training)
        device = accelerator.device
        sums = self._sums if self._sums is not None else torch.zeros(3, dtype=torch.float64, device=device)
        count = torch.tensor([float(self.count)], dtype=torch.float64, device=device)
        totals = torch.cat([sums.to(device), count, clean.to(device).view(1)])
        loss_sum, attack_loss_sum, correct, count, clean_sum = accelerator.reduce(totals, "sum").tolist()
        self._sums, self.count = None, 0
        count = max(count, 1.0)
        return {
            "loss": loss_sum / count,
            "attack_loss": attack_loss_sum / count,
            "adv_accuracy": correct / count,
            "clean_accuracy": clean_sum / accelerator.num_processes,
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
