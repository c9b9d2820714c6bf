"""Catastrophic overfitting: single-step adversarial training that stops being robust.

Wong et al. (2020, "Fast is better than free") found that FGSM training (and PGD-1, its
twin) can collapse within one epoch: the model learns a locally non-linear loss surface
on which one gradient step no longer finds an adversarial example, so accuracy against
FGSM *rises* while accuracy against a multi-step PGD falls to nearly zero. The run keeps
a finite, falling loss, so nothing else notices it; the validation sees it, since it
scores both attacks on the same fixed images.

The rule, applied to each validation against the validations before it (the history is
in the train state, so a resumed run judges with the same past). The multi-step attack is
the recipe's validation attack (``[attack.validate]``, PGD-10 by default):

* it has collapsed when its accuracy falls to at most :data:`COLLAPSE_FRACTION` of its
  best so far, and by at least :data:`MIN_DROP` (on a small validation subset a drop from
  0.04 to 0.01 is noise, not a collapse); or, a partial collapse, when it falls by
  :data:`PARTIAL_DROP` or more. The Fashion-MNIST budget sweep's 24-epoch ReLU cell
  (docs/results/fashion_mnist_budget) ended at a 23% worst case (the same recipe at 12
  epochs: 73%), yet its PGD-10 validation only fell from a best of 0.78 to 0.64, and
  APGD-CE-10 left 0.47 of the final model's images: the 0.3 x best rule never fired;
* FGSM has not collapsed with it when its accuracy is at least :data:`FGSM_KEEP_FRACTION`
  of its best so far. When both fall together the model has lost robustness to every
  attack (a learning-rate problem, which the divergence guard watches), not learnt to
  mask one-step gradients. A multi-step drop of 0.15 with FGSM holding is a gap between
  the two attacks widened by 0.15: one gradient step no longer finds what ten do.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from sat_toolkit.errors import SatError
from sat_toolkit.recipe.schema import DEFAULT_VALIDATION_LABEL

#: PGD accuracy at or below this fraction of its best so far counts as a collapse.
COLLAPSE_FRACTION = 0.3
#: ...and it must have fallen by at least this much (absolute accuracy).
MIN_DROP = 0.05
#: A fall by this much (absolute accuracy) is a partial collapse, however high the rest:
#: 7 standard errors of an accuracy near 0.7 on the default 512 validation images.
PARTIAL_DROP = 0.15
#: FGSM accuracy at or above this fraction of its best so far has not collapsed.
FGSM_KEEP_FRACTION = 0.8

#: The validation record's keys the rule reads.
PGD_KEY = "robust_accuracy"
FGSM_KEY = "fgsm_accuracy"


class OverfittingError(SatError):
    """Catastrophic overfitting was detected and ``train.overfitting = "stop"``."""


@dataclasses.dataclass(frozen=True)
class Collapse:
    """One validation at which PGD accuracy collapsed while FGSM accuracy held."""

    epoch: int
    step: int
    pgd: float
    fgsm: float
    best_pgd: float
    best_fgsm: float
    attack: str = DEFAULT_VALIDATION_LABEL
    norm: str = "linf"

    def to_dict(self) -> dict[str, Any]:
        """The ``metrics.json`` record (``"overfitting"``)."""
        return {
            "detected_at_epoch": self.epoch,
            "step": self.step,
            "pgd": self.pgd,
            "fgsm": self.fgsm,
            "best_pgd": self.best_pgd,
            "best_fgsm": self.best_fgsm,
            "attack": self.attack,
        }

    def describe(self) -> str:
        return (
            f"catastrophic overfitting at epoch {self.epoch}: {self.attack} accuracy fell to {self.pgd:.3f} "
            f"(best {self.best_pgd:.3f}) while {single_step_label(self.norm)} accuracy is {self.fgsm:.3f} "
            f"(best {self.best_fgsm:.3f})"
        )


def single_step_label(norm: str) -> str:
    """What the validation's single-step attack is called under ``norm``: the ``fgsm`` plugin
    takes the gradient's sign under L-inf (FGSM) and the L2-normalised gradient under L2,
    which the literature calls FGM (Miyato et al.; Kurakin et al.)."""
    return "FGM" if norm == "l2" else "FGSM"


def _number(entry: dict[str, Any], key: str) -> float | None:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def judge(history: Sequence[dict[str, Any]]) -> Collapse | None:
    """Whether the last validation of ``history`` shows a collapse against the ones before it.

    Records without both numbers (no attack budget to validate with) are ignored.
    """
    if not history:
        return None
    latest = history[-1]
    pgd, fgsm = _number(latest, PGD_KEY), _number(latest, FGSM_KEY)
    earlier = [(_number(e, PGD_KEY), _number(e, FGSM_KEY)) for e in history[:-1]]
    earlier = [(p, f) for p, f in earlier if p is not None and f is not None]
    if pgd is None or fgsm is None or not earlier:
        return None
    best_pgd = max(p for p, _ in earlier)
    best_fgsm = max(f for _, f in earlier)
    drop = best_pgd - pgd
    collapsed = (pgd <= COLLAPSE_FRACTION * best_pgd and drop >= MIN_DROP) or drop >= PARTIAL_DROP
    if collapsed and fgsm >= FGSM_KEEP_FRACTION * best_fgsm:
        attack, norm = latest.get("attack"), latest.get("norm")
        return Collapse(
            int(latest["epoch"]), int(latest["step"]), pgd, fgsm, best_pgd, best_fgsm,
            attack if isinstance(attack, str) else DEFAULT_VALIDATION_LABEL,
            norm if isinstance(norm, str) else "linf",
        )  # fmt: skip
    return None


def first_collapse(history: Sequence[dict[str, Any]]) -> Collapse | None:
    """The first validation of ``history`` at which :func:`judge` finds a collapse, or None."""
    for end in range(1, len(history) + 1):
        found = judge(history[:end])
        if found is not None:
            return found
    return None
