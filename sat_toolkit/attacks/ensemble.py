"""Worst case over several attacks, per sample (AutoAttack's way of combining them).

A sample counts as robust only if every member fails on it. By default each member only
attacks the samples that are still robust (``only_robust``), which is what makes a
strong ensemble affordable; with ``only_robust = false`` every member sees the whole batch
and the result is exactly the union of the members' successes.

Success here always means misclassification (a targeted member that lands on its target
has also misclassified), checked with one forward pass per member.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from sat_toolkit.attacks.base import DEFAULT_EPS, Attack, Model, per_sample
from sat_toolkit.attacks.checked import checked_result
from sat_toolkit.attacks.gradient import predict
from sat_toolkit.attacks.result import AttackResult
from sat_toolkit.errors import SatError

AttackSpec = str | Mapping[str, Any] | Attack

DEFAULT_MEMBERS: tuple[str, ...] = ("apgd_ce", "apgd_t", "square")


class Ensemble(Attack):
    """Per-sample worst case over member attacks.

    Args:
        attacks: member specs: names, tables such as ``{name = "pgd", steps = 50}`` or
            attack objects. ``eps``, ``norm``, ``bn_mode``, ``precision`` and ``seed`` are
            passed to members that do not set them.
        only_robust: members attack only the samples no earlier member fooled (with
            BatchNorm in eval mode; with batch statistics every member sees the batch).
        eps, norm, bn_mode, precision, seed: as in :class:`Attack`.
    """

    name = "ensemble"
    description = "per-sample worst case over several attacks (AutoAttack-style)"

    pinned = ("loss_scale",)  # each member keeps its own

    def __init__(
        self, *, attacks: Sequence[AttackSpec] = DEFAULT_MEMBERS, only_robust: bool = True, **threat: Any
    ) -> None:
        super().__init__(**threat)
        from sat_toolkit.attacks.factory import create_attack  # the factory imports the plugin host

        shared = self._shared(threat)
        self.members: list[Attack] = [
            spec if isinstance(spec, Attack) else create_attack(spec, defaults=shared) for spec in attacks
        ]
        self.attacks = [{"name": m.name, **m.hparams()} for m in self.members]  # rebuildable
        self.only_robust = only_robust

    @property
    def min_classes(self) -> int:
        return max(getattr(member, "min_classes", 2) for member in self.members)

    @staticmethod
    def _shared(threat: Mapping[str, Any]) -> dict[str, Any]:
        """What members inherit unless they set it: the ensemble's threat model."""
        return {"eps": DEFAULT_EPS, **{k: v for k, v in threat.items() if k != "loss_scale"}}

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """Each member's parameters, checked as its own recipe table would be."""
        super().check_params(params)
        from sat_toolkit.plugins.instantiate import checked_parameters

        attacks = params.get("attacks", DEFAULT_MEMBERS)
        if isinstance(attacks, (str, Mapping)) or not isinstance(attacks, Sequence) or not attacks:
            raise SatError("attack 'ensemble' needs a non-empty list of member attacks in 'attacks'")
        shared = cls._shared({k: v for k, v in params.items() if k not in ("attacks", "only_robust")})
        for spec in attacks:
            if not isinstance(spec, Attack):
                checked_parameters("attack", spec, defaults=shared)

    def _perturb(self, model: Model, x: torch.Tensor, y: torch.Tensor, eps: float) -> AttackResult:
        batch = x.shape[0]
        x_out = x.clone()
        success = predict(model, x, self._precision).argmax(1) != y
        first = torch.where(success, -1, len(self.members))  # -1: misclassified clean; len: robust
        zero_grad = torch.zeros(batch, dtype=torch.bool, device=x.device)
        members: dict[str, dict[str, float]] = {}
        everyone = torch.arange(batch, device=x.device)
        independent = self.bn_mode == "eval"  # with batch statistics, sub-batches change the model
        for position, member in enumerate(self.members):
            index = (~success).nonzero().squeeze(1) if self.only_robust and independent else everyone
            if index.numel() == 0:
                break
            # A member may be a plugin: its examples join the ensemble's, so they are checked.
            member_x = x[index]
            norm = getattr(member, "norm", None) or self.norm
            result = checked_result(
                member.name, member.perturb(model, member_x, y[index], eps=eps), member_x, eps, norm
            )
            fooled = predict(model, result.x_adv, self._precision).argmax(1) != y[index]
            newly = fooled & ~success[index]
            x_out[index] = torch.where(per_sample(newly, result.x_adv), result.x_adv, x_out[index])
            first[index] = torch.where(newly, position, first[index])
            success[index] = success[index] | fooled
            if result.zero_grad is not None:
                zero_grad[index] = zero_grad[index] | result.zero_grad
            members[f"{position}:{member.name}"] = {
                "attacked": float(index.numel()),
                "fooled": float(fooled.sum()),
                "zero_grad_fraction": result.zero_grad_fraction,
            }
        return AttackResult(
            x_adv=x_out,
            zero_grad=zero_grad,
            success=success,
            eps=eps,
            info={"first_success": first, "members": members},
        )
