"""Schedules for the learning rate and the attack's epsilon (plugin kind ``schedule``).

A schedule is a pure function of the step: ``value(step, total_steps, base)``. Keeping it
stateless makes it trivial to test against closed forms and to resume: a checkpoint only
needs the step counter. Fractions of training (not epochs) place milestones, so a
recipe keeps its shape when ``train.epochs`` or the dataset size changes.
"""

from sat_toolkit.schedules.base import Schedule, WarmupSchedule
from sat_toolkit.schedules.lr import (
    ConstantSchedule,
    CosineSchedule,
    MultiStepSchedule,
    OneCycleSchedule,
    StepSchedule,
)
from sat_toolkit.schedules.ramp import LinearRampSchedule
from sat_toolkit.schedules.torch_adapter import lambda_lr

BUILTIN_SCHEDULES: list[type[Schedule]] = [
    ConstantSchedule,
    StepSchedule,
    MultiStepSchedule,
    CosineSchedule,
    OneCycleSchedule,
    LinearRampSchedule,
]

__all__ = [
    "BUILTIN_SCHEDULES",
    "ConstantSchedule",
    "CosineSchedule",
    "LinearRampSchedule",
    "MultiStepSchedule",
    "OneCycleSchedule",
    "Schedule",
    "StepSchedule",
    "WarmupSchedule",
    "lambda_lr",
]
