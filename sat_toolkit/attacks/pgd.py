"""PGD and FGSM, assembled from parts (init rule, step rule, projection, loss).

PGD-1 with step size = eps and ``random_start_fraction = 0.8`` is SAT's training
attacker; PGD-k with many steps is its evaluation attacker. The inner loop is written
to cost what a hand-written loop costs: one forward, one input-gradient backward and
four in-place element-wise ops per step, no per-step state saving and no device
synchronisation. Anything that needs the final loss (restarts, ``evaluate=True``) pays
one extra forward per restart, outside the loop.
"""

from __future__ import annotations

from typing import Annotated, Any

import torch

from sat_toolkit.attacks.base import (
    Attack,
    Model,
    Positive,
    Probability,
    Restarts,
    Steps,
    per_sample,
    take_better,
)
from sat_toolkit.attacks.gradient import LossGradient, predict
from sat_toolkit.attacks.inits import INITS, init_for_fraction
from sat_toolkit.attacks.losses import LOSSES, check_classes, resolve_loss
from sat_toolkit.attacks.result import AttackResult
from sat_toolkit.attacks.steps import DEFAULT_STEP_RULE, STEP_RULES
from sat_toolkit.attacks.targets import TARGETS
from sat_toolkit.errors import SatError
from sat_toolkit.params import Param


class PGD(Attack):
    """Projected gradient ascent on a loss, inside the eps-ball and [0, 1].

    Args:
        eps: budget (pixel space, e.g. ``"4/255"``).
        steps: number of gradient steps (>= 1).
        step_size: absolute step size; if None, ``rel_step_size * eps`` is used, so the
            step follows an epsilon schedule.
        rel_step_size: step size as a multiple of eps; default 1 for one step (SAT's
            PGD-1) and 2.5 / steps otherwise (Madry et al.).
        norm: ``"linf"`` or ``"l2"``.
        loss: a registered loss name (``"ce"``, ``"dlr"``, ``"margin"``, ...).
        target: None (untargeted), ``"random"`` or ``"least_likely"``; with a target the
            loss switches to its ``_targeted`` form.
        random_start_fraction: fraction of the batch that starts at a uniformly random
            point of the ball; the rest starts at the clean input (official SAT: 0.8).
        init: an init rule name, overriding the one ``random_start_fraction`` implies.
        step_rule: a step rule name (default: ``"sign"`` for linf, ``"l2"`` for l2).
        restarts: independent runs; each sample keeps its worst case over them.
        evaluate: also compute ``success``/``loss`` at the returned point (one extra
            forward); always done when ``restarts > 1``.
        bn_mode, precision, loss_scale, seed: see :class:`Attack`.
    """

    name = "pgd"
    description = "projected gradient descent (L-inf/L2, targeted or not, random starts, restarts)"

    def __init__(
        self,
        *,
        steps: Steps = 10,
        step_size: Positive | None = None,
        rel_step_size: Positive | None = None,
        loss: Annotated[str, Param(one_of=LOSSES)] = "ce",
        target: Annotated[str | None, Param(one_of=TARGETS)] = None,
        random_start_fraction: Probability = 0.0,
        init: Annotated[str | None, Param(one_of=INITS)] = None,
        step_rule: Annotated[str | None, Param(one_of=STEP_RULES)] = None,
        restarts: Restarts = 1,
        evaluate: bool = False,
        **threat: Any,
    ) -> None:
        super().__init__(**threat)
        self.steps = steps
        self.step_size = step_size
        self.rel_step_size = rel_step_size
        self.target = target
        self.loss = loss
        self._loss = resolve_loss(loss, targeted=target is not None)
        self.random_start_fraction = random_start_fraction
        self.init = init
        self._init = INITS.get(init if init is not None else init_for_fraction(self.random_start_fraction))
        self.step_rule = step_rule
        self._step_rule = STEP_RULES.get(
            step_rule if step_rule is not None else DEFAULT_STEP_RULE.get(self.norm, "sign")
        )
        self.restarts = restarts
        self.evaluate = evaluate

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        super().check_params(params)
        resolve_loss(params.get("loss", "ce"), targeted=params.get("target") is not None)

    def resolved_step_size(self, eps: float) -> float:
        """The step size for budget ``eps``."""
        if self.step_size is not None:
            return self.step_size
        rel = (
            self.rel_step_size
            if self.rel_step_size is not None
            else (1.0 if self.steps == 1 else 2.5 / self.steps)
        )
        return rel * eps

    def _perturb(self, model: Model, x: torch.Tensor, y: torch.Tensor, eps: float) -> AttackResult:
        projection = self.projection_cls(x, eps)
        generator = self.generator(x.device)
        grad_fn = LossGradient(
            model, self._loss, self._precision, x.shape[0], x.device, self.bn_mode == "eval"
        )
        target = None
        if self.target is not None or self._loss.min_classes > 2:
            clean_logits = predict(model, x, self._precision)
            check_classes(self._loss, self.loss, clean_logits.shape[1])
            if self.target is not None:
                target = TARGETS.get(self.target)(clean_logits, y, generator)
        step, step_rule, steps = self.resolved_step_size(eps), self._step_rule, self.steps
        need_eval = self.evaluate or self.restarts > 1

        best_x = best_loss = best_success = None
        for _ in range(self.restarts):
            x_adv = self._init(x, projection, self.random_start_fraction, generator)
            for _ in range(steps):
                _, _, grad = grad_fn(x_adv, y, target)
                x_adv = projection(step_rule(grad, step).add_(x_adv))
            if not need_eval:
                best_x = x_adv
                break
            loss, logits = grad_fn.evaluate(x_adv, y, target)
            success = self.is_success(logits, y, target)
            if best_x is None:
                best_x, best_loss, best_success = x_adv, loss, success
                continue
            better = take_better(best_success, best_loss, success, loss)
            best_x = torch.where(per_sample(better, x), x_adv, best_x)
            best_loss = torch.where(better, loss, best_loss)
            best_success = best_success | success
        assert best_x is not None
        return AttackResult(
            x_adv=projection.finalize(best_x).detach(),
            zero_grad=grad_fn.zero_grad,
            success=best_success,
            loss=best_loss,
            target=target,
            eps=eps,
        )

    @staticmethod
    def is_success(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Misclassified (untargeted) or classified as the target (targeted)."""
        pred = logits.argmax(dim=1)
        return pred != y if target is None else pred == target


class FGSM(PGD):
    """One signed-gradient step of size eps (Goodfellow et al.); L2: one normalised step.

    With ``random_start_fraction > 0`` and ``step_size`` around 1.25 eps this is the
    "fast" adversarial training attacker of Wong et al.
    """

    name = "fgsm"
    description = "fast gradient sign method: one gradient step of size eps"

    pinned = ("steps",)

    def __init__(self, **params: Any) -> None:
        if "steps" in params:
            raise SatError("attack 'fgsm' takes exactly one step; for more use 'pgd' with steps = N")
        super().__init__(steps=1, **params)
