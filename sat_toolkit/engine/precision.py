"""Attacks and evaluations run at the precision they ask for, not at accelerate's.

With ``optimizer.mixed_precision = "bf16"``, accelerate patches the prepared module's
``forward`` (an attribute of the instance) to run under autocast and return float32. The
training forward wants exactly that. An attack does not: each one chooses its precision
(``precision`` of ``attack.train``, ``attack.validate`` and the evaluation attacks, the
latter fp32), and an autocast entered inside the model's forward overrides the one the
attack chose, so a bf16 run used to validate and evaluate in bf16 while its recipe said
fp32, and ``sat-toolkit eval`` of its exported model (fp32) did not reproduce its
metrics. timm's EMA copies the patched forward along with the weights.
"""

from __future__ import annotations

from typing import Any

from torch import nn


class ClassForward(nn.Module):
    """``module`` called through its class's ``forward``: the same weights, buffers and
    submodules (hooks on them included), without a forward patched onto the instance."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.training = module.training  # the flag only: ``train()`` would reset every submodule

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return type(self.module).forward(self.module, *args, **kwargs)


def unpatched(module: nn.Module) -> nn.Module:
    """``module`` itself, or a :class:`ClassForward` view where its forward was patched."""
    return ClassForward(module) if "forward" in vars(module) else module
