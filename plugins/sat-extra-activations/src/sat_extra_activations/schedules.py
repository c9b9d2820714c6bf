"""``triangular``: the piecewise-linear one-cycle learning rate of fast adversarial training.

Wong, Rice and Kolter ("Fast is better than free", ICLR 2020) train FGSM-based
adversarial models in a few epochs with a cyclic learning rate that rises linearly from
0 to its peak at 2/5 of training and falls linearly back to 0; they found it essential
for reaching PGD-level robustness in that budget, and later fast-AT papers kept it. The
toolkit's ``one_cycle`` anneals with cosines and never reaches 0, and its ``cosine`` has
no rise, so neither reproduces that protocol; this schedule does, with the peak and both
ends configurable.
"""

from __future__ import annotations

from typing import Annotated

from sat_toolkit.params import Param
from sat_toolkit.schedules import Schedule
from sat_toolkit.schedules.base import to_steps

#: A value as a fraction of ``base``.
OfBase = Annotated[float, Param(ge=0, le=1)]


class Triangular(Schedule):
    """Linear from ``start * base`` up to ``base`` at ``peak``, then linear to ``end * base`` at the end.

    With ``P = to_steps(peak, total_steps)`` (at most ``total_steps - 1``):
    ``base * (start + (1 - start) * step / P)`` for ``step < P`` and
    ``base * (1 - (1 - end) * (step - P) / (total_steps - P))`` from ``P`` on, so step
    ``P`` gets ``base`` and ``total_steps`` (and any step past it) gets ``end * base``.

    Args:
        peak: where ``base`` is reached, as a fraction of training in (0, 1).
        start: the value at step 0 as a fraction of ``base``, in [0, 1].
        end: the value at the end as a fraction of ``base``, in [0, 1].
    """

    name = "triangular"
    description = "linear rise to base at `peak`, linear fall to end*base (Wong et al. 2020 fast AT)"
    targets = ("lr",)

    def __init__(
        self, peak: Annotated[float, Param(gt=0, lt=1)] = 0.4, start: OfBase = 0.0, end: OfBase = 0.0
    ) -> None:
        self.peak, self.start, self.end = peak, start, end

    def peak_step(self, total_steps: int) -> int:
        """The step that gets ``base``."""
        return min(to_steps(self.peak, total_steps), total_steps - 1)

    def _value(self, step: int, total_steps: int, base: float) -> float:
        top = self.peak_step(total_steps)
        if step < top:
            return base * (self.start + (1.0 - self.start) * step / top)
        return base * (1.0 - (1.0 - self.end) * (step - top) / (total_steps - top))

    def hparams(self) -> dict[str, object]:
        return {"peak": self.peak, "start": self.start, "end": self.end}
