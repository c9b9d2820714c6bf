"""FAB-T: the targeted Fast Adaptive Boundary attack (Croce & Hein, ICML 2020), from the paper.

FAB looks for the *smallest* perturbation that changes the decision, not the largest
loss inside the ball, so it does not depend on a loss surface that a model can flatten
(softmax saturation zeroes cross-entropy's gradient, but not a logit difference's). It is
AutoAttack's third member for exactly that reason. One iteration, for the target class t:

* linearise the decision boundary between t and the label y at the iterate x:
  {z : g(x) + <grad g(x), z - x> = 0} with g = f_t - f_y;
* project both the iterate and the clean image x_orig onto that hyperplane inside the
  [0, 1] box (:func:`~sat_toolkit.attacks.boundary.project_onto_hyperplane`): d and d_orig;
* step to a convex combination biased towards the clean image, with overshoot eta:
  x <- clip((1 - a)(x + eta d) + a (x_orig + eta d_orig)),
  a = min(||d|| / (||d|| + ||d_orig||), alpha_max);
* when x is misclassified, keep it if it is the closest adversarial point so far, then
  take the backward step x <- x_orig + beta (x - x_orig) to look for a closer one.

The first run of each target starts at x_orig; each further restart starts from a random
point at distance min(eps, best so far) / 2 (uniform direction in L-inf's cube, Gaussian
for L2). Targets are the top ``n_target_classes`` classes other than the label by clean
logit, each run in turn on the samples not yet fooled within eps. A sample counts as
fooled when the closest adversarial point found lies within eps; its example is that
point, the clean image otherwise.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import torch

from sat_toolkit.attacks.base import Attack, Model, Probability, Restarts, Steps, per_sample
from sat_toolkit.attacks.boundary import project_onto_hyperplane
from sat_toolkit.attacks.gradient import LossGradient, predict
from sat_toolkit.attacks.losses import Loss
from sat_toolkit.attacks.result import AttackResult
from sat_toolkit.attacks.targets import top_other_classes
from sat_toolkit.params import Param


def logit_gap(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """f_t - f_y: positive exactly where the target class beats the label (FAB's boundary function)."""
    assert target is not None
    return (logits.gather(1, target.unsqueeze(1)) - logits.gather(1, y.unsqueeze(1))).squeeze(1)


LOGIT_GAP = Loss(logit_gap, targeted=True, min_classes=2, description="target logit minus label logit")


def _norms(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1)
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)


class FABT(Attack):
    """Targeted FAB, L-infinity or L2 (AutoAttack's ``fab-t``); see the module docstring.

    Args:
        eps: budget (pixel space): a minimal perturbation larger than eps does not count.
        steps: iterations per target and restart (AutoAttack: 100).
        restarts: runs per target; the first from the clean image, then random starts.
        n_target_classes: targets, the top classes other than the label (AutoAttack: 9).
        alpha_max: the largest weight of the step from the clean image (paper: 0.1).
        eta: overshoot past the linearised boundary (paper: 1.05).
        beta: the backward step towards the clean image after a success (paper: 0.9).
        norm, bn_mode, precision, loss_scale, seed: see :class:`Attack`.
    """

    name = "fab_t"
    description = (
        "targeted FAB: minimal-norm steps onto the linearised boundary of each top class (Croce & Hein 2020)"
    )
    supported_norms = ("linf", "l2")

    def __init__(
        self,
        *,
        steps: Steps = 100,
        restarts: Restarts = 1,
        n_target_classes: Annotated[int, Param(ge=1)] = 9,
        alpha_max: Probability = 0.1,
        eta: Annotated[float, Param(ge=1, le=2, doc="overshoot past the linearised boundary")] = 1.05,
        beta: Annotated[float, Param(gt=0, lt=1, doc="the backward step after a success")] = 0.9,
        **threat: Any,
    ) -> None:
        super().__init__(**threat)
        self.steps = steps
        self.restarts = restarts
        self.n_target_classes = n_target_classes
        self.alpha_max = alpha_max
        self.eta = eta
        self.beta = beta

    def _perturb(self, model: Model, x: torch.Tensor, y: torch.Tensor, eps: float) -> AttackResult:
        batch = x.shape[0]
        projection = self.projection_cls(x, eps)
        clean_logits = predict(model, x, self._precision)
        success = clean_logits.argmax(1) != y
        best = x.clone()
        best_norm = torch.where(success, torch.zeros(batch, device=x.device), math.inf)
        if eps == 0.0:
            return AttackResult(x_adv=best, success=success, eps=eps, info={"norm": best_norm})
        count = min(self.n_target_classes, clean_logits.shape[1] - 1)
        targets = top_other_classes(clean_logits, y, count)
        grad_fn = LossGradient(model, LOGIT_GAP, self._precision, batch, x.device, self.bn_mode == "eval")
        generator = self.generator(x.device)
        # With BatchNorm in eval mode samples are independent: only the unfooled are attacked.
        subset = self.bn_mode == "eval"
        for k in range(count):
            for restart in range(self.restarts):
                index = (~success).nonzero().squeeze(1) if subset else torch.arange(batch, device=x.device)
                if index.numel() == 0:
                    break
                start = self._start(x[index], best_norm[index], eps, restart, generator)
                found, found_norm = self._run(
                    model, grad_fn, x[index], y[index], targets[index, k], start, index, eps
                )
                closer = found_norm < best_norm[index]
                best[index] = torch.where(per_sample(closer, found), found, best[index])
                best_norm[index] = torch.where(closer, found_norm, best_norm[index])
                success = best_norm <= eps
        x_adv = projection.finalize(projection(torch.where(per_sample(success, x), best, x)))
        return AttackResult(
            x_adv=x_adv.detach(),
            zero_grad=grad_fn.zero_grad,
            success=predict(model, x_adv, self._precision).argmax(1) != y,
            target=targets[:, 0],
            eps=eps,
            info={"norm": best_norm, "evaluations": grad_fn.evaluations},
        )

    def _start(
        self,
        x: torch.Tensor,
        best_norm: torch.Tensor,
        eps: float,
        restart: int,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """The clean image for the first run, then a random point at min(eps, best) / 2."""
        if restart == 0:
            return x.clone()
        gen_device = generator.device if generator is not None else x.device
        if self.norm == "linf":
            noise = torch.rand(x.shape, generator=generator, device=gen_device).to(x) * 2 - 1
        else:
            noise = torch.randn(x.shape, generator=generator, device=gen_device).to(x)
        radius = best_norm.clamp(max=eps) / 2
        direction = noise / per_sample(_norms(noise, self.norm).clamp_min(1e-12), noise)
        return (x + direction * per_sample(radius, x)).clamp_(0.0, 1.0)

    def _run(
        self,
        model: Model,
        grad_fn: LossGradient,
        x_orig: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor,
        start: torch.Tensor,
        index: torch.Tensor,
        eps: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One run towards ``target``: the closest adversarial point found and its norm (inf: none).

        Samples whose closest point already lies within eps leave the batch (they are
        fooled, and a closer point would not change that) when samples are independent.
        """
        norm, n = self.norm, x_orig.shape[0]
        flat_orig = x_orig.flatten(1)
        best = x_orig.clone()
        best_norm = torch.full((n,), math.inf, device=x_orig.device)
        x = start
        live = torch.arange(n, device=x_orig.device)  # rows still iterating
        for _ in range(self.steps):
            gap, _, grad = grad_fn(x, y[live], target[live], index[live])
            w = grad.flatten(1)
            flat = x.flatten(1)
            orig = flat_orig[live]
            d = project_onto_hyperplane(flat, w, gap, norm)
            d_orig = project_onto_hyperplane(orig, w, gap + (w * (orig - flat)).sum(dim=1), norm)
            size, size_orig = _norms(d, norm).clamp_min(1e-8), _norms(d_orig, norm).clamp_min(1e-8)
            alpha = (size / (size + size_orig)).clamp_(max=self.alpha_max).unsqueeze(1)
            moved = ((1 - alpha) * (flat + self.eta * d) + alpha * (orig + self.eta * d_orig)).clamp_(
                0.0, 1.0
            )
            x = moved.view_as(x)
            adversarial = predict(model, x, self._precision).argmax(1) != y[live]
            distance = _norms(moved - orig, norm)
            closer = adversarial & (distance < best_norm[live])
            best[live] = torch.where(per_sample(closer, x), x, best[live])
            best_norm[live] = torch.where(closer, distance, best_norm[live])
            backward = orig.view_as(x) + self.beta * (x - orig.view_as(x))
            x = torch.where(per_sample(adversarial, x), backward, x)
            if grad_fn.independent:
                keep = best_norm[live] > eps
                if not bool(keep.all()):
                    live, x = live[keep], x[keep]
                    if live.numel() == 0:
                        break
        return best, best_norm
