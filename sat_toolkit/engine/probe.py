"""How long will a training run take? A timed probe of its own steps, before the hours start.

A study of 18 six-epoch cells can take three hours on one machine and twenty on another
(bf16 native or emulated, a GPU or two CPU cores, a busy neighbour), so the estimate
printed with a study's plan *measures* the run it predicts: the recipe's own model,
data, objective, attack and precision, built in a throw-away directory. It times

* ``PROBE_STEPS`` optimiser steps after ``PROBE_WARMUP_STEPS`` untimed ones (the first
  steps pay for allocation, autotuning and ``torch.compile``),
* the validation's and the final evaluation's attacks through
  :func:`~sat_toolkit.evaluation.cost.estimate_cost` on a few test images, scaled to all
  ``validate_samples`` and ``attack.eval.samples`` images. The probe's model has barely
  trained, and attacks stop early on images they fool (APGD-T moves to its next target
  class only for images still robust, FAB and Square drop fooled images), so timing them
  on it would be far too optimistic for the robust model the run will evaluate. The
  attacks are therefore timed on :class:`NeverFooled`, the same network (same forward and
  backward cost) with its prediction pinned: every attack runs its whole budget on every
  image. That is an upper bound: a real model misclassifies some images, and the cascade
  attacks only those still robust.

Nothing of the probe is kept; the run it predicts starts from scratch and is unchanged.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from sat_toolkit.evaluation.cost import rough_duration
from sat_toolkit.recipe import Recipe, load_recipe

if TYPE_CHECKING:
    from sat_toolkit.engine.trainer import TrainingRun

#: Optimiser steps timed by the probe, after the untimed warm-up steps.
PROBE_STEPS = 6
PROBE_WARMUP_STEPS = 2


@dataclasses.dataclass(frozen=True)
class RunCostEstimate:
    """Seconds one training run is expected to take, part by part, and what the probe cost."""

    setup_seconds: float  # building data, model and optimiser
    step_seconds: float  # one optimiser step (attack, forward, backward, update)
    total_steps: int
    steps_per_epoch: int
    validation_seconds: float | None  # one validation on ``validate_samples`` images; None: not probed
    validations: int  # still to come
    evaluation_seconds: float | None  # the final evaluation, at most; None when it cannot be probed
    probe_seconds: float
    first_step: int = 0  # where the run starts: 0, or the step a resumed run continues from

    @property
    def seconds(self) -> float:
        """The run from ``first_step`` on; a part that could not be probed counts as nothing."""
        validations = (self.validation_seconds or 0.0) * self.validations
        return (
            self.setup_seconds
            + self.step_seconds * (self.total_steps - self.first_step)
            + validations
            + (self.evaluation_seconds or 0.0)
        )

    def for_recipe(self, recipe: Recipe, first_step: int = 0) -> RunCostEstimate:
        """The estimate for ``recipe``, a run of the same kind trained for another length,
        from ``first_step`` on (a resumed run has the steps and validations before it done).

        Its steps and validations are counted as the trainer will count them; a step, a
        validation and the final evaluation cost what the probe measured. Valid where the
        two runs differ in nothing that moves those costs (see
        :func:`sat_toolkit.study.eta.step_shape`).
        """
        total_steps = recipe.train.total_steps(self.steps_per_epoch)
        first_step = min(first_step, total_steps)
        epochs = math.ceil(total_steps / self.steps_per_epoch)
        every = recipe.train.validate_every_epochs
        validations = validations_in(epochs, every)
        done = 0 if every <= 0 else min((first_step // self.steps_per_epoch) // every, validations)
        return dataclasses.replace(
            self, total_steps=total_steps, validations=validations - done, first_step=first_step
        )

    def describe(self) -> str:
        """``training 0.7 s/step x 2808 steps, 5 validation(s), each at most 14 s, final ...``."""
        steps = f"{self.total_steps - self.first_step} steps"
        if self.first_step:
            steps += f" (of {self.total_steps}: resumes at step {self.first_step})"
        parts = [f"training {self.step_seconds:.3g} s/step x {steps}"]
        if self.validations:
            each = (
                "not probed"
                if self.validation_seconds is None
                else f"at most {rough_duration(self.validation_seconds)}"
            )
            parts.append(f"{self.validations} validation(s), each {each}")
        if self.evaluation_seconds is None:
            parts.append("final evaluation not probed")
        else:
            parts.append(f"final evaluation at most {rough_duration(self.evaluation_seconds)}")
        return ", ".join(parts)


def validations_in(epochs: int, every_epochs: int) -> int:
    """Validations a run of ``epochs`` makes: after every ``every_epochs``-th epoch but the last."""
    return 0 if every_epochs <= 0 else (epochs - 1) // every_epochs


def probe_run_cost(
    recipe: Recipe,
    *,
    steps: int = PROBE_STEPS,
    warmup_steps: int = PROBE_WARMUP_STEPS,
    min_total_steps: int = 0,
) -> RunCostEstimate | None:
    """Build ``recipe``'s run in a temporary directory and time its parts (see the module).

    None, after building only, when the run has fewer than ``min_total_steps`` steps (or
    fewer than the probe's own): a probe would cost a noticeable part of such a run.
    """
    from sat_toolkit.engine import trainer
    from sat_toolkit.engine.evaluation import validation_attacks
    from sat_toolkit.engine.logging import progress_bar
    from sat_toolkit.evaluation.suites import build_attacks

    probe_started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sat-probe-") as directory:
        probe_recipe = load_recipe(
            recipe.to_dict(),
            [
                f"run.output_dir={Path(directory).as_posix()!r}",
                "logging.tensorboard=false",
                "checkpoint.every_steps=0",
            ],
        )
        run_dir = Path(directory)
        accelerator = trainer.make_accelerator(probe_recipe, run_dir)
        started = time.perf_counter()
        run = trainer.build_run(probe_recipe, accelerator, run_dir)
        setup_seconds = time.perf_counter() - started
        if run.total_steps < max(min_total_steps, warmup_steps + steps):
            accelerator.end_training()
            return None
        bar = progress_bar(run.total_steps, 0, enabled=False)
        step_seconds = _time_steps(run, bar, warmup_steps, steps)

        validations = validations_in(run.epochs, recipe.train.validate_every_epochs)
        validation_seconds = 0.0
        if validations:
            validation_seconds = _attack_seconds(
                run, validation_attacks(recipe), recipe.train.validate_samples, recipe.attack.eval.seed
            )
        evaluation = recipe.attack.eval
        specs = {label: spec.to_dict() for label, spec in evaluation.attacks.items()}
        evaluation_seconds = _attack_seconds(
            run, build_attacks(specs, seed=evaluation.seed), evaluation.samples, evaluation.seed
        )
        accelerator.end_training()
    return RunCostEstimate(
        setup_seconds=setup_seconds,
        step_seconds=step_seconds,
        total_steps=run.total_steps,
        steps_per_epoch=run.steps_per_epoch,
        validation_seconds=validation_seconds,
        validations=validations,
        evaluation_seconds=evaluation_seconds,
        probe_seconds=time.perf_counter() - probe_started,
    )


def _time_steps(run: TrainingRun, bar: object, warmup_steps: int, steps: int) -> float:
    """Seconds per optimiser step over ``steps`` steps after ``warmup_steps`` untimed ones."""
    from sat_toolkit.engine.trainer import adversarial_step, after_optimizer_step

    wanted = warmup_steps + steps
    done, started = 0, time.perf_counter()
    run.model.train()
    while done < wanted:
        for x, y in run.train_loader:
            if not adversarial_step(run, x, y):
                continue
            after_optimizer_step(run, bar, x, y)
            done += 1
            if done == warmup_steps:
                _synchronize(run.accelerator.device)
                started = time.perf_counter()
            if done == wanted:
                break
    _synchronize(run.accelerator.device)
    return (time.perf_counter() - started) / steps


class NeverFooled(nn.Module):
    """``model``'s computation with its prediction pinned to class 0: no attack ever succeeds.

    The logits are ``PIN * onehot(0) + SCALE * model(x)``: the forward and backward passes
    cost what the network's cost, and with every label 0 each image stays robust however
    it is perturbed (the network's logits would have to move by ``PIN / SCALE``), so an
    attack timed on it spends its full budget (every restart, target class and query) on
    every image. ``PIN`` is small enough that the softmax does not saturate: the input
    gradient stays nonzero in float32, so gradient-based attacks take their usual steps.
    """

    PIN = 10.0
    SCALE = 1e-3

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x) * self.SCALE
        return logits + self.PIN * F.one_hot(
            torch.zeros_like(logits[:, 0], dtype=torch.long), logits.shape[1]
        )


def _attack_seconds(run: TrainingRun, attacks: dict[str, Any], samples: int, seed: int) -> float | None:
    """``attacks``' cost on ``samples`` fixed test images, each attacked with its whole budget.

    Timed on :class:`NeverFooled` around the run's model; None when an attack cannot be
    copied for the probe.
    """
    from sat_toolkit.engine.evaluation import fixed_test_subset
    from sat_toolkit.engine.precision import unpatched
    from sat_toolkit.evaluation.cost import estimate_cost

    if not attacks:
        return 0.0
    x, _ = fixed_test_subset(run.test_set, samples, seed)
    device = run.accelerator.device
    pinned = torch.zeros(len(x), dtype=torch.long, device=device)
    cost = estimate_cost(
        NeverFooled(unpatched(run.unwrapped)),
        x.to(device),
        pinned,
        attacks,
        batch_size=run.recipe.data.eval_batch_size,
    )
    if cost is None or not cost.images:
        return None
    return cost.seconds / cost.images * len(x)


def _synchronize(device: torch.device) -> None:
    """Wait for queued device work, so the clock measures it (CPU work is synchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
