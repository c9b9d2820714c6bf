"""Square attack, L-infinity (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020).

A score-based random search that never looks at a gradient, which is exactly why the
evaluator runs it: if Square fools a model that gradient attacks could not, the
gradients are masked. Written from the paper:

* start from vertical stripes: every column of every channel at +eps or -eps;
* at iteration i, pick a square window of side s = round(sqrt(p_i * H * W)) at a random
  position and set it, per channel, to +eps or -eps around the clean image;
* keep the proposal only where it increases the loss (the margin loss by default);
* p_i follows the piecewise-constant schedule p_init / 2^k over the query budget
  (rescaled to 10 000 queries as in the paper).

Only samples not yet fooled are queried, so fooled samples stop costing queries (with
BatchNorm in eval mode; with batch statistics the whole batch is always evaluated).
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import torch

from sat_toolkit.attacks.base import Attack, Model, Probability, Restarts, per_sample, take_better
from sat_toolkit.attacks.gradient import predict
from sat_toolkit.attacks.losses import LOSSES, resolve_loss
from sat_toolkit.attacks.projections import LinfProjection
from sat_toolkit.attacks.result import AttackResult
from sat_toolkit.errors import SatError
from sat_toolkit.params import Param

_SCHEDULE = (
    (10, 1),
    (50, 2),
    (200, 4),
    (500, 8),
    (1000, 16),
    (2000, 32),
    (4000, 64),
    (6000, 128),
    (8000, 256),
)


def p_selection(p_init: float, iteration: int, total: int) -> float:
    """The fraction of pixels to change at ``iteration`` of ``total`` (paper's schedule)."""
    it = int(iteration / total * 10000)
    for bound, divisor in _SCHEDULE:
        if it <= bound:
            return p_init / divisor
    return p_init / 512


class Square(Attack):
    """Square attack (L-infinity, untargeted, score-based).

    Args:
        eps: budget (pixel space).
        queries: model evaluations per sample and restart (AutoAttack: 5000).
        p_init: initial fraction of pixels changed per query (AutoAttack: 0.8).
        restarts: runs from new stripes for the samples still robust.
        loss: the loss to maximise (``"margin"`` as in the paper, or ``"ce"``).
        bn_mode, precision, seed: see :class:`Attack`.
    """

    name = "square"
    description = "Square attack: gradient-free random search with square updates (L-inf)"
    supported_norms = ("linf",)
    pinned = ("loss_scale",)  # no backward pass, so nothing to scale

    def __init__(
        self,
        *,
        queries: Annotated[int, Param(ge=1, le=1_000_000)] = 5000,
        p_init: Probability = 0.8,
        restarts: Restarts = 1,
        loss: Annotated[str, Param(one_of=LOSSES)] = "margin",
        **threat: Any,
    ) -> None:
        super().__init__(**threat)
        self.queries = queries
        self.p_init = p_init
        self.restarts = restarts
        self.loss = loss
        self._loss = resolve_loss(loss, targeted=False)

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        super().check_params(params)
        resolve_loss(params.get("loss", "margin"), targeted=False)

    def _signs(
        self, shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None
    ) -> torch.Tensor:
        gen_device = generator.device if generator is not None else device
        return torch.randint(0, 2, shape, generator=generator, device=gen_device).to(device).bool()

    def _randint(self, high: int, generator: torch.Generator | None) -> int:
        gen_device = generator.device if generator is not None else "cpu"
        return int(torch.randint(0, high, (1,), generator=generator, device=gen_device))

    def _perturb(self, model: Model, x: torch.Tensor, y: torch.Tensor, eps: float) -> AttackResult:
        if x.dim() != 4:
            raise SatError(f"attack 'square' needs image batches [B, C, H, W]; got shape {tuple(x.shape)}")
        if eps == 0.0:  # nothing to search; report the clean predictions
            loss, success = self._evaluate(model, x, y)
            return AttackResult(x_adv=x.clone(), success=success, loss=loss, eps=eps, info={"queries": None})
        projection = LinfProjection(x, eps)
        generator = self.generator(x.device)
        batch = x.shape[0]
        x_out = x.clone()
        loss_out = torch.full((batch,), -math.inf, device=x.device)
        success = torch.zeros(batch, dtype=torch.bool, device=x.device)
        queries = torch.zeros(batch, dtype=torch.long, device=x.device)
        # Samples are independent only with BatchNorm in eval mode; with batch statistics
        # a sub-batch (possibly of one sample) would change what the model computes.
        self._subset = self.bn_mode == "eval"
        for _ in range(self.restarts):
            active = (~success).nonzero().squeeze(1) if self._subset else torch.arange(batch, device=x.device)
            if active.numel() == 0:
                break
            x_run, loss_run, success_run = self._run(
                model, projection.lo[active], projection.hi[active], y[active], queries, active, generator
            )
            better = take_better(success[active], loss_out[active], success_run, loss_run)
            x_out[active] = torch.where(per_sample(better, x_run), x_run, x_out[active])
            loss_out[active] = torch.where(better, loss_run, loss_out[active])
            success[active] = success[active] | success_run
        return AttackResult(
            x_adv=x_out, zero_grad=None, success=success, loss=loss_out, eps=eps, info={"queries": queries}
        )

    def _evaluate(self, model: Model, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = predict(model, x, self._precision)
        return self._loss(logits, y, None), logits.argmax(1) != y

    def _run(
        self,
        model: Model,
        lo: torch.Tensor,
        hi: torch.Tensor,
        y: torch.Tensor,
        queries: torch.Tensor,
        index: torch.Tensor,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One run on a sub-batch whose bounds are ``lo``/``hi``; x is always lo or hi per pixel."""
        n, channels, height, width = lo.shape
        # Vertical stripes: one sign per (sample, channel, column).
        x_best = torch.where(self._signs((n, channels, 1, width), lo.device, generator), hi, lo)
        loss_best, success = self._evaluate(model, x_best, y)
        queries[index] += 1
        everyone = torch.arange(n, device=lo.device)
        for i in range(1, self.queries):
            if self._subset:
                todo = (~success).nonzero().squeeze(1)
                if todo.numel() == 0:
                    break
            else:
                todo = everyone
                if i % 10 == 0 and bool(success.all()):
                    break
            p = p_selection(self.p_init, i, self.queries)
            side = max(int(round(math.sqrt(p * height * width))), 1)
            side = min(side, height, width)
            top = self._randint(height - side + 1, generator)
            left = self._randint(width - side + 1, generator)
            rows, cols = slice(top, top + side), slice(left, left + side)
            lo_t, hi_t, cur = lo[todo], hi[todo], x_best[todo]
            window_old = cur[:, :, rows, cols]
            window = torch.where(
                self._signs((todo.numel(), channels, 1, 1), lo.device, generator),
                hi_t[:, :, rows, cols],
                lo_t[:, :, rows, cols],
            )
            # A proposal equal to the current window wastes a query: redraw those (a few tries).
            for _ in range(10):
                same = (window == window_old).flatten(1).all(1)
                if not bool(same.any()):
                    break
                redraw = torch.where(
                    self._signs((todo.numel(), channels, 1, 1), lo.device, generator),
                    hi_t[:, :, rows, cols],
                    lo_t[:, :, rows, cols],
                )
                window = torch.where(per_sample(same, window), redraw, window)
            candidate = cur.clone()
            candidate[:, :, rows, cols] = window
            loss_new, success_new = self._evaluate(model, candidate, y[todo])
            queries[index[todo]] += 1
            improved = loss_new > loss_best[todo]
            x_best[todo] = torch.where(per_sample(improved, candidate), candidate, cur)
            loss_best[todo] = torch.where(improved, loss_new, loss_best[todo])
            success[todo] = torch.where(improved, success_new, success[todo])
        return x_best, loss_best, success
