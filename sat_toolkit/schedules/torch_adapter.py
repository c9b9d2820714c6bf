"""Drive a PyTorch optimiser's learning rate from a :class:`Schedule`."""

from __future__ import annotations

from collections.abc import Callable

import torch

from sat_toolkit.schedules.base import Schedule, check_int, run_value


def _factor(schedule: Schedule, total_steps: int, base: float) -> Callable[[int], float]:
    # A closure, not a callable object: LambdaLR.state_dict() then leaves it out, so a
    # checkpoint holds only the step counter and loads with torch.load(weights_only=True).
    def factor(step: int) -> float:
        return run_value(schedule, step, total_steps, base, "schedule.lr") / base if base else 0.0

    return factor


def lambda_lr(
    optimizer: torch.optim.Optimizer, schedule: Schedule, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` that sets each param group's lr to ``schedule.value(step, total, lr0)``.

    ``lr0`` is the group's initial learning rate, so groups with different base rates
    (e.g. a smaller lr for a pretrained backbone) keep their ratio, and an absolute
    ``floor`` applies to each group as written. Call ``scheduler.step()`` after every
    optimiser step; right after construction the optimiser holds the step-0 value.
    """
    check_int("total_steps", total_steps, 1)
    bases = [float(group.get("initial_lr", group["lr"])) for group in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda=[_factor(schedule, total_steps, base) for base in bases]
    )
