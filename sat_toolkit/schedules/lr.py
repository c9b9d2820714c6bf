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
from typing import Annotated, Any

from sat_toolkit.params import Param
from sat_toolkit.schedules.base import Schedule, StepCount, WarmupFraction, WarmupSchedule, to_steps

#: A multiplier applied at each decay.
Gamma = Annotated[float, Param(gt=0)]


class ConstantSchedule(WarmupSchedule):
    """``base`` throughout (after the optional warm-up). Fine for epsilon too."""

    name = "constant"
    description = "base value throughout, after an optional linear warm-up"

    def _after_warmup(self, step: int, total_steps: int, base: float, warmup: int) -> float:
        return base


class StepSchedule(WarmupSchedule):
    """``base * gamma ** (step // P)`` with ``P = max(1, to_steps(period, total_steps))``.

    Args:
        period: steps between decays, as a fraction of all steps.
        gamma: the factor applied at each decay.
    """

    name = "step"
    description = "multiply by gamma every `period` (fraction of training)"
    targets = ("lr",)

    def __init__(
        self,
        period: Annotated[float, Param(gt=0, le=1)] = 0.3,
        gamma: Gamma = 0.1,
        warmup_steps: StepCount = 0,
        warmup_fraction: WarmupFraction = 0.0,
    ) -> None:
        super().__init__(warmup_steps=warmup_steps, warmup_fraction=warmup_fraction)
        self.period = period
        self.gamma = gamma

    def _after_warmup(self, step: int, total_steps: int, base: float, warmup: int) -> float:
        period_steps = max(1, to_steps(self.period, total_steps))
        return base * self.gamma ** (step // period_steps)

    def hparams(self) -> dict[str, object]:
        return {"period": self.period, "gamma": self.gamma, **super().hparams()}


class MultiStepSchedule(WarmupSchedule):
    """``base * gamma ** k``, ``k`` = number of milestones reached.

    Milestone ``m`` (a fraction of training, strictly increasing in (0, 1)) is reached
    at step ``to_steps(m, total_steps)`` (nearest step): that step already uses the lower value.

    Args:
        milestones: where to decay, as strictly increasing fractions of all steps.
        gamma: the factor applied at each milestone.
    """

    name = "multistep"
    description = "multiply by gamma at each milestone (fractions of training)"
    targets = ("lr",)

    def __init__(
        self,
        milestones: Annotated[Sequence[float], Param(gt=0, lt=1)] = (0.5, 0.75),
        gamma: Gamma = 0.1,
        warmup_steps: StepCount = 0,
        warmup_fraction: WarmupFraction = 0.0,
    ) -> None:
        super().__init__(warmup_steps=warmup_steps, warmup_fraction=warmup_fraction)
        self.milestones = tuple(float(m) for m in milestones)
        self.gamma = gamma

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """Milestones: at least one, each later than the one before."""
        values = list(params.get("milestones", (0.5, 0.75)))
        if not values:
            raise ValueError("milestones must be a non-empty list of fractions, got []")
        if any(b <= a for a, b in zip(values[:-1], values[1:], strict=True)):
            raise ValueError(f"milestones must be strictly increasing, got {values}")

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

    Args:
        floor: the value reached at the last step (absolute, like PyTorch's eta_min).
    """

    name = "cosine"
    description = "cosine decay from base to `floor` after the warm-up"
    targets = ("lr",)

    def __init__(
        self,
        floor: Annotated[float, Param(ge=0)] = 0.0,
        warmup_steps: StepCount = 0,
        warmup_fraction: WarmupFraction = 0.0,
    ) -> None:
        super().__init__(warmup_steps=warmup_steps, warmup_fraction=warmup_fraction)
        self.floor = floor

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

    Args:
        pct_start: fraction of the steps spent rising to base.
        div_factor: the first value is base / div_factor.
        final_div_factor: the last value is base / div_factor / final_div_factor.
    """

    name = "one_cycle"
    description = "rise from base/div_factor to base, then anneal far below (cosine)"
    targets = ("lr",)

    def __init__(
        self,
        pct_start: Annotated[float, Param(gt=0, lt=1)] = 0.3,
        div_factor: Annotated[float, Param(ge=1)] = 25.0,
        final_div_factor: Annotated[float, Param(ge=1)] = 1e4,
    ) -> None:
        self.pct_start = pct_start
        self.div_factor = div_factor
        self.final_div_factor = final_div_factor

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
