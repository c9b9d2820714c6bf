"""Feasible sets: the eps-ball around the clean input intersected with the [0, 1] box.

A :class:`Projection` is built once per batch (``LinfProjection(x, eps)``) so the
per-step work is one fused clamp. The bounds are rounded *inward* (see
:func:`linf_bounds`), so a returned example satisfies ``|x_adv - x| <= eps`` and
``0 <= x_adv <= 1`` exactly, whatever arithmetic a checker uses. Without that care
``float32(x + eps)`` lies above ``x + eps`` for about half of the pixels.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from sat_toolkit.attacks.registry import Registry


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Shape a [B] tensor to broadcast against a [B, ...] batch."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def _round_inward(
    lo64: torch.Tensor, hi64: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    lo = lo64.to(dtype)
    hi = hi64.to(dtype)
    lo = torch.where(lo.double() < lo64, torch.nextafter(lo, torch.full_like(lo, math.inf)), lo)
    hi = torch.where(hi.double() > hi64, torch.nextafter(hi, torch.full_like(hi, -math.inf)), hi)
    return lo, hi


def linf_bounds(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """[max(x - eps, 0), min(x + eps, 1)], rounded so that it lies inside the exact ball.

    For float32/float64 inputs the bounds are computed in the input dtype from a budget
    shrunk by two units in the last place of 1.0: a sum below 2 rounds by at most half
    of that, so ``x + e`` can never round past ``x + eps`` (the budget lost is 2.4e-7
    per pixel in float32, far below anything an attack can exploit). This costs four
    element-wise passes, like the naive clamps. Lower-precision inputs (bf16, fp16),
    where that margin would be a visible part of eps, take an exact float64 path.
    """
    if eps >= 1.0:
        return torch.zeros_like(x), torch.ones_like(x)
    ulp_one = torch.finfo(x.dtype).eps
    if ulp_one <= 2.0**-23:
        e = max(eps - 2.0 * ulp_one, 0.0)
        return (x - e).clamp_(min=0.0), (x + e).clamp_(max=1.0)
    xd = x.double()
    return _round_inward((xd - eps).clamp_(min=0.0), (xd + eps).clamp_(max=1.0), x.dtype)


class Projection(ABC):
    """Projection onto {z : ||z - x|| <= eps, 0 <= z <= 1} for a fixed batch ``x``."""

    norm: ClassVar[str]

    def __init__(self, x: torch.Tensor, eps: float) -> None:
        self.x = x
        self.eps = float(eps)

    @abstractmethod
    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """Project ``z`` (may reuse ``z``'s memory; callers pass a fresh tensor)."""

    @abstractmethod
    def random(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A random feasible point (the random start)."""

    def finalize(self, z: torch.Tensor) -> torch.Tensor:
        """Make containment exact before an example is returned (a no-op where it already is)."""
        return z

    def subset(self, index: torch.Tensor) -> Projection:
        """The same constraint restricted to the samples ``index``."""
        return type(self)(self.x[index], self.eps)


class LinfProjection(Projection):
    """L-infinity ball: one clamp between bounds computed once."""

    norm = "linf"

    def __init__(self, x: torch.Tensor, eps: float) -> None:
        super().__init__(x, eps)
        self.lo, self.hi = linf_bounds(x.detach(), self.eps)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return z.clamp_(self.lo, self.hi)

    def random(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.empty_like(self.x).uniform_(-self.eps, self.eps, generator=generator)
        return self(self.x + noise)

    def subset(self, index: torch.Tensor) -> LinfProjection:
        sub = LinfProjection.__new__(LinfProjection)
        sub.x, sub.eps, sub.lo, sub.hi = self.x[index], self.eps, self.lo[index], self.hi[index]
        return sub


class L2Projection(Projection):
    """L2 ball: rescale the perturbation, then clip to the box.

    Clipping to the box only moves coordinates towards ``x`` (which lies in the box), so
    it never leaves the ball; rounding can, by an ulp, which :meth:`finalize` removes.
    """

    norm = "l2"
    #: Relative slack left by :meth:`finalize` so float32 and float64 norms both pass.
    slack: ClassVar[float] = 4e-6

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        delta = z - self.x
        norms = delta.flatten(1).norm(dim=1)
        factor = (self.eps / norms.clamp_min(1e-30)).clamp_(max=1.0)
        return (self.x + delta * _per_sample(factor, delta)).clamp_(0.0, 1.0)

    def random(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniform in the ball (direction from a Gaussian, radius eps * U^(1/d)), then clipped."""
        x = self.x
        direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        direction = direction / _per_sample(direction.flatten(1).norm(dim=1).clamp_min(1e-30), x)
        dim = x[0].numel()
        radius = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype).pow(1.0 / dim)
        return self(x + direction * _per_sample(radius * self.eps, x))

    def finalize(self, z: torch.Tensor) -> torch.Tensor:
        limit = self.eps * (1.0 - self.slack)
        xd = self.x.double()
        for _ in range(8):
            norms = (z.double() - xd).flatten(1).norm(dim=1)
            over = norms > limit
            if not bool(over.any()):
                return z
            shrink = torch.where(
                over, limit / norms.clamp_min(1e-300) * (1.0 - self.slack), torch.ones_like(norms)
            )
            shrunk = (self.x + (z - self.x) * _per_sample(shrink.to(z.dtype), z)).clamp_(0.0, 1.0)
            z = torch.where(_per_sample(over, z), shrunk, z)
        return torch.where(_per_sample(over, z), self.x, z)  # unreachable in practice: fall back to clean


PROJECTIONS: Registry[type[Projection]] = Registry("norm")
PROJECTIONS.register("linf", LinfProjection)
PROJECTIONS.register("l2", L2Projection)
