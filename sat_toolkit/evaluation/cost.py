"""How long will an evaluation take? A timed probe, before the hours start.

A strong suite on a few thousand images can run for hours, and its cost depends on the
model, the device and each attack's settings (steps, restarts, target classes, queries),
plugins' included: no table of step counts can know them all. So the estimate *measures*:
each attack runs, checked as in the evaluation, on a few clean-correct images, and its
seconds per image are scaled to the images it will attack. With the cascade every later
attack runs on fewer images (those the earlier ones failed on), so the estimate is an
upper bound there; a small probe batch also uses the device less well than a full one,
which errs the same way. The probe's own cost is part of the estimate's report.

An attack's time grows linearly with its iteration budget (``steps``, or Square's
``queries``), so a long attack is probed with a tenth of its budget, at least
``PROBE_MIN_BUDGET``, and its time scaled back up: AutoAttack's Square (5000 queries)
then costs the probe seconds instead of minutes.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from sat_toolkit.evaluation.robust import _predict, has_attacker_surrogate, run_checked
from sat_toolkit.phase import true_gradients

#: Images each attack runs on in the probe.
PROBE_IMAGES = 16
#: Smaller evaluations are not probed: the probe would cost more than 5% of them.
MIN_IMAGES_TO_PROBE = 20 * PROBE_IMAGES
#: Attack attributes that count iterations: the probe shortens them and scales the time.
BUDGET_ATTRIBUTES = ("steps", "queries")
#: The shortest budget a shortened probe runs (fixed costs would dominate below it).
PROBE_MIN_BUDGET = 10


@dataclasses.dataclass(frozen=True)
class CostEstimate:
    """Seconds the suite is expected to take, per attack and in all (an upper bound in a cascade)."""

    images: int  # clean-correct images, the most any attack will attack
    probe_images: int
    probe_seconds: float
    per_attack: dict[str, float]  # label -> estimated seconds on ``images``
    runs_per_attack: int  # 2 when every attack also runs with the model's surrogate gradient

    @property
    def seconds(self) -> float:
        return self.runs_per_attack * sum(self.per_attack.values())

    def describe(self, cascade: bool) -> str:
        """One line for the plan: the total and each attack's share."""
        parts = ", ".join(f"{label} {rough_duration(s)}" for label, s in self.per_attack.items())
        bound = "at most " if cascade else ""
        twice = ""
        if self.runs_per_attack > 1:
            twice = " (x2: each attack also runs with the model's surrogate gradient)"
        return (
            f"estimated time: {bound}{rough_duration(self.seconds)} for {self.images} clean-correct images "
            f"[{parts}]{twice}; from a {self.probe_seconds:.1f} s probe on {self.probe_images} images"
        )


def estimate_cost(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attacks: Mapping[str, Any],
    *,
    eps: float | None = None,
    norm: str | None = None,
    batch_size: int = 256,
    probe_images: int = PROBE_IMAGES,
) -> CostEstimate | None:
    """Time every attack on ``probe_images`` clean-correct images; None when nothing is attacked.

    The probe runs copies of the attacks (their seeded generators stay where they were),
    restores the model's mode and torch's global generator: a probe before an evaluation
    does not change the evaluation's numbers. None too when an attack cannot be copied.
    """
    try:
        probes = {label: _shortened_copy(attack) for label, attack in attacks.items()}
    except Exception:  # noqa: BLE001 - a plugin's attack may hold state that does not copy
        return None
    was_training = model.training
    model.eval()
    rng = torch.random.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        correct = (_predict(model, x, batch_size) == y).nonzero().flatten()
        if len(correct) == 0 or not probes:
            return None
        index = correct[:probe_images]
        per_image: dict[str, float] = {}
        started = time.perf_counter()
        for label, (attack, scale) in probes.items():
            begin = time.perf_counter()
            with true_gradients():
                run_checked(label, attack, model, x[index], y[index], eps=eps, norm=norm)
            per_image[label] = scale * (time.perf_counter() - begin) / len(index)
        probe_seconds = time.perf_counter() - started
    finally:
        torch.random.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        model.train(was_training)
    return CostEstimate(
        images=len(correct),
        probe_images=len(index),
        probe_seconds=probe_seconds,
        per_attack={label: rate * len(correct) for label, rate in per_image.items()},
        runs_per_attack=2 if has_attacker_surrogate(model) else 1,
    )


def _shortened_copy(attack: Any) -> tuple[Any, float]:
    """A copy of ``attack`` with a tenth of its iteration budget, and the factor its time scales by."""
    from sat_toolkit.attacks.factory import rebuild_attack

    hparams = getattr(attack, "hparams", None)
    params = dict(hparams()) if callable(hparams) else {}
    for name in BUDGET_ATTRIBUTES:
        budget = params.get(name)
        if isinstance(budget, int) and not isinstance(budget, bool) and budget > PROBE_MIN_BUDGET:
            short = max(budget // 10, PROBE_MIN_BUDGET)
            return rebuild_attack(attack, **{name: short}), budget / short
    return copy.deepcopy(attack), 1.0


def rough_duration(seconds: float) -> str:
    """``42 s``, ``7 min``, ``2.5 h``: as precise as an estimate deserves."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
