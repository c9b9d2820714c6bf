"""The objective plugin contract: what adversarial training minimises, in two phases.

An adversarial-training step is a min-max problem. The *attacker* phase solves the inner
maximisation (it crafts ``x_adv``), the *optimiser* phase computes the outer loss that the
weights descend. SAT's gradient study needs the two kept apart (a surrogate activation
reads the phase), so an objective says which work belongs to which phase by putting it in
one of two methods:

* :meth:`Objective.adversarial_examples` runs as the attacker, on the *unwrapped* model;
  it returns an :class:`~sat_toolkit.attacks.result.AttackResult` (or ``None`` for an
  objective without an attack). The default asks the recipe's training attack.
* :meth:`Objective.loss` runs as the optimiser, on the *prepared* model (under DDP every
  forward that the gradient flows through must go through it, or ranks desynchronise);
  it returns the scalar loss and the logits the training metrics report.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

from sat_toolkit.attacks.result import AttackResult


@dataclasses.dataclass
class ObjectiveLoss:
    """The outer loss of one micro-batch.

    Attributes:
        loss: the scalar the optimiser's backward runs on.
        logits: the logits the training window reports accuracy from (on ``x_adv`` for an
            adversarial objective, on ``x`` for standard training), detached by the caller.
    """

    loss: torch.Tensor
    logits: torch.Tensor


#: What :meth:`Objective.loss` must return, as error messages spell it.
LOSS_CONTRACT = "sat_toolkit.objectives.ObjectiveLoss(loss=<scalar tensor>, logits=<[batch, classes] tensor>)"


def loss_problem(outcome: object, batch_size: int, num_classes: int | None = None) -> str | None:
    """What is wrong with what :meth:`Objective.loss` returned, or None.

    Types and shapes only, so the check needs no device synchronisation and the training
    loop runs it on every step; :func:`sat_toolkit.testing.check_objective` runs it too.
    """
    loss, logits = getattr(outcome, "loss", None), getattr(outcome, "logits", None)
    if loss is None and logits is None:
        return f"loss(...) returned {type(outcome).__name__}; it must return {LOSS_CONTRACT}"
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        return f"loss(...).loss is {_described(loss)}; it must return {LOSS_CONTRACT}"
    if torch.is_grad_enabled() and not loss.requires_grad:
        return (
            "loss(...).loss does not depend on the model's weights (no grad_fn: detached, .item()-ed "
            "or computed under torch.no_grad()); compute it from the model's logits"
        )
    classes = "classes" if num_classes is None else str(num_classes)
    if (
        not isinstance(logits, torch.Tensor)
        or logits.dim() != 2
        or logits.shape[0] != batch_size
        or (num_classes is not None and logits.shape[1] != num_classes)
    ):
        expected = f"[{batch_size}, {classes}]"
        return f"loss(...).logits must be the model's logits {expected}, got {_described(logits)}"
    return None


def _described(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return type(value).__name__


class Objective(ABC):
    """Base class of training objectives (plugins may subclass it or follow the contract).

    Constructors take keyword parameters only (``[objective]`` in a recipe, besides
    ``name``), each with a default.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: False for an objective that never calls the training attack (standard training).
    uses_attack: ClassVar[bool] = True

    def adversarial_examples(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Any, eps: float | None
    ) -> AttackResult | None:
        """The inner maximisation: ``attack.perturb`` (which enters the attack phase itself)."""
        return attack.perturb(model, x, y, eps=eps)

    @abstractmethod
    def loss(
        self,
        model: nn.Module,
        x: torch.Tensor,
        x_adv: torch.Tensor | None,
        y: torch.Tensor,
        *,
        label_smoothing: float = 0.0,
    ) -> ObjectiveLoss:
        """The outer loss, computed through ``model`` (the prepared one) in the train phase."""

    def __repr__(self) -> str:
        params = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in params.items())})"
