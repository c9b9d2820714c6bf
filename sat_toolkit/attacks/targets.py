"""Target classes for targeted attacks, chosen from the clean logits.

``random`` draws a class other than the label uniformly; ``least_likely`` takes the
clean prediction's least probable class (the hardest target, as in Kurakin et al.).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from sat_toolkit.attacks.registry import Registry

TargetRule = Callable[[torch.Tensor, torch.Tensor, "torch.Generator | None"], torch.Tensor]

TARGETS: Registry[TargetRule] = Registry("target rule")


def random_target(logits: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """A uniformly random class different from ``y``."""
    num_classes = logits.shape[1]
    device = generator.device if generator is not None else y.device
    offset = torch.randint(1, num_classes, y.shape, generator=generator, device=device).to(y.device)
    return (y + offset) % num_classes


def least_likely_target(
    logits: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """The class with the lowest clean logit other than ``y``."""
    masked = logits.scatter(1, y.unsqueeze(1), float("inf"))
    return masked.argmin(dim=1)


def top_other_classes(logits: torch.Tensor, y: torch.Tensor, count: int) -> torch.Tensor:
    """[B, count]: the ``count`` highest-scoring classes other than ``y`` (APGD-T's targets)."""
    masked = logits.scatter(1, y.unsqueeze(1), float("-inf"))
    return masked.topk(count, dim=1).indices


TARGETS.register("random", random_target)
TARGETS.register("least_likely", least_likely_target)
