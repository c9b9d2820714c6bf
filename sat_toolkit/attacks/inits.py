"""Starting points: clean, uniform random in the ball, or a mix of the two.

An init rule maps ``(x, projection, fraction, generator)`` to a feasible starting batch.
``mixed`` is SAT's training recipe: the official code starts from a random point for
80% of the examples and from the clean image for the rest, so the attacker sees both the
local gradient at x (what FGSM exploits) and gradients away from x (against the
gradient masking that a clean start alone invites).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from sat_toolkit.attacks.projections import Projection
from sat_toolkit.attacks.registry import Registry

InitRule = Callable[[torch.Tensor, Projection, float, "torch.Generator | None"], torch.Tensor]

INITS: Registry[InitRule] = Registry("init rule")


def zero_init(
    x: torch.Tensor, projection: Projection, fraction: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Start at the clean input."""
    return x.clone()


def uniform_init(
    x: torch.Tensor, projection: Projection, fraction: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Start at a uniformly random point of the ball (for L-inf: x + U(-eps, eps), projected)."""
    return projection.random(generator)


def mixed_init(
    x: torch.Tensor, projection: Projection, fraction: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Random start for round(fraction * B) randomly chosen samples, clean start for the rest."""
    batch = x.shape[0]
    n_random = round(fraction * batch)
    if n_random <= 0:
        return x.clone()
    if n_random >= batch:
        return projection.random(generator)
    start = projection.random(generator)
    device = generator.device if generator is not None else x.device
    chosen = torch.randperm(batch, generator=generator, device=device)[:n_random].to(x.device)
    mask = torch.zeros(batch, dtype=torch.bool, device=x.device)
    mask[chosen] = True
    return torch.where(mask.view(-1, *([1] * (x.dim() - 1))), start, x)


INITS.register("zero", zero_init)
INITS.register("uniform", uniform_init)
INITS.register("mixed", mixed_init)


def init_for_fraction(fraction: float) -> str:
    """The init rule that a ``random_start_fraction`` describes."""
    if fraction <= 0.0:
        return "zero"
    if fraction >= 1.0:
        return "uniform"
    return "mixed"
