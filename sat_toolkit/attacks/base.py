"""The attack plugin contract and what every attack shares.

An attack plugin is a class with a registry ``name``, a one-line ``description``, a
constructor taking keyword parameters only, declared with their types and bounds (so
``{name = "pgd", eps = "4/255"}`` in a recipe is checked against the schema and becomes
``PGD(eps=0.0157)``; see :mod:`sat_toolkit.params`) and a method

    perturb(model, x, y, *, eps=None) -> AttackResult

:meth:`Attack.perturb` is the only entry point: it validates the batch, then runs the
attack inside :func:`~sat_toolkit.attacks.state.preserve_model_state` (the model comes
back untouched, also on error) and :func:`~sat_toolkit.phase.attack_phase` (surrogate
activations know the backward passes serve the attacker). Subclasses implement
:meth:`Attack._perturb` and never have to think about either.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Annotated, Any, ClassVar

import torch
from torch import nn

from sat_toolkit.attacks.gradient import Precision, PrecisionName
from sat_toolkit.attacks.losses import Loss
from sat_toolkit.attacks.projections import PROJECTIONS, Projection
from sat_toolkit.attacks.result import AttackResult
from sat_toolkit.attacks.state import BnMode, preserve_model_state
from sat_toolkit.errors import SatError
from sat_toolkit.params import MAX_SEED, Param
from sat_toolkit.phase import attack_phase

#: SAT's ImageNet budget (L-infinity, [0, 1] pixel space).
DEFAULT_EPS = 4 / 255

Model = nn.Module | Callable[[torch.Tensor], torch.Tensor]

# The threat model's schema, declared once: ``Attack.__init__`` takes these, and every
# attack that passes ``**threat`` on inherits them.
Eps = Annotated[float, Param(ge=0, doc='the perturbation budget in [0, 1] pixel space ("4/255" allowed)')]
Norm = Annotated[str, Param(one_of=PROJECTIONS, doc="the ball's norm")]
Seed = Annotated[
    int | None,
    Param(ge=0, le=MAX_SEED, doc="seeds the attack's own generator; unset uses torch's global one"),
]
LossScale = Annotated[float, Param(gt=0, doc="the fp16 loss scale (ignored otherwise)")]

# Shapes many attacks share. The upper bounds are far beyond any published protocol
# (APGD's longest runs are a few thousand steps): more is a typo that would run for days.
Steps = Annotated[int, Param(ge=1, le=100_000)]
Restarts = Annotated[int, Param(ge=1, le=10_000)]
Probability = Annotated[float, Param(ge=0, le=1)]
Positive = Annotated[float, Param(gt=0)]


@dataclasses.dataclass(frozen=True)
class ThreatModel:
    """What every attack shares: the budget, and how the attacker's passes are computed.

    Attributes:
        eps: the perturbation budget in [0, 1] pixel space.
        norm: the ball's norm, a name in ``PROJECTIONS`` (``"linf"``, ``"l2"``, ...).
        bn_mode: BatchNorm during the attack (see :mod:`sat_toolkit.attacks.state`).
        precision: the attacker's forward passes: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        loss_scale: the fp16 loss scale (ignored otherwise).
        seed: the attack's own random generator's seed; None uses torch's global one.
    """

    eps: float
    norm: str = "linf"
    bn_mode: str = "eval"
    precision: str = "fp32"
    loss_scale: float = 1024.0
    seed: int | None = None


class Attack(ABC):
    """Base class of the toolkit's attacks (plugins may subclass it or just follow the contract).

    The constructor receives typed values that recipe validation (or
    ``create_attack``) already checked against the declared schema; it does not check
    them again.

    Args:
        eps: the perturbation budget in [0, 1] pixel space.
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
    #: Parent parameters a subclass fixes and does not offer (FGSM: ``steps``).
    pinned: ClassVar[tuple[str, ...]] = ()
    #: The loss the attack climbs, where it has one (PGD, APGD and Square set it).
    _loss: Loss | None = None

    def __init__(
        self,
        *,
        eps: Eps = DEFAULT_EPS,
        norm: Norm = "linf",
        bn_mode: BnMode = "eval",
        precision: PrecisionName = "fp32",
        loss_scale: LossScale = 1024.0,
        seed: Seed = None,
    ) -> None:
        self.threat = ThreatModel(eps, norm, bn_mode, precision, loss_scale, seed)
        self.projection_cls: type[Projection] = PROJECTIONS.get(norm)
        self._precision = Precision(precision, loss_scale)
        self._generators: dict[torch.device, torch.Generator] = {}

    @property
    def min_classes(self) -> int:
        """The fewest classes the attack's loss is defined for (DLR: 3, targeted DLR: 4), so an
        evaluation can refuse it before any attack runs rather than after the first."""
        return 2 if self._loss is None else self._loss.min_classes

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """Constraints between parameters, on typed values (see :mod:`sat_toolkit.params`)."""
        norm = params.get("norm", "linf")
        if cls.supported_norms is not None and norm not in cls.supported_norms:
            supported = ", ".join(cls.supported_norms)
            raise SatError(f"attack '{cls.name}' supports norm {supported}; got {norm!r}")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Give a subclass whose ``__init__`` takes ``**threat`` its full, flat signature.

        A subclass declares only its own parameters and passes the rest on
        (``def __init__(self, *, steps=10, **threat)``); recipe validation, ``hparams()``
        and ``plugins --show`` read ``inspect.signature(cls)``, which then lists its own
        parameters after those it passes on (the parent's, minus ``pinned``). A
        subclass with an explicit ``__init__`` keeps exactly that signature.
        """
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return  # the parent's __init__, and so its signature
        own = list(inspect.signature(init).parameters.values())[1:]  # after self
        passes_on = any(p.kind is p.VAR_KEYWORD for p in own)
        params = [p.replace(kind=p.KEYWORD_ONLY) for p in own if p.kind is not p.VAR_KEYWORD]
        if passes_on:  # the parent's first (the threat model leads), then the subclass's own
            taken = {p.name for p in params} | set(cls.pinned)
            parent = inspect.signature(cls.__mro__[1])
            params = [p for p in parent.parameters.values() if p.name not in taken] + params
        cls.__signature__ = inspect.Signature(params)

    # -- the threat model ------------------------------------------------------------------
    # Properties over ``self.threat``, the one place these live. Setting one (a plugin that
    # assigns ``self.eps`` itself) replaces the threat model with an updated copy.
    def _set_threat(self, **change: Any) -> None:
        current = getattr(self, "threat", None)
        self.threat = dataclasses.replace(current, **change) if current is not None else ThreatModel(**change)
        self.projection_cls = PROJECTIONS.get(self.threat.norm)
        self._precision = Precision(self.threat.precision, self.threat.loss_scale)

    @property
    def eps(self) -> float:
        return self.threat.eps

    @eps.setter
    def eps(self, value: float) -> None:
        self._set_threat(eps=value)

    @property
    def norm(self) -> str:
        return self.threat.norm

    @norm.setter
    def norm(self, value: str) -> None:
        self._set_threat(norm=value)

    @property
    def bn_mode(self) -> str:
        return self.threat.bn_mode

    @bn_mode.setter
    def bn_mode(self, value: str) -> None:
        self._set_threat(bn_mode=value)

    @property
    def precision(self) -> str:
        return self.threat.precision

    @precision.setter
    def precision(self, value: str) -> None:
        self._set_threat(precision=value)

    @property
    def loss_scale(self) -> float:
        return self.threat.loss_scale

    @loss_scale.setter
    def loss_scale(self, value: float) -> None:
        self._set_threat(loss_scale=value)

    @property
    def seed(self) -> int | None:
        return self.threat.seed

    @seed.setter
    def seed(self, value: int | None) -> None:
        self._set_threat(seed=value)

    # -- the contract ----------------------------------------------------------------------
    def perturb(
        self, model: Model, x: torch.Tensor, y: torch.Tensor, *, eps: float | None = None
    ) -> AttackResult:
        """Adversarial examples for ``(x, y)``; ``eps`` overrides the budget for this call only.

        ``x`` holds images in [0, 1] (normalisation belongs inside the model); ``y`` the
        integer labels. The model's state is exactly the same afterwards.
        """
        budget = self.eps if eps is None else float(eps)
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
        self, model: Model, x: torch.Tensor, y: torch.Tensor, *, eps: float | None = None
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
        names = list(inspect.signature(type(self)).parameters)
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
