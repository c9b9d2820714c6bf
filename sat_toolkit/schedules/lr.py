"""Learning-rate schedules: constant, step, multistep, cosine and one-cycle.

All but one-cycle take the shared linear warm-up (``warmup_steps`` or
``warmup_fraction``, see :class:`~sat_toolkit.schedules.base.WarmupSchedule`); one-cycle
has its own rising phase. Milestones and periods are fractions of the whole run,
warm-up included, so the paper's ResNet recipe (100 epochs, 5 of warm-up, x0.1 at
30/60/90) is ``multistep`` with ``milestones = [0.3, 0.6, 0.9]`` and
``warmup_fraction = 0.05`` whatever the epoch count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sat_toolkit.schedules.base import Schedule, WarmupSchedule, check_float, to_steps


class ConstantSchedule(WarmupSchedule):
    """``base`` throughout (after the optional warm-up). Fine for epsilon too."""

    name = "constant"
    description = "base value throughout, after an optional linear warm-up"

    def _after_warmup(self, step: int, total_steps: int, base: float, warmup: int) -> float:
        return base


class StepSchedule(WarmupSchedule):
    """``base * gamma ** (step // P)`` with ``P = max(1, to_steps(period, total_steps))``."""

    name = "step"
    description = "multiply by gamma every `period` (fraction of training)"
    targets = ("lr",)

    def __init__(
        self, period: float = 0.3, gamma: float = 0.1, warmup_steps: int = 0, warmup_fraction: float = 0.0
    ) -> None:
        super().__init__(warmup_steps=warmup_steps, warmup_fraction=warmup_fraction)
        self.period = check_float("period", period, gt=0.0, le=1.0)
        self.gamma = check_float("gamma", gamma, gt=0.0)

    def _after_warmup(self, step: int, total_steps: int, base: float, warmup: int) -> float:
        period_steps = max(1, to_steps(self.period, total_steps))
        return base * self.gamma ** (step // period_steps)

    def hparams(self) -> dict[str, object]:
        return {"period": self.period, "gamma": self.gamma, **super().hparams()}


class MultiStepSchedule(WarmupSchedule):
    """``base * gamma ** k``, ``k`` = number of milestones reached.

    Milestone ``m`` (a fraction of training, strictly increasing in (0, 1)) is reached
    at step ``to_steps(m, total_steps)`` (nearest step): that step already uses the lower value.
    """

    name = "multistep"
    description = "multiply by gamma at each milestone (fractions of training)"
    targets = ("lr",)

    def __init__(
        self,
        milestones: Sequence[float] = (0.5, 0.75),
        gamma: float = 0.1,
        warmup_steps: int = 0,
        warmup_fraction: float = 0.0,
    ) -> None:
        super().__init__(warmup_steps=warmup_steps, warmup_fraction=warmup_fraction)
        if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Sequence) or not milestones:
            raise ValueError(f"milestones must be a non-empty list of fractions, got {milestones!r}")
        values = [check_float("milestones", m, gt=0.0, lt=1.0) for m in milestones]
        if any(b <= a for a, b in zip(values[:-1], values[1:], strict=True)):
            raise ValueError(f"milestones must be strictly increasing, got {list(milestones)}")
        self.milestones = tuple(values)
        self.gamma = check_float("gamma", gamma, gt=0.0)

    def _after_warmup(self, step: int, total_steps: int, base: float, warmup: int) -> float:
        reached = sum(step >= to_steps(m, total_steps) for m in self.milestones)
        return base * self.gamma**reached

    def hparams(self) -> dict[str, object]:
        return {"milestones": list(self.milestones), "gamma": self.gamma, **super().hparams()}


class CosineSchedule(WarmupSchedule):
    """Half a cosine from ``base`` down to ``floor`` over the steps after the warm-up.

    With ``W`` warm-up steps and ``t = (step - W) / (total_steps - W)``:
    ``floor + (base - floor) * (1 + cos(pi * t)) / 2``. So step ``W`` gets ``base``, the
    half-way step gets ``(base + floor) / 2`` and ``floor`` is reached at ``total_steps``.
    ``floor`` is absolute (like PyTorch's ``eta_min``).
    """

    name = "cosine"
    description = "cosine decay from base to `floor` after the warm-up"
    targets = ("lr",)

    def __init__(self, floor: float = 0.0, warmup_steps: int = 0, warmup_fraction: float = 0.0) -> None:
        super().__init__(warmup_steps=warmup_steps, warmup_fraction=warmup_fraction)
        self.floor = check_float("floor", floor, ge=0.0)

    def _after_warmup(self, step: int, total_steps: int, base: float, warmup: int) -> float:
        t = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return self.floor + (base - self.floor) * (1.0 + math.cos(math.pi * t)) / 2.0

    def hparams(self) -> dict[str, object]:
        return {"floor": self.floor, **super().hparams()}


class OneCycleSchedule(Schedule):
    """Smith's one-cycle policy with cosine annealing in both phases.

    ``start = base / div_factor`` rises to ``base`` at step ``U = pct_start *
    total_steps``, then falls to ``start / final_div_factor`` at ``total_steps``:
    ``start + (base - start) * (1 - cos(pi * step / U)) / 2`` before ``U`` and
    ``end + (base - end) * (1 + cos(pi * (step - U) / (total_steps - U))) / 2`` after.
    """

    name = "one_cycle"
    description = "rise from base/div_factor to base, then anneal far below (cosine)"
    targets = ("lr",)

    def __init__(
        self, pct_start: float = 0.3, div_factor: float = 25.0, final_div_factor: float = 1e4
    ) -> None:
        self.pct_start = check_float("pct_start", pct_start, gt=0.0, lt=1.0)
        self.div_factor = check_float("div_factor", div_factor, ge=1.0)
        self.final_div_factor = check_float("final_div_factor", final_div_factor, ge=1.0)

    def _value(self, step: int, total_steps: int, base: float) -> float:
        start = base / self.div_factor
        end = start / self.final_div_factor
        rise = self.pct_start * total_steps
        if step < rise:
            return start + (base - start) * (1.0 - math.cos(math.pi * step / rise)) / 2.0
        t = min(1.0, (step - rise) / (total_steps - rise))
        return end + (base - end) * (1.0 + math.cos(math.pi * t)) / 2.0

    def hparams(self) -> dict[str, object]:
        return {
            "pct_start": self.pct_start,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
        }
