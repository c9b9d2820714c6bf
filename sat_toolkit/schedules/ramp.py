"""Epsilon schedules: ramp the attack strength up instead of starting at full epsilon.

Starting adversarial training at full epsilon can stall a freshly initialised network
(everything is misclassified, the loss is flat); a linear ramp is the usual remedy. The
constant schedule (:mod:`sat_toolkit.schedules.lr`) is the other epsilon schedule.
"""

from __future__ import annotations

from sat_toolkit.schedules.base import RunFraction, Schedule, StepCount, steps_from


class LinearRampSchedule(Schedule):
    """``base * (start + (1 - start) * min(1, step / R))``.

    ``R`` is ``ramp_steps`` if > 0, else ``to_steps(ramp_fraction, total_steps)``; ``start``
    is the fraction of ``base`` used at step 0 (0 = the first step is clean). With
    ``R = 0`` the value is ``base`` throughout. Unlike the learning-rate warm-up this
    starts *at* ``start * base`` (a clean first step costs nothing) and reaches ``base``
    at step ``R``.

    Args:
        ramp_fraction: ramp length as a fraction of all steps (when ramp_steps is 0).
        ramp_steps: ramp length in steps; 0 = use ramp_fraction.
        start: the fraction of base used at step 0.
    """

    name = "linear_ramp"
    description = "linear from start*base to base over the first ramp_fraction (or ramp_steps)"

    def __init__(
        self, ramp_fraction: RunFraction = 0.2, ramp_steps: StepCount = 0, start: RunFraction = 0.0
    ) -> None:
        self.ramp_fraction = ramp_fraction
        self.ramp_steps = ramp_steps
        self.start = start

    def ramp_length(self, total_steps: int) -> int:
        """Number of steps until ``base`` is reached."""
        return steps_from(self.ramp_fraction, self.ramp_steps, total_steps)

    def _value(self, step: int, total_steps: int, base: float) -> float:
        ramp = self.ramp_length(total_steps)
        progress = 1.0 if ramp == 0 else min(1.0, step / ramp)
        return base * (self.start + (1.0 - self.start) * progress)

    def hparams(self) -> dict[str, object]:
        return {"ramp_fraction": self.ramp_fraction, "ramp_steps": self.ramp_steps, "start": self.start}
