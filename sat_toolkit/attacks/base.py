"""The attack plugin contract and what every attack shares.

An attack plugin is a class with a registry ``name``, a one-line ``description``, a
constructor taking keyword parameters only (so ``{name = "pgd", eps = "4/255"}`` in a
recipe maps onto ``PGD(eps="4/255")``) and a method

    perturb(model, x, y, *, eps=None) -> AttackResult

:meth:`Attack.perturb` is the only entry point: it validates the batch, then runs the
attack inside :func:`~sat_toolkit.attacks.state.preserve_model_state` (the model comes
back untouched, also on error) and :func:`~sat_toolkit.phase.attack_phase` (surrogate
activations know the backward passes serve the attacker). Subclasses implement
:meth:`Attack._perturb` and never have to think about either.
"""

from __future__ import annotations

import contextlib
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from sat_toolkit.attacks.gradient import PRECISIONS, Precision
from sat_toolkit.attacks.params import parse_choice, parse_fraction, parse_int
from sat_toolkit.attacks.projections import PROJECTIONS, Projection
from sat_toolkit.attacks.result import AttackResult
from sat_toolkit.attacks.state import BN_MODES, preserve_model_state
from sat_toolkit.errors import SatError
from sat_toolkit.phase import attack_phase

#: SAT's ImageNet budget (L-infinity, [0, 1] pixel space).
DEFAULT_EPS = "4/255"

Model = nn.Module | Callable[[torch.Tensor], torch.Tensor]


class Attack(ABC):
    """Base class of the toolkit's attacks (plugins may subclass it or just follow the contract).

    Args:
        eps: the perturbation budget in [0, 1] pixel space; ``"4/255"`` style allowed.
        norm: ``"linf"``, ``"l2"`` or any norm registered in ``PROJECTIONS``.
        bn_mode: BatchNorm during the attack: ``"eval"`` (official SAT), ``"train"`` or
            ``"train_frozen"``; see :mod:`sat_toolkit.attacks.state`.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (with a static ``loss_scale``).
        loss_scale: the fp16 loss scale (ignored otherwise).
        seed: seeds the attack's own random generator (random starts, targets,
            Square's proposals); None uses torch's global generator.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: The norms the attack supports; None means any registered projection.
    supported_norms: ClassVar[tuple[str, ...] | None] = None

    def __init__(
        self,
        *,
        eps: float | str = DEFAULT_EPS,
        norm: str = "linf",
        bn_mode: str = "eval",
        precision: str = "fp32",
        loss_scale: float | str = 1024.0,
        seed: int | None = None,
    ) -> None:
        self.eps = parse_fraction(eps, "eps")
        self.projection_cls: type[Projection] = PROJECTIONS.get(norm)
        if self.supported_norms is not None and norm not in self.supported_norms:
            raise SatError(
                f"attack '{self.name}' supports norm {', '.join(self.supported_norms)}; got {norm!r}"
            )
        self.norm = norm
        self.bn_mode = parse_choice(bn_mode, "bn_mode", BN_MODES)
        self.precision = parse_choice(precision, "precision", PRECISIONS)
        self.loss_scale = parse_fraction(loss_scale, "loss_scale", allow_zero=False)
        self.seed = None if seed is None else parse_int(seed, "seed", minimum=0)
        self._precision = Precision(self.precision, self.loss_scale)
        self._generators: dict[torch.device, torch.Generator] = {}

    # -- the contract ----------------------------------------------------------------------
    def perturb(
        self, model: Model, x: torch.Tensor, y: torch.Tensor, *, eps: float | str | None = None
    ) -> AttackResult:
        """Adversarial examples for ``(x, y)``; ``eps`` overrides the budget for this call only.

        ``x`` holds images in [0, 1] (normalisation belongs inside the model); ``y`` the
        integer labels. The model's state is exactly the same afterwards.
        """
        budget = self.eps if eps is None else parse_fraction(eps, "eps")
        x, y = self._check_batch(x, y)
        if x.shape[0] == 0:
            return AttackResult(x_adv=x.clone(), eps=budget)
        context = (
            preserve_model_state(model, self.bn_mode)
            if isinstance(model, nn.Module)
            else contextlib.nullcontext()
        )
        # An evaluator may hold its batch from inside torch.inference_mode(); autograd
        # refuses such tensors, so the attack works on normal copies of them.
        with torch.inference_mode(False), context, attack_phase():
            if x.is_inference() or y.is_inference():
                x, y = x.clone(), y.clone()
            result = self._perturb(model, x, y, budget)
        return result

    def __call__(
        self, model: Model, x: torch.Tensor, y: torch.Tensor, *, eps: float | str | None = None
    ) -> torch.Tensor:
        """Just the adversarial examples."""
        return self.perturb(model, x, y, eps=eps).x_adv

    @abstractmethod
    def _perturb(self, model: Model, x: torch.Tensor, y: torch.Tensor, eps: float) -> AttackResult:
        """The attack proper; runs in attack mode on a validated, detached batch."""

    # -- shared helpers --------------------------------------------------------------------
    def generator(self, device: torch.device) -> torch.Generator | None:
        """The attack's generator on ``device`` (None: torch's global one, when ``seed`` is None)."""
        if self.seed is None:
            return None
        gen = self._generators.get(device)
        if gen is None:
            gen = torch.Generator(device=device)
            gen.manual_seed(self.seed)
            self._generators[device] = gen
        return gen

    @staticmethod
    def _check_batch(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2:
            raise SatError("attack input must be a floating-point batch of images [B, ...]")
        if (
            not isinstance(y, torch.Tensor)
            or y.dim() != 1
            or y.shape[0] != x.shape[0]
            or y.is_floating_point()
        ):
            raise SatError(f"attack labels must be an integer tensor of shape [{x.shape[0]}]")
        if x.numel():
            low, high = torch.stack(torch.aminmax(x.detach())).tolist()
            if low < 0.0 or high > 1.0:
                raise SatError(
                    f"attack inputs must be images in [0, 1] (got values in [{low:.3g}, {high:.3g}]); "
                    "normalisation belongs inside the model"
                )
        return x.detach(), y.detach().long()

    def hparams(self) -> dict[str, Any]:
        """The keyword parameters that rebuild this attack (for logs and checkpoints)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {p: getattr(self, p) for p in names if hasattr(self, p)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hparams().items())
        return f"{type(self).__name__}({args})"


def per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Shape a [B] tensor to broadcast against a [B, ...] batch."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def take_better(
    success: torch.Tensor, loss: torch.Tensor, new_success: torch.Tensor, new_loss: torch.Tensor
) -> torch.Tensor:
    """Per sample, whether a new candidate beats the current worst case.

    Fooling the model beats not fooling it; between equals the higher loss wins.
    """
    return (new_success & ~success) | ((new_success == success) & (new_loss > loss))
