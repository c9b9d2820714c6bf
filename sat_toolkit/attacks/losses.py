"""Per-sample losses the attacker *maximises*.

Every loss maps ``(logits, y, target)`` to one value per sample; larger means more
adversarial. Untargeted losses ignore ``target``; targeted ones (``*_targeted``) need it.
Logits arrive in float32 even under bf16/fp16 autocast, because the attack's decisions
(best point, step-size halving) compare loss values and must not be rounding noise.

DLR and its targeted form follow Croce & Hein (ICML 2020): dividing the margin by the
spread of the top logits makes the loss invariant to shifting and rescaling the logits,
so it cannot be defeated by a model that merely inflates its logits (which saturates
cross-entropy and zeroes its gradient).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F

from sat_toolkit.attacks.registry import Registry
from sat_toolkit.errors import SatError

LossFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class Loss:
    """A registered loss: the function and what it needs."""

    fn: LossFn
    targeted: bool = False
    min_classes: int = 2
    description: str = ""

    def __call__(
        self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.fn(logits, y, target)


LOSSES: Registry[Loss] = Registry("loss")


def _true_logit(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, y.unsqueeze(1)).squeeze(1)


def _best_other_logit(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """max_{j != y} z_j."""
    return logits.scatter(1, y.unsqueeze(1), float("-inf")).amax(dim=1)


def _need_target(target: torch.Tensor | None) -> torch.Tensor:
    if target is None:
        raise SatError("a targeted loss was used without a target; set target = 'random' or 'least_likely'")
    return target


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """CE(z, y): push probability away from the true class."""
    return F.cross_entropy(logits, y, reduction="none")


def cross_entropy_targeted(
    logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
) -> torch.Tensor:
    """-CE(z, t): pull probability onto the target class."""
    return -F.cross_entropy(logits, _need_target(target), reduction="none")


def margin(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """max_{j != y} z_j - z_y: positive exactly when the sample is misclassified (CW loss)."""
    return _best_other_logit(logits, y) - _true_logit(logits, y)


def margin_targeted(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """z_t - max_{j != t} z_j: positive exactly when the target class wins."""
    t = _need_target(target)
    return _true_logit(logits, t) - _best_other_logit(logits, t)


def dlr(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """-(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3), pi sorting the logits in decreasing order."""
    top = logits.topk(3, dim=1).values
    return margin(logits, y) / (top[:, 0] - top[:, 2] + 1e-12)


def dlr_targeted(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2), the targeted DLR of APGD-T."""
    t = _need_target(target)
    top = logits.topk(4, dim=1).values
    return (_true_logit(logits, t) - _true_logit(logits, y)) / (
        top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12
    )


LOSSES.register("ce", Loss(cross_entropy, description="cross-entropy of the true class"))
LOSSES.register(
    "ce_targeted", Loss(cross_entropy_targeted, targeted=True, description="minus CE of the target")
)
LOSSES.register("margin", Loss(margin, description="best other logit minus true logit (CW)"))
LOSSES.register("margin_targeted", Loss(margin_targeted, targeted=True, description="target logit margin"))
LOSSES.register("dlr", Loss(dlr, min_classes=3, description="difference of logits ratio (Croce & Hein)"))
LOSSES.register(
    "dlr_targeted", Loss(dlr_targeted, targeted=True, min_classes=4, description="targeted DLR (APGD-T)")
)


def resolve_loss(name: str, *, targeted: bool) -> Loss:
    """The loss a recipe asks for, switched to its ``_targeted`` form when the attack has a target.

    So ``{name = "pgd", loss = "dlr", target = "least_likely"}`` uses ``dlr_targeted``.
    """
    if targeted and isinstance(name, str) and not name.endswith("_targeted") and f"{name}_targeted" in LOSSES:
        return LOSSES.get(f"{name}_targeted")
    loss = LOSSES.get(name)
    if loss.targeted and not targeted:
        raise SatError(
            f"loss '{name}' is targeted; set target = 'random' or 'least_likely', or use an untargeted loss"
        )
    if targeted and not loss.targeted:
        raise SatError(f"loss '{name}' has no targeted form ('{name}_targeted' is not registered)")
    return loss


def check_classes(loss: Loss, name: str, num_classes: int) -> None:
    """Refuse a loss that is undefined for this many classes (DLR needs 3, targeted DLR 4)."""
    if num_classes < loss.min_classes:
        raise SatError(
            f"loss '{name}' needs at least {loss.min_classes} classes; the model has {num_classes}"
        )
