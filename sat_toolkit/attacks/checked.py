"""The one check of what an attack hands back: right type, right shape, inside the budget.

Built-in attacks project exactly, but a plugin's ``perturb`` can return anything. A
wrong result must stop the run with one line naming the attack and what it should have
returned, not a traceback three frames later (``result.x_adv`` on a tensor) or, worse, a
robust accuracy computed on examples outside the threat model. Every user of attack
results goes through here: the training loop (its first batch), the evaluator (every
batch), the ensemble (every member) and the pre-flight of a run's evaluation attacks.
"""

from __future__ import annotations

import torch

from sat_toolkit.attacks.result import AttackResult
from sat_toolkit.errors import SatError

#: Slack for float round-off when checking the eps-ball (the attacks themselves project
#: exactly; this only keeps the check from failing on the norm's own rounding).
BALL_SLACK = 1e-6

_RETURN_HINT = "return sat_toolkit.attacks.AttackResult(x_adv=...) or the adversarial tensor"


def attack_named(label: str, plugin: str | None = None) -> str:
    """``attack 'strong' (plugin 'mi_fgsm')``: the recipe's label, and the plugin behind it
    where the two differ, since the plugin's author is the one who must fix its result."""
    return f"attack '{label}'" + (f" (plugin '{plugin}')" if plugin and plugin != label else "")


def as_attack_result(label: str, result: object, eps: float = 0.0, plugin: str | None = None) -> AttackResult:
    """``result`` as an :class:`AttackResult`; a bare tensor becomes ``AttackResult(x_adv=result, eps=eps)``.

    Costs no device synchronisation, so the training loop can call it on every step.
    """
    if isinstance(result, AttackResult):
        return result
    if isinstance(result, torch.Tensor):
        return AttackResult(x_adv=result, eps=eps)
    returned = type(result).__name__
    raise SatError(f"{attack_named(label, plugin)}: perturb() returned {returned}; {_RETURN_HINT}")


def _perturbation_size(delta: torch.Tensor, norm: str) -> torch.Tensor | None:
    """Per-sample size of ``delta`` under ``norm``; None for a norm this check does not know."""
    flat = delta.flatten(1)
    if norm == "linf":
        return flat.abs().amax(1)
    if norm == "l2":
        return flat.norm(dim=1)
    if norm == "l1":
        return flat.abs().sum(1)
    return None


def check_examples(
    label: str, x_adv: object, x: torch.Tensor, eps: float, norm: str, plugin: str | None = None
) -> None:
    """Refuse ``x_adv`` unless it is a floating tensor shaped like ``x``, finite, in [0, 1] and the ball.

    Each message names the attack, what is wrong, by how much, and what to return. The
    ball is checked for ``linf``, ``l2`` and ``l1``; a norm a plugin registered itself is
    only checked against [0, 1]. This synchronises with the device (a few reductions).
    """
    where = f"{attack_named(label, plugin)}: perturb() returned"
    if not isinstance(x_adv, torch.Tensor):
        raise SatError(f"{where} x_adv of type {type(x_adv).__name__}; x_adv must be a tensor of images")
    if not x_adv.is_floating_point():
        raise SatError(f"{where} x_adv of dtype {x_adv.dtype}; return floating-point images in [0, 1]")
    if x_adv.shape != x.shape:
        raise SatError(
            f"{where} x_adv of shape {tuple(x_adv.shape)} for inputs of shape {tuple(x.shape)}; "
            "return one example per input, shaped like the input"
        )
    if x_adv.device != x.device:
        raise SatError(
            f"{where} x_adv on {x_adv.device} for inputs on {x.device}; return it on the inputs' device"
        )
    finite = torch.isfinite(x_adv)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise SatError(
            f"{where} {bad} non-finite values (NaN or inf) in x_adv; its results are not trustworthy"
        )
    low, high = float(x_adv.min()), float(x_adv.max())
    if low < 0 or high > 1:
        outside = max(-low, high - 1)
        raise SatError(
            f"{where} examples outside [0, 1] (by up to {outside:.6g}: min {low:.6g}, max {high:.6g}); "
            "clamp x_adv to [0, 1]"
        )
    size = _perturbation_size(x_adv.detach() - x.detach(), norm)
    if size is None:
        return
    largest = float(size.max()) if size.numel() else 0.0
    if largest > eps + BALL_SLACK:
        raise SatError(
            f"{where} examples that left the {norm} eps-ball (by {largest - eps:.6g}: largest perturbation "
            f"{largest:.6g}, eps {eps:.6g}); project x_adv onto the ball, its results are not trustworthy"
        )


def checked_result(
    label: str, result: object, x: torch.Tensor, eps: float, norm: str, plugin: str | None = None
) -> AttackResult:
    """``result`` as an :class:`AttackResult` whose examples passed :func:`check_examples`.

    Args:
        label: the attack's name as the user knows it (recipe label or plugin name).
        result: what ``perturb`` returned: an ``AttackResult`` or a tensor of examples.
        x: the clean inputs the attack was given.
        eps: the budget the examples must respect.
        norm: the threat model's norm (``"linf"``, ``"l2"``, ...).
        plugin: the plugin's name, said beside a recipe label that differs from it.
    """
    checked = as_attack_result(label, result, eps, plugin)
    check_examples(label, checked.x_adv, x, eps, norm, plugin)
    return checked
