"""Adversarial training with Hugging Face accelerate, following its canonical loop.

Per batch, the training attack crafts examples on the *unwrapped* model (inside the
attack phase, BatchNorm as the attack's ``bn_mode`` says); the training forward and
backward then go through the *prepared* model, so under DDP every rank's gradients are
synchronised (a training forward through the unwrapped model would silently
desynchronise them). Everything that decides what happens next (weights, optimiser,
EMA, RNG, the position inside the epoch) is checkpointed, so ``--resume`` after a crash
continues as if the run had never stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, broadcast, set_seed
from torch import nn

from sat_toolkit.attacks.checked import as_attack_result, checked_result
from sat_toolkit.attacks.result import AttackResult
from sat_toolkit.engine.checkpoint import (
    TrainState,
    checkpoint_problem,
    checkpoint_root,
    checkpoint_step,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    set_aside,
)
from sat_toolkit.engine.ema import WeightEMA
from sat_toolkit.engine.evaluation import evaluation_scalars, final_evaluation, preflight_evaluation, validate
from sat_toolkit.engine.loader import training_loader
from sat_toolkit.engine.logging import flatten_hparams, progress_bar
from sat_toolkit.engine.memory import keep_freed_memory
from sat_toolkit.engine.optim import build_optimizer
from sat_toolkit.engine.window import DivergenceError, DivergenceGuard, TrainingWindow
from sat_toolkit.errors import SatError
from sat_toolkit.export import save_model
from sat_toolkit.objectives import build_objective
from sat_toolkit.plugins.provenance import run_plugins
from sat_toolkit.recipe import Recipe, check_run_dir, save_resolved_recipe
from sat_toolkit.recipe.rundir import hold_run_lock

METRICS_FILE = "metrics.json"
MODEL_FILE = "model.safetensors"


class NonFiniteLossError(SatError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


@dataclasses.dataclass
class RunSummary:
    """What a finished run produced (also written to ``metrics.json``)."""

    run_dir: Path
    metrics: dict[str, Any]


def train(
    recipe: Recipe,
    *,
    resume: bool = False,
    show_progress: bool = True,
    stop_after_steps: int | None = None,
) -> RunSummary:
    """Run the recipe: train adversarially, checkpoint, evaluate, write the run directory.

    Args:
        recipe: a validated recipe (:func:`sat_toolkit.recipe.load_recipe`).
        resume: continue the run in ``run.output_dir`` from its latest checkpoint.
        show_progress: draw a progress bar on the main process.
        stop_after_steps: stop (as if killed) after this many optimiser steps in this
            process, without the final evaluation; used to test resumption.
    """
    from sat_toolkit.data import check_files

    run_dir = Path(recipe.run.output_dir)
    resuming = check_run_dir(run_dir, recipe, resume=resume)  # also: can the run write there?
    accelerator = _make_accelerator(recipe, run_dir)
    run = _TrainingRun(recipe, accelerator, run_dir)
    # Nothing is written before this point, so a bad image file leaves no run directory
    # behind; it would otherwise surface in a loader worker, after recipe.toml exists. A
    # resumed run's files passed this at its start (ImageNet's headers take about a minute).
    if not resuming:
        check_files(run.train_loader.dataset)
        check_files(run.test_set)
    # Seconds here instead of a traceback after the last epoch (nothing is written yet).
    preflight_evaluation(recipe, run.unwrapped, run.train_loader.dataset, accelerator.device)
    lock = hold_run_lock(run_dir)  # from here a second launch into run_dir sees this run in progress
    try:
        if resume or resuming:  # restore() also says so when --resume finds nothing to resume
            run.restore()
            if run.is_finished():
                accelerator.print(
                    f"{run_dir} is already finished ({run.state.global_step} steps); nothing to do"
                )
                return RunSummary(run_dir, json.loads((run_dir / METRICS_FILE).read_text(encoding="utf-8")))
        if accelerator.is_main_process:
            save_resolved_recipe(recipe, run_dir)
        if recipe.logging.tensorboard:
            accelerator.init_trackers("train", config=flatten_hparams(recipe.to_dict()))
        completed = run.train(show_progress, stop_after_steps)
        if not completed:
            accelerator.end_training()
            return RunSummary(run_dir, {"stopped_at_step": run.state.global_step})
        return run.finish(show_progress)
    finally:
        if lock is not None:
            lock.close()


def _make_accelerator(recipe: Recipe, run_dir: Path) -> Accelerator:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        # accelerate keeps one global state per process; a second run in the same process
        # (the Python API, a study) may ask for another precision, so start from scratch.
        AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = Accelerator(
        cpu=_distributed_without_accelerator(),
        mixed_precision=recipe.optimizer.mixed_precision,
        gradient_accumulation_steps=recipe.optimizer.grad_accumulation,
        log_with="tensorboard" if recipe.logging.tensorboard else None,
        project_config=ProjectConfiguration(
            project_dir=str(run_dir), logging_dir=str(run_dir / "tensorboard")
        ),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=recipe.run.seed),
        step_scheduler_with_optimizer=False,
    )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        raise SatError(
            f"launched as {launched} processes but accelerate formed a group of {accelerator.num_processes}; "
            "every process would train alone and overwrite the same run directory"
        )
    return accelerator


class _TrainingRun:
    """One run's prepared pieces and its position, so each phase is a method, not a closure.

    Building it seeds every RNG, builds data, model and optimiser, hands them to
    accelerate and registers everything a checkpoint must hold.
    """

    def __init__(self, recipe: Recipe, accelerator: Accelerator, run_dir: Path) -> None:
        self.recipe = recipe
        self.accelerator = accelerator
        self.run_dir = run_dir
        set_seed(recipe.run.seed, deterministic=recipe.run.deterministic)
        if accelerator.device.type == "cpu":
            keep_freed_memory()

        from sat_toolkit.models import create_model

        source, train_set, self.test_set = _build_data(recipe)
        model = create_model(recipe.model.to_dict(), source.info(), recipe.activation.to_dict())
        # What `sat-toolkit eval` needs besides the architecture: where the data came from and
        # the threat model the run was trained for.
        self.sat_config = {
            **model.sat_config,
            "dataset": recipe.data.plugin.to_dict(),
            "train_attack": recipe.attack.train.to_dict(),
        }
        optimizer = build_optimizer(
            model,
            recipe.optimizer.name,
            lr=recipe.optimizer.lr,
            weight_decay=recipe.optimizer.weight_decay,
            momentum=recipe.optimizer.momentum,
            nesterov=recipe.optimizer.nesterov,
            betas=tuple(recipe.optimizer.betas),
            exclude_norm_and_bias_from_weight_decay=recipe.optimizer.exclude_norm_and_bias_from_weight_decay,
        )
        train_loader = training_loader(train_set, recipe.data.batch_size, recipe.data.num_workers)
        if recipe.train.sync_batchnorm and accelerator.num_processes > 1:
            if accelerator.device.type == "cpu":
                raise SatError(
                    "train.sync_batchnorm: PyTorch's SyncBatchNorm runs on GPUs only; "
                    "set it to false for a multi-process CPU run (--set train.sync_batchnorm=false)"
                )
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model, self.optimizer, self.train_loader = accelerator.prepare(model, optimizer, train_loader)
        self.unwrapped = accelerator.unwrap_model(self.model)

        self.steps_per_epoch = _steps_per_epoch(len(self.train_loader), recipe.optimizer.grad_accumulation)
        self.total_steps = recipe.train.total_steps(self.steps_per_epoch)
        self.epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.lr_schedule = recipe.schedule.lr.build()
        self.eps_schedule = recipe.schedule.eps.build()
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.train_attack = recipe.attack.train.build()
        self.objective = build_objective(recipe)
        # Its first result is checked (type, shape, eps-ball); each check costs a host-device sync.
        self.attack_checked = False

        self.state = TrainState()
        self.ema = WeightEMA(self.unwrapped, recipe.optimizer.ema) if recipe.optimizer.ema != "off" else None
        # Not registered with accelerate, which would pickle them: save_checkpoint writes
        # train_state.json and ema.safetensors itself.
        self.last_checkpoint: Path | None = latest_checkpoint(run_dir)
        # The checkpoint written before the latest window the divergence guard passed: what a
        # divergence names as good, and kept through pruning until a later window passes.
        self.trusted_checkpoint: Path | None = None
        # The early level is measured once both the lr warm-up and an eps ramp are over: while
        # eps grows, a healthy adversarial loss rises with it.
        settling = [
            length(self.total_steps)
            for length in (
                getattr(self.lr_schedule, "warmup_length", None),
                getattr(self.eps_schedule, "ramp_length", None),
            )
            if callable(length)
        ]
        self.divergence_guard = DivergenceGuard(recipe.train.divergence_factor, max(settling, default=0))
        self.window = TrainingWindow()
        self.started = time.perf_counter()

    @property
    def history(self) -> list[dict[str, Any]]:
        """The validations so far; part of the train state, so a resumed run still reports them all."""
        return self.state.history

    # -- resuming ---------------------------------------------------------------------------
    def restore(self) -> None:
        """Load the newest intact checkpoint: weights, optimiser, EMA, RNG, position, history.

        Each checkpoint, newest first, is checked (manifest, then every file loads as data)
        and loaded; a damaged one is set aside as ``damaged-step-...`` with a one-line warning
        and the next older one is tried. When none is intact the resume is refused (exit 2,
        nothing written): starting over silently would throw away a run the user may be able
        to repair, and deleting the checkpoints to start afresh is one command.
        """
        accelerator = self.accelerator
        root = checkpoint_root(self.run_dir)
        checkpoints = list_checkpoints(self.run_dir)
        if not checkpoints:
            self._warn(f"--resume: no checkpoint in {root}; starting from step 0")
            return
        ordered = list(reversed(checkpoints))
        damaged: list[tuple[Path, str]] = []
        start = 0
        while True:
            # The main process vets (hashes, test-loads) and every rank loads what it chose:
            # ranks that judged alone could resume from different checkpoints.
            found = -1
            if accelerator.is_main_process:
                for index in range(start, len(ordered)):
                    problem = checkpoint_problem(ordered[index], expect_ema=self.ema is not None)
                    if problem is None:
                        found = index
                        break
                    damaged.append((ordered[index], problem))
            choice = torch.tensor([found], device=accelerator.device)
            found = int(broadcast(choice, from_process=0).item()) if accelerator.num_processes > 1 else found
            if found < 0:
                newest, why = damaged[0] if damaged else (ordered[0], "damaged (see the main process)")
                more = len(ordered) - 1
                older = f" (and the {more} older ones are damaged too)" if more > 0 else ""
                raise SatError(
                    f"--resume: no intact checkpoint in {root}: {newest.name}: {why}{older}; delete {root} "
                    "to train from step 0, or start afresh in a new run.output_dir"
                )
            checkpoint, failure = ordered[found], ""
            try:
                self.state = load_checkpoint(accelerator, checkpoint, self.ema)
            except Exception as error:  # intact files that do not fit this run (another model)
                failure = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
            failed = torch.tensor([1.0 if failure else 0.0], device=accelerator.device)
            if float(accelerator.reduce(failed, reduction="sum")) == 0.0:
                break
            damaged.append(
                (checkpoint, f"does not load into this recipe's run ({failure or 'on another process'})")
            )
            start = found + 1
        accelerator.wait_for_everyone()  # every rank has read the damaged ones before they move
        for bad, why in damaged:
            aside = set_aside(bad) if accelerator.is_main_process else bad
            self._warn(
                f"checkpoint {bad} is damaged ({why}); kept as {aside.name}, resuming from "
                f"{checkpoint.name}, the newest intact one"
            )
        accelerator.wait_for_everyone()
        self.last_checkpoint = self.trusted_checkpoint = checkpoint
        warned_at = self.state.divergence_warned_at
        if warned_at:
            # The run had diverged before this checkpoint: the one to name (and keep) is still
            # the newest from before the warning, which pruning protected.
            before = [c for c in list_checkpoints(self.run_dir) if checkpoint_step(c) <= warned_at]
            self.trusted_checkpoint = before[-1] if before else None
        accelerator.print(f"resumed from {checkpoint} (step {self.state.global_step}/{self.total_steps})")

    def _warn(self, message: str) -> None:
        """One line on stderr, from the main process only (every rank reaches the same verdict)."""
        if self.accelerator.is_main_process:
            print(f"warning: {message}", file=sys.stderr, flush=True)

    def _last_good(self) -> Path | None:
        """The checkpoint to name as good: the last one before the loss diverged, else the newest.

        Every checkpoint on disk is finite (save_checkpoint refuses a non-finite state).
        """
        return self.trusted_checkpoint if self.state.divergence_warned_at else self.last_checkpoint

    def is_finished(self) -> bool:
        return self.state.global_step >= self.total_steps and (self.run_dir / METRICS_FILE).is_file()

    # -- the loop -----------------------------------------------------------------------------
    def train(self, show_progress: bool, stop_after_steps: int | None) -> bool:
        """Train to the recipe's length; False when ``stop_after_steps`` cut it short."""
        accelerator, state = self.accelerator, self.state
        self.bar = progress_bar(
            self.total_steps, state.global_step, enabled=show_progress and accelerator.is_local_main_process
        )
        self.started = time.perf_counter()
        steps_this_process = 0
        try:
            while state.epoch < self.epochs and state.global_step < self.total_steps:
                self.train_loader.set_epoch(state.epoch)
                batches = (
                    accelerator.skip_first_batches(self.train_loader, state.step_in_epoch)
                    if state.step_in_epoch
                    else self.train_loader
                )
                self.model.train()
                for x, y in batches:
                    if not self._micro_batch(x, y):
                        continue  # accumulating: no optimiser step yet
                    steps_this_process += 1
                    if stop_after_steps is not None and steps_this_process >= stop_after_steps:
                        return False
                    if state.global_step >= self.total_steps:
                        break
                self._end_epoch()
            return True
        finally:
            self.bar.close()

    def _micro_batch(self, x: torch.Tensor, y: torch.Tensor) -> bool:
        """Attack, forward, backward and (at the end of an accumulation) step; True after a step."""
        recipe, accelerator, state = self.recipe, self.accelerator, self.state
        # Randomness per micro-batch is a pure function of (seed, position, rank): a resumed
        # run draws the same random starts and dropout masks whatever consumed the global
        # RNG in between (a new data-loader iterator draws from it, for one).
        torch.manual_seed(_step_seed(recipe.run.seed, state.batches_seen, accelerator))
        lr = self._set_lr(state.global_step)
        eps = self._eps(state.global_step)
        inner = self.objective.adversarial_examples(self.unwrapped, x, y, self.train_attack, eps)
        x_adv = None if inner is None else self._attack_result(inner, x, eps).x_adv
        with accelerator.accumulate(self.model):
            smoothing = recipe.optimizer.label_smoothing
            outer = self.objective.loss(self.model, x, x_adv, y, label_smoothing=smoothing)
            loss, logits = outer.loss, outer.logits
            total_loss = accelerator.reduce(loss.detach(), reduction="mean")
            if not torch.isfinite(total_loss):
                last = self._last_good()
                kept = f"the last good checkpoint is {last}" if last else "no checkpoint"
                raise NonFiniteLossError(
                    f"training stopped at step {state.global_step}: the loss is {float(total_loss)} "
                    f"({kept}); lower optimizer.lr, or check the data and the attack's eps"
                )
            accelerator.backward(loss)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        state.batches_seen += 1
        state.step_in_epoch += 1
        self.window.add(loss.detach(), logits.detach(), y)
        if not accelerator.sync_gradients:
            return False
        state.global_step += 1
        state.last_loss = float(total_loss)
        if self.ema is not None:
            self.ema.update(self.unwrapped, state.global_step)
        self.bar.update(1)
        if state.global_step % recipe.train.log_every_steps == 0 or state.global_step == self.total_steps:
            self._log_window(x, y, lr, eps)
        every = recipe.checkpoint.every_steps
        if every and state.global_step % every == 0:
            self._checkpoint()
        return True

    def _attack_result(self, result: object, x: torch.Tensor, eps: float | None) -> AttackResult:
        """The training attack's result as an AttackResult; the run's first one is checked.

        A plugin attack that returns the wrong thing fails in its first step with one line;
        later steps are not checked, since every check waits for the device.
        """
        label = self.recipe.attack.train.name
        if self.attack_checked:
            return as_attack_result(label, result, 0.0 if eps is None else eps)
        budget = eps if eps is not None else getattr(self.train_attack, "eps", None)
        if not isinstance(budget, (int, float)):
            budget = math.inf  # an attack without a budget: only type, shape and [0, 1] are checked
        norm = getattr(self.train_attack, "norm", None) or self.recipe.attack.threat_model.get("norm", "linf")
        checked = checked_result(label, result, x, float(budget), norm)
        self.attack_checked = True
        return checked

    def _set_lr(self, step: int) -> float:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = self.lr_schedule.value(step, self.total_steps, base)
        return self.optimizer.param_groups[0]["lr"]

    def _eps(self, step: int) -> float | None:
        base = self.recipe.attack.eps
        return None if base is None else self.eps_schedule.value(step, self.total_steps, base)

    def _log_window(self, x: torch.Tensor, y: torch.Tensor, lr: float, eps: float | None) -> None:
        scalars = self.window.flush(self.accelerator, self.unwrapped, x, y)
        scalars.update({"lr": lr, "eps": eps if eps is not None else 0.0})
        self.bar.set_postfix(loss=f"{scalars['loss']:.3f}", adv_acc=f"{scalars['adv_accuracy']:.2f}")
        if self.recipe.logging.tensorboard:
            self.accelerator.log({f"train/{k}": v for k, v in scalars.items()}, step=self.state.global_step)
        self._guard_divergence(scalars["loss"])

    def _guard_divergence(self, loss: float) -> None:
        """Warn once, or stop, when the window's loss has risen far above its early level."""
        state, mode = self.state, self.recipe.train.divergence
        if mode == "off" or state.divergence_warned_at:
            return
        verdict, problem = self.divergence_guard.check(
            state.loss_reference, state.global_step, loss, self.window.num_classes
        )
        if verdict == "ok":  # only a judged window vouches for the checkpoints written before it
            self.trusted_checkpoint = self.last_checkpoint
        if verdict != "diverged":
            return
        good = self.trusted_checkpoint
        named = f"the last good checkpoint is {good}" if good else "no checkpoint was written before it"
        if mode == "stop":
            raise DivergenceError(
                f"training stopped at step {state.global_step}: {problem}; {named}; lower optimizer.lr "
                '(or set train.divergence = "warn" to train on)'
            )
        state.divergence_warned_at = state.global_step
        self._warn(
            f"step {state.global_step}: {problem}: the run has diverged; {named}; lower optimizer.lr "
            '(train.divergence = "stop" stops here)'
        )

    def _checkpoint(self) -> None:
        """Save a checkpoint of a finite state (else stop naming the last good one); every rank calls it."""
        guarded = self.recipe.train.divergence != "off"
        self.last_checkpoint = save_checkpoint(
            self.accelerator, self.run_dir, self.state, self.recipe.checkpoint.keep_last, self.ema,
            model=self.unwrapped, optimizer=self.optimizer,
            protect=self.trusted_checkpoint if guarded else None, last_good=self._last_good(),
        )  # fmt: skip

    def _end_epoch(self) -> None:
        """Checkpoint at every epoch boundary; validate every ``validate_every_epochs``."""
        state = self.state
        state.epoch += 1
        state.step_in_epoch = 0
        k = self.recipe.train.validate_every_epochs
        if k and state.epoch % k == 0 and state.epoch < self.epochs:
            validation = validate(self.recipe, self.unwrapped, self.test_set, self.accelerator)
            self.history.append({"epoch": state.epoch, "step": state.global_step, **validation})
            if self.accelerator.is_main_process:  # every rank holds the gathered numbers; say them once
                self.bar.write(
                    f"epoch {state.epoch}: clean {validation['clean_accuracy']:.3f}, "
                    f"PGD-10 {validation['robust_accuracy']:.3f} on {validation['samples']} test images"
                )
            if self.recipe.logging.tensorboard:
                self.accelerator.log({f"val/{k}": v for k, v in validation.items()}, step=state.global_step)
        # After the validation, so this checkpoint's train state holds it: a resume from here
        # does not validate this epoch again.
        self._checkpoint()

    # -- the end ------------------------------------------------------------------------------
    def finish(self, show_progress: bool) -> RunSummary:
        """Export the (EMA) model, run the recipe's evaluation, write metrics.json."""
        accelerator, recipe = self.accelerator, self.recipe
        final_model = self.ema.module if self.ema is not None else self.unwrapped
        fingerprints = accelerator.gather(_fingerprint(self.unwrapped).to(accelerator.device)).view(-1, 3)
        metrics: dict[str, Any] = {
            "steps": self.state.global_step,
            "epochs": self.state.epoch,
            "final_train_loss": self.state.last_loss,
            "train_seconds_this_process": round(time.perf_counter() - self.started, 2),
            "world_size": accelerator.num_processes,
            "per_device_batch_size": recipe.data.batch_size,
            "global_batch_size": recipe.data.batch_size
            * accelerator.num_processes
            * recipe.optimizer.grad_accumulation,
            # Identical rows prove every rank ended with the same weights (DDP kept them in sync).
            "rank_weight_fingerprints": fingerprints.tolist(),
            "device": str(accelerator.device),
            "validation": self.history,
            # Which package (and version) provided each plugin, so a shared run can be redone.
            "plugins": run_plugins(recipe),
        }
        if accelerator.is_main_process:
            save_model(final_model, self.sat_config, self.run_dir / MODEL_FILE)
            evaluation = final_evaluation(recipe, final_model, self.test_set, accelerator, show_progress)
            metrics["evaluation"] = evaluation
            if recipe.logging.tensorboard:
                accelerator.log(evaluation_scalars(evaluation), step=self.state.global_step)
            _write_json(self.run_dir / METRICS_FILE, metrics)
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return RunSummary(self.run_dir, metrics)


def _build_data(recipe: Recipe) -> tuple[Any, Any, Any]:
    from sat_toolkit.data import create_dataset

    source = create_dataset(recipe.data.plugin.to_dict())
    return source, source.load("train"), source.load("test")


def _distributed_without_accelerator() -> bool:
    """True for a multi-process launch on a machine with no GPU/XPU/...: train on CPU with gloo.

    accelerate forms a CPU process group only when asked for the CPU; ``torchrun`` or
    ``accelerate launch --multi_gpu`` on a CPU-only machine would otherwise start processes
    that each train alone.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    has_accelerator = getattr(torch, "accelerator", None)
    if has_accelerator is not None and torch.accelerator.is_available():
        return False
    return not torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_XLA", "").lower() != "true"


def _fingerprint(model: nn.Module) -> torch.Tensor:
    """Three float64 sums over the parameters that differ if any rank's weights differ.

    Accumulated tensor by tensor, so the peak extra memory is one parameter, not the model.
    """
    total = torch.zeros(3, dtype=torch.float64)
    for index, parameter in enumerate(model.parameters(), start=1):
        values = parameter.detach().double().cpu()
        plain = values.sum()
        total += torch.stack([plain, (values * values).sum(), index * plain])
    return total


def _step_seed(seed: int, batches_seen: int, accelerator: Accelerator) -> int:
    return (seed * 1_000_003 + batches_seen * accelerator.num_processes + accelerator.process_index) % 2**63


def _steps_per_epoch(batches_per_epoch: int, accumulation: int) -> int:
    steps = batches_per_epoch // accumulation
    if steps < 1:
        raise SatError(
            f"data.batch_size x optimizer.grad_accumulation is larger than the training set "
            f"({batches_per_epoch} batches per epoch); lower one of them"
        )
    return steps


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
