"""The schedule plugin contract and the shared linear warm-up.

Conventions every schedule follows:

* ``step`` is the 0-based index of the optimiser step about to be taken, so a run of
  ``total_steps`` steps asks for ``step = 0 .. total_steps - 1``. Steps at or past the
  end return the final value (a resumed run that overshoots by one must not crash).
* ``base`` is what the recipe sets: ``optimizer.lr`` for the learning rate,
  ``attack.train.eps`` for epsilon. Schedules return absolute values, not factors.
* Lengths given as fractions of training become whole steps with :func:`to_steps`
  (nearest step, halves up, immune to ``0.3 * 100 == 30.000000000000004``):
  ``warmup_fraction = 0.05`` of 1000 steps is 50 steps.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar

from sat_toolkit.errors import SatError
from sat_toolkit.params import Param


def run_value(schedule: Any, step: int, total_steps: int, base: float, key: str) -> float:
    """``schedule.value(step, total_steps, base)`` as a run takes it: a finite number >= 0.

    A plugin schedule that returns anything else (a negative lr) would otherwise train on
    until the weights overflow, and the error would blame the lr the recipe set; ``key``
    (``schedule.lr``) names the schedule in the one-line error instead.
    """
    value = schedule.value(step, total_steps, base)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value < 0:
        name = getattr(schedule, "name", type(schedule).__name__)
        raise SatError(
            f"{key} '{name}': value({step}, {total_steps}, {base:g}) returned {value!r}; a schedule returns "
            "a finite number >= 0 (sat_toolkit.testing.check_schedule tests a schedule plugin for this)"
        )
    return float(value)


def check_int(name: str, value: object, minimum: int) -> int:
    """An integer >= ``minimum`` (bool is refused: ``True`` steps is a typo, not 1)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


#: A length in optimiser steps; 0 means "use the fraction instead".
StepCount = Annotated[int, Param(ge=0)]
#: A share of the run, in [0, 1].
RunFraction = Annotated[float, Param(ge=0, le=1)]
#: The warm-up's share of the run: the run cannot be all warm-up.
WarmupFraction = Annotated[float, Param(ge=0, lt=1)]


def to_steps(fraction: float, total_steps: int) -> int:
    """``fraction`` of a run as a whole number of steps: nearest, halves rounded up.

    Python's ``round`` rounds halves to even (``round(2.5) == 2``), which would make
    ``0.5`` of 5 steps land before the middle; ``floor(x + 0.5)`` does not.
    """
    return math.floor(fraction * total_steps + 0.5)


def steps_from(fraction: float, steps: int, total_steps: int) -> int:
    """``steps`` when it is > 0, else ``to_steps(fraction, total_steps)``; never past the end."""
    length = steps if steps > 0 else to_steps(fraction, total_steps)
    return min(length, total_steps)


class Schedule:
    """Base class of the built-in schedules (and a convenient one for plugins).

    Subclasses set ``name``, ``description`` and ``targets`` (which recipe slots,
    ``"lr"`` and/or ``"eps"``, the schedule makes sense for; the recipe validator refuses
    e.g. a one-cycle epsilon) and implement :meth:`_value`.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    targets: ClassVar[tuple[str, ...]] = ("lr", "eps")

    def value(self, step: int, total_steps: int, base: float) -> float:
        """The scheduled value for ``step`` of a ``total_steps`` run starting from ``base``."""
        check_int("total_steps", total_steps, 1)
        check_int("step", step, 0)
        return float(self._value(min(step, total_steps), total_steps, float(base)))

    def _value(self, step: int, total_steps: int, base: float) -> float:
        raise NotImplementedError

    def hparams(self) -> dict[str, object]:
        """The keyword parameters that rebuild this schedule (logged with the run)."""
        return {}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.hparams().items())
        return f"{type(self).__name__}({params})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.hparams() == other.hparams()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]


class WarmupSchedule(Schedule):
    """A schedule with an optional linear warm-up in front.

    With ``W`` warm-up steps (``warmup_steps`` if > 0, else ``to_steps(warmup_fraction,
    total_steps)``), step ``s < W`` gets ``base * (s + 1) / W``: the first step already
    moves (a zero learning rate would waste it) and step ``W - 1`` reaches ``base``. From
    step ``W`` on the subclass's own curve applies; see each subclass for whether its
    curve spans the whole run or only the steps after the warm-up.

    Args:
        warmup_steps: steps of linear warm-up from 0 to base; 0 = use warmup_fraction.
        warmup_fraction: warm-up length as a fraction of all steps (when warmup_steps is 0).
    """

    def __init__(self, warmup_steps: StepCount = 0, warmup_fraction: WarmupFraction = 0.0) -> None:
        self.warmup_steps = warmup_steps
        self.warmup_fraction = warmup_fraction

    def warmup_length(self, total_steps: int) -> int:
        """Number of warm-up steps in a run of ``total_steps``."""
        return steps_from(self.warmup_fraction, self.warmup_steps, total_steps)

    def value(self, step: int, total_steps: int, base: float) -> float:
        check_int("total_steps", total_steps, 1)
        check_int("step", step, 0)
        warmup = self.warmup_length(total_steps)
        if step < warmup:
            return float(base) * (step + 1) / warmup
        return float(self._after_warmup(min(step, total_steps), total_steps, float(base), warmup))

    def _after_warmup(self, step: int, total_steps: int, base: float, warmup: int) -> float:
        raise NotImplementedError

    def hparams(self) -> dict[str, object]:
        return {"warmup_steps": self.warmup_steps, "warmup_fraction": self.warmup_fraction}
