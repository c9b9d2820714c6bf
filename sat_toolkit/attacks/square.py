"""Square attack, L-infinity and L2 (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020).

A score-based random search that never looks at a gradient, which is exactly why the
evaluator runs it: if Square fools a model that gradient attacks could not, the
gradients are masked. Written from the paper. Both norms keep a proposal only where it
increases the loss (the margin loss by default), change one square window of side
s = round(sqrt(p_i * H * W)) per iteration, and let p_i follow the piecewise-constant
schedule p_init / 2^k over the query budget (rescaled to 10 000 queries as in the paper).

* L-inf: start from vertical stripes (every column of every channel at +eps or -eps);
  a proposal sets the window, per channel, to +eps or -eps around the clean image.
* L2: start from a grid of "pseudo-Gaussian" bumps with random signs scaled to norm eps;
  a proposal moves the perturbation's mass in a second random window W2, plus the budget
  still unused, into the window W1, along W1's old direction plus a meta-pattern with
  random sign: two pseudo-Gaussian halves of opposite sign (mass concentrated at their
  centres), transposed at random. The norm stays eps; clipping to [0, 1] only lowers it.

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
from sat_toolkit.attacks.projections import L2Projection, LinfProjection, Projection
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


def pseudo_gaussian(rows: int, cols: int) -> torch.Tensor:
    """The paper's bump on a rows x cols rectangle: nested rings adding 1/(n+1-k)^2 towards the centre."""
    n = rows // 2
    weights = torch.tensor([1.0 / (n + 1 - k) ** 2 for k in range(n + 1)]).cumsum(0)
    r = (torch.arange(rows) - rows // 2).abs().unsqueeze(1)
    c = (torch.arange(cols) - cols // 2).abs().unsqueeze(0)
    depth = n - torch.maximum(r, c)  # how many rings enclose the pixel
    return torch.where(depth >= 0, weights[depth.clamp(min=0)], torch.zeros(()))


def meta_pattern(side: int, transpose: bool) -> torch.Tensor:
    """Two pseudo-Gaussian halves of opposite sign side by side (side x side), unit L2 norm."""
    half = side // 2
    pattern = torch.cat([pseudo_gaussian(side, half), -pseudo_gaussian(side, side - half)], dim=1)
    if transpose:
        pattern = pattern.t()
    return pattern / pattern.norm().clamp_min(1e-12)


def p_selection(p_init: float, iteration: int, total: int) -> float:
    """The fraction of pixels to change at ``iteration`` of ``total`` (paper's schedule)."""
    it = int(iteration / total * 10000)
    for bound, divisor in _SCHEDULE:
        if it <= bound:
            return p_init / divisor
    return p_init / 512


class Square(Attack):
    """Square attack (L-infinity or L2, untargeted, score-based).

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
    supported_norms = ("linf", "l2")
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
        projection = self.projection_cls(x, eps)
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
                model, projection.subset(active), y[active], queries, active, generator
            )
            better = take_better(success[active], loss_out[active], success_run, loss_run)
            x_out[active] = torch.where(per_sample(better, x_run), x_run, x_out[active])
            loss_out[active] = torch.where(better, loss_run, loss_out[active])
            success[active] = success[active] | success_run
        return AttackResult(
            x_adv=projection.finalize(x_out),
            zero_grad=None,
            success=success,
            loss=loss_out,
            eps=eps,
            info={"queries": queries},
        )

    def _evaluate(self, model: Model, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = predict(model, x, self._precision)
        return self._loss(logits, y, None), logits.argmax(1) != y

    def _run(
        self,
        model: Model,
        projection: Projection,
        y: torch.Tensor,
        queries: torch.Tensor,
        index: torch.Tensor,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One run on a sub-batch (``projection`` holds its clean images and budget)."""
        _, _, height, width = projection.x.shape
        x_best = self._initial(projection, generator)
        loss_best, success = self._evaluate(model, x_best, y)
        queries[index] += 1
        everyone = torch.arange(len(y), device=y.device)
        for i in range(1, self.queries):
            if self._subset:
                todo = (~success).nonzero().squeeze(1)
                if todo.numel() == 0:
                    break
            else:
                todo = everyone
                if i % 10 == 0 and bool(success.all()):
                    break
            side = max(int(round(math.sqrt(p_selection(self.p_init, i, self.queries) * height * width))), 1)
            if self.norm == "l2":
                side = max(side, 3)  # the meta-pattern needs room for its two halves
            side = min(side, height, width)
            current = x_best[todo]
            candidate = self._proposal(projection.subset(todo), current, side, generator)
            loss_new, success_new = self._evaluate(model, candidate, y[todo])
            queries[index[todo]] += 1
            improved = loss_new > loss_best[todo]
            x_best[todo] = torch.where(per_sample(improved, candidate), candidate, current)
            loss_best[todo] = torch.where(improved, loss_new, loss_best[todo])
            success[todo] = torch.where(improved, success_new, success[todo])
        return x_best, loss_best, success

    def _window(
        self, side: int, height: int, width: int, generator: torch.Generator | None
    ) -> tuple[slice, slice]:
        top = self._randint(height - side + 1, generator)
        left = self._randint(width - side + 1, generator)
        return slice(top, top + side), slice(left, left + side)

    def _initial(self, projection: Projection, generator: torch.Generator | None) -> torch.Tensor:
        x = projection.x
        n, channels, height, width = x.shape
        if isinstance(projection, LinfProjection):  # vertical stripes: one sign per column and channel
            return torch.where(
                self._signs((n, channels, 1, width), x.device, generator), projection.hi, projection.lo
            )
        # L2: a grid of bumps with random signs (tiles of a fifth of the image), scaled to eps.
        tile = max(min(height, width) // 5, 1)
        delta = torch.zeros_like(x)
        bump = pseudo_gaussian(tile, tile).to(x)
        for top in range(0, height - tile + 1, tile):
            for left in range(0, width - tile + 1, tile):
                sign = self._signs((n, channels, 1, 1), x.device, generator).to(x.dtype) * 2 - 1
                delta[:, :, top : top + tile, left : left + tile] = sign * bump
        return projection(x + _scaled_to(delta, projection.eps))

    def _proposal(
        self, projection: Projection, current: torch.Tensor, side: int, generator: torch.Generator | None
    ) -> torch.Tensor:
        """A candidate for every row of ``current``: one window changed (see the module docstring)."""
        _, _, height, width = current.shape
        rows, cols = self._window(side, height, width, generator)
        if isinstance(projection, LinfProjection):
            return self._proposal_linf(projection, current, rows, cols, generator)
        assert isinstance(projection, L2Projection)
        rows2, cols2 = self._window(side, height, width, generator)
        transpose = self._randint(2, generator) == 1
        return self._proposal_l2(
            projection, current, (rows, cols), (rows2, cols2), side, transpose, generator
        )

    def _proposal_linf(
        self,
        projection: LinfProjection,
        current: torch.Tensor,
        rows: slice,
        cols: slice,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        n, channels = current.shape[:2]
        lo, hi = projection.lo[:, :, rows, cols], projection.hi[:, :, rows, cols]
        window_old = current[:, :, rows, cols]
        window = torch.where(self._signs((n, channels, 1, 1), current.device, generator), hi, lo)
        # A proposal equal to the current window wastes a query: redraw those (a few tries).
        for _ in range(10):
            same = (window == window_old).flatten(1).all(1)
            if not bool(same.any()):
                break
            redraw = torch.where(self._signs((n, channels, 1, 1), current.device, generator), hi, lo)
            window = torch.where(per_sample(same, window), redraw, window)
        candidate = current.clone()
        candidate[:, :, rows, cols] = window
        return candidate

    def _proposal_l2(
        self,
        projection: L2Projection,
        current: torch.Tensor,
        first: tuple[slice, slice],
        second: tuple[slice, slice],
        side: int,
        transpose: bool,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        x, eps = projection.x, projection.eps
        n, channels = current.shape[:2]
        delta = current - x
        unused = (eps**2 - delta.pow(2).sum(dim=(1, 2, 3))).clamp_(min=0.0)  # [n]
        both = torch.zeros_like(delta[:1, :1])
        both[..., first[0], first[1]] = 1.0
        both[..., second[0], second[1]] = 1.0
        # Per channel: the mass in W1 and W2 plus an even share of the unused budget ...
        budget = ((delta.pow(2) * both).sum(dim=(2, 3)) + unused.unsqueeze(1) / channels).sqrt()  # [n, c]
        old = delta[:, :, first[0], first[1]]
        old_direction = old / old.flatten(2).norm(dim=2).clamp_min(1e-12)[..., None, None]
        sign = self._signs((n, channels, 1, 1), x.device, generator).to(x.dtype) * 2 - 1
        direction = sign * meta_pattern(side, transpose).to(x) + old_direction
        direction = direction / direction.flatten(2).norm(dim=2).clamp_min(1e-12)[..., None, None]
        # ... goes into W1, along its old direction plus the signed meta-pattern; W2 is emptied.
        proposal = delta.clone()
        proposal[:, :, second[0], second[1]] = 0.0
        proposal[:, :, first[0], first[1]] = direction * budget[..., None, None]
        return projection(x + proposal)


def _scaled_to(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """``delta`` rescaled to L2 norm ``eps`` per sample."""
    norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
    return delta * per_sample(eps / norms, delta)
