"""Adversarial attacks, built from parts and registered as plugins of kind "attack".

Conventions shared by every attack (see :mod:`sat_toolkit.attacks.base`):

* inputs are images in [0, 1]; eps and step sizes live in that pixel space and may be
  written as fractions (``"4/255"``); normalisation is the model's job;
* every iterate is projected onto the eps-ball and [0, 1], and returned examples lie
  inside both exactly;
* an attack never changes the model (:func:`preserve_model_state`), runs its passes
  inside :func:`~sat_toolkit.phase.attack_phase`, and never computes parameter gradients;
* ``attack.perturb(model, x, y, *, eps=None) -> AttackResult`` (or just the tensor of
  examples); :func:`checked_result` refuses anything else, or examples outside the ball.

The parts live in registries a plugin can extend: ``LOSSES``, ``STEP_RULES``, ``INITS``,
``PROJECTIONS`` and ``TARGETS``.
"""

from sat_toolkit.attacks.apgd import APGD, APGDCE, APGDDLR, APGDT, apgd_checkpoints
from sat_toolkit.attacks.base import DEFAULT_EPS, Attack
from sat_toolkit.attacks.checked import checked_result
from sat_toolkit.attacks.ensemble import Ensemble
from sat_toolkit.attacks.fab import FABT
from sat_toolkit.attacks.factory import attack_names, create_attack, resolve_attack
from sat_toolkit.attacks.gradient import PRECISIONS, LossGradient, Precision
from sat_toolkit.attacks.inits import INITS
from sat_toolkit.attacks.losses import LOSSES, Loss, resolve_loss
from sat_toolkit.attacks.params import parse_fraction
from sat_toolkit.attacks.pgd import FGSM, PGD
from sat_toolkit.attacks.projections import PROJECTIONS, L2Projection, LinfProjection, Projection
from sat_toolkit.attacks.registry import Registry
from sat_toolkit.attacks.result import AttackResult
from sat_toolkit.attacks.square import Square, p_selection
from sat_toolkit.attacks.state import BN_MODES, preserve_model_state
from sat_toolkit.attacks.steps import STEP_RULES
from sat_toolkit.attacks.targets import TARGETS

#: The attacks the toolkit registers through its own entry point.
BUILTIN_ATTACKS: list[type[Attack]] = [FGSM, PGD, APGD, APGDCE, APGDDLR, APGDT, FABT, Square, Ensemble]

__all__ = [
    "APGD",
    "APGDCE",
    "APGDDLR",
    "APGDT",
    "BN_MODES",
    "BUILTIN_ATTACKS",
    "DEFAULT_EPS",
    "FABT",
    "FGSM",
    "INITS",
    "LOSSES",
    "PGD",
    "PRECISIONS",
    "PROJECTIONS",
    "STEP_RULES",
    "TARGETS",
    "Attack",
    "AttackResult",
    "Ensemble",
    "L2Projection",
    "LinfProjection",
    "Loss",
    "LossGradient",
    "Precision",
    "Projection",
    "Registry",
    "Square",
    "apgd_checkpoints",
    "attack_names",
    "checked_result",
    "create_attack",
    "p_selection",
    "parse_fraction",
    "preserve_model_state",
    "resolve_attack",
    "resolve_loss",
]
