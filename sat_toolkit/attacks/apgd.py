"""APGD-CE, APGD-DLR and APGD-T (Croce & Hein, ICML 2020), written from the paper.

Auto-PGD removes PGD's step-size tuning:

* the step size starts at 2 * eps and is halved, per sample, at checkpoints
  w_j = ceil(p_j * N) with p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06);
* at a checkpoint the step is halved when either (1) fewer than rho = 75% of the steps
  since the last checkpoint increased the loss, or (2) the step was not halved at the
  last checkpoint and the best loss has not improved since; a halving restarts the
  iterate from the best point found so far;
* steps use momentum alpha = 0.75:
  z = P(x_k + eta * s(grad)),  x_{k+1} = P(x_k + alpha (z - x_k) + (1 - alpha)(x_k - x_{k-1})).

APGD-T runs the targeted DLR loss once per target class (the top ``n_target_classes``
classes other than the label, by clean logit). Restarts begin from new random points and,
with BatchNorm in eval mode, only attack the samples not fooled yet (they are independent
then, and the saving is what makes AutoAttack affordable).
"""

from __future__ import annotations

import math
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
from sat_toolkit.attacks.inits import INITS
from sat_toolkit.attacks.losses import LOSSES, check_classes, resolve_loss
from sat_toolkit.attacks.projections import Projection
from sat_toolkit.attacks.result import AttackResult
from sat_toolkit.attacks.steps import DEFAULT_STEP_RULE, STEP_RULES
from sat_toolkit.attacks.targets import top_other_classes
from sat_toolkit.errors import SatError
from sat_toolkit.params import Param


def apgd_checkpoints(steps: int) -> list[int]:
    """Iterations w_1 < w_2 < ... at which APGD may halve its step (w_0 = 0 excluded)."""
    p = [0.0, 0.22]
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - 0.03, 0.06)
        if nxt > 1.0:
            break
        p.append(nxt)
    # The 1e-9 keeps float noise (0.22 + 0.19 = 0.41000000000000003) out of the ceiling.
    return sorted({math.ceil(pj * steps - 1e-9) for pj in p[1:]})


class APGD(Attack):
    """Auto-PGD with a configurable loss (untargeted).

    Args:
        eps: budget (pixel space).
        steps: iterations N per run (the paper: 100).
        restarts: runs from new random starting points; each sample keeps its worst case.
        norm: ``"linf"`` or ``"l2"``.
        loss: ``"ce"``, ``"dlr"``, ``"margin"`` or any registered untargeted loss.
        rho: the fraction of loss-increasing steps below which the step is halved.
        momentum: alpha, the weight of the new gradient step against the previous move.
        initial_step: the first step size, as a multiple of eps (the paper: 2).
        init: starting point rule (the paper: a uniformly random point, ``"uniform"``).
        step_rule: step rule name (default by norm).
        bn_mode, precision, loss_scale, seed: see :class:`Attack`.
    """

    name = "apgd"
    description = "Auto-PGD (Croce & Hein 2020) with a configurable loss"
    targeted: bool = False
    #: The loss when the recipe names none.
    default_loss: str = "ce"
    #: Members with a fixed loss (AutoAttack's apgd_ce, apgd_dlr) refuse any other.
    loss_is_fixed: bool = False

    def __init__(
        self,
        *,
        steps: Steps = 100,
        restarts: Restarts = 1,
        loss: Annotated[str | None, Param(one_of=LOSSES)] = None,
        rho: Probability = 0.75,
        momentum: Probability = 0.75,
        initial_step: Positive = 2.0,
        init: Annotated[str, Param(one_of=INITS)] = "uniform",
        step_rule: Annotated[str | None, Param(one_of=STEP_RULES)] = None,
        **threat: Any,
    ) -> None:
        super().__init__(**threat)
        self.steps = steps
        self.restarts = restarts
        self.loss = self.default_loss if loss is None else loss
        self._loss = resolve_loss(self.loss, targeted=self.targeted)
        self.rho = rho
        self.momentum = momentum
        self.initial_step = initial_step
        self.init = init
        self._init = INITS.get(init)
        self.step_rule = step_rule
        self._step_rule = STEP_RULES.get(
            step_rule if step_rule is not None else DEFAULT_STEP_RULE.get(self.norm, "sign")
        )
        self._checkpoints = frozenset(apgd_checkpoints(self.steps))

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        super().check_params(params)
        loss = params.get("loss")
        if loss is None:
            return
        if cls.loss_is_fixed and loss != cls.default_loss:
            raise SatError(
                f"attack '{cls.name}' always uses loss '{cls.default_loss}'; "
                f"for loss '{loss}' use attack 'apgd' with loss = '{loss}'"
            )
        resolve_loss(loss, targeted=cls.targeted)

    # -- the outer loop: targets x restarts, keeping each sample's worst case ---------------
    def _target_sets(self, clean_logits: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor | None]:
        return [None]

    def _perturb(self, model: Model, x: torch.Tensor, y: torch.Tensor, eps: float) -> AttackResult:
        batch = x.shape[0]
        projection = self.projection_cls(x, eps)
        generator = self.generator(x.device)
        grad_fn = LossGradient(model, self._loss, self._precision, batch, x.device, self.bn_mode == "eval")
        targets: list[torch.Tensor | None] = [None]
        if self.targeted or self._loss.min_classes > 2:
            clean_logits = predict(model, x, self._precision)
            check_classes(self._loss, self.loss, clean_logits.shape[1])
            targets = self._target_sets(clean_logits, y)

        x_out = x.clone()
        loss_out = torch.full((batch,), -math.inf, device=x.device)
        success = torch.zeros(batch, dtype=torch.bool, device=x.device)
        final_step = torch.full((batch,), math.nan, device=x.device)
        everyone = torch.arange(batch, device=x.device)
        subset = self.bn_mode == "eval"
        for target in targets:
            for _ in range(self.restarts):
                index = (~success).nonzero().squeeze(1) if subset else everyone
                if index.numel() == 0:
                    break
                full = index.numel() == batch
                sub_proj = projection if full else projection.subset(index)
                sub_target = None if target is None else (target if full else target[index])
                x_run, loss_run, success_run, step_run = self._run(
                    grad_fn,
                    sub_proj,
                    y if full else y[index],
                    sub_target,
                    None if full else index,
                    eps,
                    generator,
                )
                better = take_better(success[index], loss_out[index], success_run, loss_run)
                x_out[index] = torch.where(per_sample(better, x_run), x_run, x_out[index])
                loss_out[index] = torch.where(better, loss_run, loss_out[index])
                success[index] = success[index] | success_run
                final_step[index] = step_run
        return AttackResult(
            x_adv=projection.finalize(x_out).detach(),
            zero_grad=grad_fn.zero_grad,
            success=success,
            loss=loss_out,
            target=targets[0] if self.targeted else None,
            eps=eps,
            info={"evaluations": grad_fn.evaluations, "step_size": final_step},
        )

    # -- one APGD run ----------------------------------------------------------------------
    def _run(
        self,
        grad_fn: LossGradient,
        proj: Projection,
        y: torch.Tensor,
        target: torch.Tensor | None,
        index: torch.Tensor | None,
        eps: float,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One run from a fresh starting point: (x, loss, success, final step size) per sample."""
        x = proj.x
        step_rule, alpha = self._step_rule, self.momentum
        eta = torch.full(
            (x.shape[0],) + (1,) * (x.dim() - 1), self.initial_step * eps, device=x.device, dtype=x.dtype
        )

        x0 = self._init(x, proj, 1.0, generator)
        loss0, logits, g0 = grad_fn(x0, y, target, index)
        success = logits.argmax(1) != y
        x_succ, loss_succ = x0, loss0
        x_best, best_loss, g_best = x0, loss0, g0.clone()  # g0 itself is consumed by the step rule

        def track(
            x_new: torch.Tensor, loss_new: torch.Tensor, logits_new: torch.Tensor, g_new: torch.Tensor | None
        ) -> None:
            nonlocal x_best, best_loss, g_best, success, x_succ, loss_succ
            improved = loss_new > best_loss
            improved_s = per_sample(improved, x_new)
            x_best = torch.where(improved_s, x_new, x_best)
            best_loss = torch.where(improved, loss_new, best_loss)
            if g_new is not None:
                g_best = torch.where(improved_s, g_new, g_best)
            now = logits_new.argmax(1) != y
            newly = now & ~success
            x_succ = torch.where(per_sample(newly, x_new), x_new, x_succ)
            loss_succ = torch.where(newly, loss_new, loss_succ)
            success = success | now

        def oracle(point: torch.Tensor, last: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
            if last:  # the final iterate needs its loss, not a gradient
                loss, logits_last = grad_fn.evaluate(point, y, target)
                return loss, logits_last, None
            return grad_fn(point, y, target, index)

        steps = self.steps
        x_prev = x0
        x_cur = proj(step_rule(g0, eta).add_(x0))
        loss_cur, logits, g_cur = oracle(x_cur, steps == 1)
        track(x_cur, loss_cur, logits, g_cur)
        increases = (loss_cur > loss0).to(x.dtype)
        best_at_check = best_loss
        halved_last = torch.zeros_like(success)
        last_check = 0
        for k in range(1, steps):
            last = k == steps - 1
            assert g_cur is not None
            z = proj(step_rule(g_cur, eta).add_(x_cur))
            x_new = proj(x_cur + alpha * (z - x_cur) + (1.0 - alpha) * (x_cur - x_prev))
            loss_new, logits, g_new = oracle(x_new, last)
            increased = loss_new > loss_cur
            track(x_new, loss_new, logits, g_new)
            x_prev, x_cur, loss_cur, g_cur = x_cur, x_new, loss_new, g_new
            if k in self._checkpoints and not last:
                too_few_increases = increases < self.rho * (k - last_check)
                stalled = ~halved_last & (best_loss <= best_at_check)
                halve = too_few_increases | stalled
                halve_s = per_sample(halve, x)
                eta = torch.where(halve_s, eta * 0.5, eta)
                x_cur = torch.where(halve_s, x_best, x_cur)
                loss_cur = torch.where(halve, best_loss, loss_cur)
                g_cur = torch.where(halve_s, g_best, g_cur)
                halved_last, best_at_check, last_check = halve, best_loss, k
                increases = torch.zeros_like(increases)
                if bool(success.all()):  # one sync per checkpoint, not per step
                    break
            increases = increases + increased.to(x.dtype)
        x_out = torch.where(per_sample(success, x), x_succ, x_best)
        return x_out, torch.where(success, loss_succ, best_loss), success, eta.flatten().float()


class APGDCE(APGD):
    """APGD on the cross-entropy loss (AutoAttack's first member)."""

    name = "apgd_ce"
    description = "Auto-PGD on cross-entropy (Croce & Hein 2020)"
    default_loss = "ce"
    loss_is_fixed = True


class APGDDLR(APGD):
    """APGD on the DLR loss: shift- and scale-invariant in the logits (needs >= 3 classes)."""

    name = "apgd_dlr"
    description = "Auto-PGD on the difference-of-logits-ratio loss (Croce & Hein 2020)"
    default_loss = "dlr"
    loss_is_fixed = True


class APGDT(APGD):
    """Targeted APGD: the targeted DLR loss towards each of the top ``n_target_classes`` classes.

    Its goal is still misclassification: ``success`` means the prediction differs from
    the label, whichever target got it there (needs >= 4 classes for targeted DLR).

    Args:
        n_target_classes: how many of the highest-scoring other classes to target, one run each.
    """

    name = "apgd_t"
    description = "targeted Auto-PGD on the targeted DLR loss, one run per top class (Croce & Hein 2020)"
    targeted = True
    default_loss = "dlr_targeted"

    def __init__(self, *, n_target_classes: Annotated[int, Param(ge=1)] = 9, **params: Any) -> None:
        super().__init__(**params)
        self.n_target_classes = n_target_classes

    def _target_sets(self, clean_logits: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor | None]:
        count = min(self.n_target_classes, clean_logits.shape[1] - 1)
        top = top_other_classes(clean_logits, y, count)
        return [top[:, i] for i in range(count)]
