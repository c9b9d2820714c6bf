"""Adversarial training with Hugging Face accelerate, read top to bottom in :func:`train`.

:func:`train` holds the whole loop, ``for epoch: for batch:``, and calls one small function
per concern: build the run's parts, restore, one adversarial step through the objective,
what follows an optimiser step, the end of an epoch, the finish.

Per batch, the objective crafts examples on the *unwrapped* model (inside the attack
phase, BatchNorm as the attack's ``bn_mode`` says, at the attack's own precision: see
:mod:`sat_toolkit.engine.precision`); the training forward and backward
then go through the *prepared* model, so under DDP every rank's gradients are
synchronised (a training forward through the unwrapped model would silently
desynchronise them). Everything that decides what happens next (weights, optimiser, lr
scheduler, EMA, RNG, the position inside the epoch) is checkpointed, so ``--resume``
after a crash continues as if the run had never stopped.

Nothing in a step waits for the device: the metrics window and the non-finite-loss flag
stay on it until a log window or a checkpoint asks for a number.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, broadcast, set_seed
from torch import nn
from tqdm.auto import tqdm

from sat_toolkit.attacks.checked import as_attack_result, checked_result
from sat_toolkit.attacks.result import AttackResult
from sat_toolkit.devices import describe as describe_device
from sat_toolkit.devices import emulated_bf16_warning
from sat_toolkit.engine.checkpoint import (
    RECIPE_COPY,
    TRAIN_STATE_FILE,
    TrainState,
    checkpoint_problem,
    checkpoint_root,
    checkpoint_step,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    recipe_change,
    run_length,
    save_checkpoint,
    set_aside,
)
from sat_toolkit.engine.ema import WeightEMA
from sat_toolkit.engine.evaluation import evaluation_scalars, final_evaluation, preflight_evaluation, validate
from sat_toolkit.engine.loader import training_loader
from sat_toolkit.engine.logging import flatten_hparams, progress_bar
from sat_toolkit.engine.memory import keep_freed_memory
from sat_toolkit.engine.optim import build_optimizer
from sat_toolkit.engine.overfitting import OverfittingError, first_collapse, judge, single_step_label
from sat_toolkit.engine.precision import unpatched
from sat_toolkit.engine.window import DivergenceError, DivergenceGuard, TrainingWindow
from sat_toolkit.errors import SatError, first_line
from sat_toolkit.export import save_model
from sat_toolkit.objectives import Objective, build_objective
from sat_toolkit.objectives.base import loss_problem
from sat_toolkit.plugins.provenance import run_plugins
from sat_toolkit.recipe import METRICS_FILE, MODEL_FILE, Recipe, check_run_dir, save_resolved_recipe
from sat_toolkit.recipe.finished import REDO, read_finished_metrics
from sat_toolkit.recipe.rundir import RunInProgress, hold_run_lock, is_failed_start
from sat_toolkit.schedules import lambda_lr
from sat_toolkit.schedules.base import run_value


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
    new_dir = not run_dir.exists()
    resuming = check_run_dir(run_dir, recipe, resume=resume)  # also: can the run write there?
    accelerator = make_accelerator(recipe, run_dir)
    run = build_run(recipe, accelerator, run_dir)
    # Nothing is written before this point, so a bad image file leaves no run directory
    # behind; it would otherwise surface in a loader worker, after recipe.toml exists. A
    # resumed run's files passed this at its start (ImageNet's headers take about a minute).
    if not resuming:
        check_files(run.train_loader.dataset)
        check_files(run.test_set)
        _first_training_sample(run.train_loader.dataset)
    # Seconds here instead of a traceback after the last epoch (nothing is written yet).
    preflight_evaluation(recipe, run.unwrapped, run.train_loader.dataset, accelerator.device)
    lock = hold_run_lock(run_dir)  # from here a second launch into run_dir sees this run in progress
    if lock is not None and not resuming and not is_failed_start(run_dir):
        lock.close()  # a launch beside this one took the lock first and has written since
        raise RunInProgress(run_dir)
    try:
        if resume or resuming:
            metrics = _finished_results(run_dir)
            if metrics is None:  # restore() also says so when --resume finds nothing to resume
                restore(run)
                if _is_finished(run):
                    metrics = _finished_metrics(run_dir)  # damaged: that is the message, not 'nothing to do'
            if metrics is not None:
                accelerator.print(f"{run_dir} is already finished ({metrics['steps']} steps); nothing to do")
                return RunSummary(run_dir, metrics)
        if accelerator.is_main_process:
            save_resolved_recipe(recipe, run_dir)
        if recipe.logging.tensorboard:
            accelerator.init_trackers("train", config=flatten_hparams(recipe.to_dict()))

        state = run.state
        bar = progress_bar(
            run.total_steps, state.global_step, enabled=show_progress and accelerator.is_local_main_process
        )
        run.started = time.perf_counter()
        steps_this_process = 0
        with bar:
            while state.global_step < run.total_steps and not _epochs_done(run):
                run.train_loader.set_epoch(state.epoch)
                run.model.train()
                for x, y in _remaining_batches(run):
                    if not adversarial_step(run, x, y):
                        continue  # accumulating: no optimiser step yet
                    after_optimizer_step(run, bar, x, y)
                    steps_this_process += 1
                    if stop_after_steps is not None and steps_this_process >= stop_after_steps:
                        accelerator.end_training()  # as if killed: no end of epoch, no evaluation
                        return RunSummary(run_dir, {"stopped_at_step": state.global_step})
                    if state.global_step >= run.total_steps:
                        break
                end_epoch(run, bar)
        return finish(run, show_progress)
    except BaseException:
        nothing_logged = run.state.global_step < recipe.train.log_every_steps
        if new_dir and nothing_logged and accelerator.is_main_process:
            _remove_failed_start(run_dir)
        raise
    finally:
        if lock is not None:
            lock.close()


def _remove_failed_start(run_dir: Path) -> None:
    """Remove the directory a launch created and failed in before it checkpointed or logged
    a step (a plugin attack's wrong result, an objective's NaN loss at step 1).

    It holds only recipe.toml and a tensorboard log of no step, nothing a user could lose,
    and left in place it refused the corrected recipe ("holds a different run ... remove it").
    """
    if is_failed_start(run_dir):
        shutil.rmtree(run_dir, ignore_errors=True)


@contextlib.contextmanager
def _generators_left_alone() -> Iterator[None]:
    """Whatever the body draws, python's, numpy's and torch's CPU generators end as they began,
    so a run draws the same random numbers with or without a look at its data."""
    import random

    import numpy as np

    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        yield
    random.setstate(python_state)
    np.random.set_state(numpy_state)


def _first_training_sample(dataset: Any) -> None:
    """Decode and augment one training image here, before the run writes anything.

    An augmentation the images cannot take (a crop larger than they are) otherwise fails in
    a loader worker at the first batch, after recipe.toml exists, leaving a directory that
    a corrected recipe is then refused.
    """
    with _generators_left_alone():
        dataset[0]


def _check_schedules(recipe: Recipe, lr_schedule: Any, eps_schedule: Any, total_steps: int) -> None:
    """Ask both schedules for 65 steps spread over the run, the last included, before anything
    is written: a plugin schedule that turns negative or NaN part-way is one line now, not a
    run that fails after its first checkpoints (:func:`run_value` checks every step too)."""
    steps = sorted({*range(0, total_steps, max(total_steps // 64, 1)), total_steps - 1})
    for key, schedule, base in (
        ("schedule.lr", lr_schedule, recipe.optimizer.lr),
        ("schedule.eps", eps_schedule, recipe.attack.eps),
    ):
        for step in steps if base is not None else ():
            run_value(schedule, step, total_steps, base, key)


def _check_plugin_data(recipe: Recipe, source: Any, train_set: Any, test_set: Any) -> None:
    """Hold a plugin dataset's splits to the item contract before anything is written.

    A plugin's off-by-one label or float64 image would otherwise be a traceback from inside
    the loss or the attack (:mod:`sat_toolkit.data.checks`). Built-in datasets are trusted:
    their tests check them.
    """
    from sat_toolkit.data.checks import split_problems
    from sat_toolkit.plugins import get_plugin_host

    name = recipe.data.plugin.name
    if get_plugin_host().record("dataset", name).builtin:
        return
    info = source.info()
    with _generators_left_alone():
        for split, dataset in (("train", train_set), ("test", test_set)):
            problems = split_problems(dataset, info, f"load({split!r})")
            if problems:
                raise SatError(f"dataset '{name}': {problems[0]}")


def _finished_results(run_dir: Path) -> dict[str, Any] | None:
    """A finished run's ``metrics.json`` when its results are in place, else None.

    The recipe is the run's own (:func:`check_run_dir`), so an evaluated ``metrics.json``
    beside the final weights means there is nothing left to train. Asking the checkpoints
    instead retrained a finished run whose last checkpoint was damaged from the one
    before it, to the same weights, for nothing.
    """
    metrics, _ = read_finished_metrics(run_dir)
    has_weights = (run_dir / MODEL_FILE).is_file()
    return metrics if metrics is not None and has_weights and isinstance(metrics.get("steps"), int) else None


def _finished_metrics(run_dir: Path) -> dict[str, Any]:
    """A finished run's ``metrics.json``; damaged, it is a one-line error saying how to redo it.

    Finished means evaluated, as a study reads it (``grid.read_metrics``): a file without
    its ``evaluation`` would have the run report "nothing to do" and the study rerun the
    cell at every invocation, without ever a number.
    """
    metrics, problem = read_finished_metrics(run_dir)
    if metrics is None:
        raise SatError(
            f"{run_dir / METRICS_FILE} is damaged ({problem or 'gone'}); {REDO}: the final evaluation "
            "runs again on the finished weights"
        )
    return metrics


def make_accelerator(recipe: Recipe, run_dir: Path) -> Accelerator:
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
    slow = emulated_bf16_warning(recipe.optimizer.mixed_precision, accelerator.device)
    if slow and accelerator.is_main_process:
        print(f"warning: {slow}", file=sys.stderr, flush=True)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        raise SatError(
            f"launched as {launched} processes but accelerate formed a group of {accelerator.num_processes}; "
            "every process would train alone and overwrite the same run directory"
        )
    return accelerator


@dataclasses.dataclass(eq=False)
class TrainingRun:
    """One run's prepared parts and its position: what every step of :func:`train` reads.

    Built by :func:`build_run`; ``state`` is what a checkpoint's train state holds (the
    weights, optimiser, scheduler and RNG go through accelerate, the EMA as safetensors).
    """

    recipe: Recipe
    accelerator: Accelerator
    run_dir: Path
    model: nn.Module  # prepared (DDP under several processes): the training forward goes through it
    unwrapped: nn.Module  # the same weights, unwrapped: checkpoints, the EMA and the export read it
    step_model: nn.Module  # what the training loss calls: ``model``, torch.compile'd with train.compile
    attack_model: nn.Module  # what the training attack calls: ``unpatched(unwrapped)``, likewise
    optimizer: torch.optim.Optimizer
    lr_scheduler: Any  # accelerate's wrapper around a LambdaLR over the recipe's lr schedule
    train_loader: Any
    test_set: Any
    objective: Objective
    train_attack: Any
    eps_schedule: Any
    ema: WeightEMA | None
    sat_config: dict[str, Any]  # what `sat-toolkit eval` needs besides the architecture
    total_steps: int
    steps_per_epoch: int
    epochs: int
    divergence_guard: DivergenceGuard
    state: TrainState = dataclasses.field(default_factory=TrainState)
    window: TrainingWindow = dataclasses.field(default_factory=TrainingWindow)
    # Its first result is checked (type, shape, eps-ball); each check costs a host-device sync.
    attack_checked: bool = False
    last_checkpoint: Path | None = None
    # The checkpoint written before the latest window the divergence guard passed: what a
    # divergence names as good, and kept through pruning until a later window passes.
    trusted_checkpoint: Path | None = None
    started: float = dataclasses.field(default_factory=time.perf_counter)

    @property
    def history(self) -> list[dict[str, Any]]:
        """The validations so far; part of the train state, so a resumed run still reports them all."""
        return self.state.history


# -- build the run's parts -------------------------------------------------------------------
def build_run(recipe: Recipe, accelerator: Accelerator, run_dir: Path) -> TrainingRun:
    """Seed every RNG, build data, model, optimiser and lr scheduler, and hand them to accelerate."""
    from sat_toolkit.models import create_model

    set_seed(recipe.run.seed, deterministic=recipe.run.deterministic)
    if accelerator.device.type == "cpu":
        keep_freed_memory()
    source, train_set, test_set = _build_data(recipe)
    _check_plugin_data(recipe, source, train_set, test_set)
    model = create_model(recipe.model.to_dict(), source.info(), recipe.activation.to_dict())
    if recipe.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    sat_config = {
        **model.sat_config,
        "dataset": recipe.data.plugin.to_dict(),
        "train_attack": recipe.attack.train.to_dict(),
        "objective": recipe.objective.to_dict(),  # how it was trained, for whoever evaluates it
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
    # The run is sized by the batches each process sees: prepared, the loader is sharded
    # over the processes (N of them take 1/N of an epoch's batches each, N batches a step).
    # Sized by the whole loader, N processes trained 1/N of train.steps and stopped with
    # the lr schedule unfinished.
    train_loader = accelerator.prepare(train_loader)
    steps_per_epoch = _steps_per_epoch(len(train_loader), recipe)
    total_steps = recipe.train.total_steps(steps_per_epoch)
    lr_schedule, eps_schedule = recipe.schedule.lr.build(), recipe.schedule.eps.build()
    _check_schedules(recipe, lr_schedule, eps_schedule, total_steps)
    # Stepped once per optimiser step; accelerate checkpoints it (scheduler.bin, its step only).
    lr_scheduler = lambda_lr(optimizer, lr_schedule, total_steps)
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    unwrapped = accelerator.unwrap_model(model)
    # The early loss level is measured once both the lr warm-up and an eps ramp are over:
    # while eps grows, a healthy adversarial loss rises with it.
    settling = [
        length(total_steps)
        for length in (
            getattr(lr_schedule, "warmup_length", None),
            getattr(eps_schedule, "ramp_length", None),
        )
        if callable(length)
    ]
    ema = WeightEMA(unwrapped, recipe.optimizer.ema) if recipe.optimizer.ema != "off" else None
    # Compiled modules share the weights; checkpoints, the EMA and evaluation keep using the
    # uncompiled ones, so a run's files do not depend on this setting.
    step_model = torch.compile(model) if recipe.train.compile else model
    # The attack runs at its own precision (attack.train.precision), so not through the
    # forward accelerate patches for mixed precision (sat_toolkit/engine/precision.py).
    attack_model = unpatched(unwrapped)
    if recipe.train.compile:
        attack_model = step_model if attack_model is model else torch.compile(attack_model)
    return TrainingRun(
        recipe=recipe, accelerator=accelerator, run_dir=run_dir, model=model, unwrapped=unwrapped,
        step_model=step_model, attack_model=attack_model,
        optimizer=optimizer, lr_scheduler=lr_scheduler, train_loader=train_loader, test_set=test_set,
        objective=build_objective(recipe), train_attack=recipe.attack.train.build(),
        eps_schedule=eps_schedule, ema=ema, sat_config=sat_config, total_steps=total_steps,
        steps_per_epoch=steps_per_epoch, epochs=math.ceil(total_steps / steps_per_epoch),
        divergence_guard=DivergenceGuard(recipe.train.divergence_factor, max(settling, default=0)),
        last_checkpoint=latest_checkpoint(run_dir),
    )  # fmt: skip


# -- restore ---------------------------------------------------------------------------------
def restore(run: TrainingRun) -> None:
    """Load the newest intact checkpoint: weights, optimiser, scheduler, EMA, RNG, position, history.

    Each checkpoint, newest first, is checked (manifest, then every file loads as data)
    and loaded; a damaged one is set aside as ``damaged-step-...`` with a one-line warning
    and the next older one is tried. When none is intact the resume is refused (exit 2,
    nothing written): starting over silently would throw away a run the user may be able
    to repair, and deleting the checkpoints to start afresh is one command.
    """
    accelerator = run.accelerator
    root = checkpoint_root(run.run_dir)
    checkpoints = list_checkpoints(run.run_dir)
    if not checkpoints:
        _warn(run, f"--resume: no checkpoint in {root}; starting from step 0")
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
                problem = checkpoint_problem(ordered[index], expect_ema=run.ema is not None)
                if problem is None:
                    found = index
                    break
                damaged.append((ordered[index], problem))
        choice = torch.tensor([found], device=accelerator.device)
        found = int(broadcast(choice, from_process=0).item()) if accelerator.num_processes > 1 else found
        if found < 0:
            newest, why = damaged[0] if damaged else (ordered[0], "damaged (see the main process)")
            more = len(ordered) - 1
            older = (
                f" (and the {more} older ones are damaged too)" if more > 1
                else " (and the older one is damaged too)" if more == 1 else ""
            )  # fmt: skip
            raise SatError(
                f"--resume: no intact checkpoint in {root}: {newest.name}: {why}{older}; delete {root} "
                "to train from step 0, or start afresh in a new run.output_dir"
            )
        checkpoint, failure = ordered[found], ""
        _refuse_another_recipe(run, checkpoint)
        _refuse_another_epoch_length(run, checkpoint)
        try:
            run.state = load_checkpoint(accelerator, checkpoint, run.ema)
            failure = _position_problem(run) or ""
        except Exception as error:  # intact files that do not fit this run (another model)
            failure = first_line(error)
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
        _warn(
            run,
            f"checkpoint {bad} is damaged ({why}); kept as {aside.name}, resuming from "
            f"{checkpoint.name}, the newest intact one",
        )
    accelerator.wait_for_everyone()
    run.last_checkpoint = run.trusted_checkpoint = checkpoint
    warned_at = run.state.divergence_warned_at
    if warned_at:
        # The run had diverged before this checkpoint: the one to name (and keep) is still
        # the newest from before the warning, which pruning protected.
        before = [c for c in list_checkpoints(run.run_dir) if checkpoint_step(c) <= warned_at]
        run.trusted_checkpoint = before[-1] if before else None
    if not _is_finished(run):  # a finished run says so instead, and trains nothing
        accelerator.print(f"resumed from {checkpoint} (step {run.state.global_step}/{run.total_steps})")


def _refuse_another_recipe(run: TrainingRun, checkpoint: Path) -> None:
    """A resume continues the run its checkpoint belongs to, or none: a recipe.toml edited
    since (more or fewer epochs, another lr) would change it under the checkpoint's feet."""
    changed = recipe_change(checkpoint, run.recipe)
    if changed:
        shown = "; ".join(changed[:3]) + (f"; and {len(changed) - 3} more" if len(changed) > 3 else "")
        raise SatError(
            f"--resume: {checkpoint.name} was trained with another recipe than this one ({shown}); a "
            f"resume continues the same run: restore the recipe (the checkpoint's copy: "
            f"{checkpoint / RECIPE_COPY}) or start the changed one in a new run.output_dir"
        )


def _refuse_another_epoch_length(run: TrainingRun, checkpoint: Path) -> None:
    """A run sized in epochs resumes only where its epochs take as many steps as they did.

    N processes share an epoch (1/N of one process's steps each), so epochs finished by 2
    processes and resumed by 1 leave the run short of the steps its lr schedule was sized
    for: 60 epochs ended at step 575 of 600, the lr above its final value (a stranger's
    walk resumed a Ctrl-C'd 2-process run with the single-process command printed then).
    A run of ``train.steps``, or one still in its first epoch, resumes in any number.
    """
    written_for = run_length(checkpoint, run.recipe)
    if written_for is None or written_for == run.total_steps:
        return
    processes = run.accelerator.num_processes
    raise SatError(
        f"--resume: {checkpoint.name} belongs to a run of {written_for} steps ({run.epochs} epochs), here "
        f"the same epochs take {run.total_steps}: another number of processes ({processes} now) shares "
        "each epoch differently, and the lr schedule would not end where the recipe says; "
        "resume with as many processes as wrote it (accelerate launch --num_processes N ... --resume)"
    )


def _epochs_done(run: TrainingRun) -> bool:
    """Whether a run whose length the recipe gives in epochs has had them all.

    A run of ``train.steps`` ends on its step count alone: its epochs are counted in the
    epochs of the process count that ran them (N processes share an epoch, so one of
    theirs is 1/N of one process's steps), so a checkpoint of 2 processes resumed in 1
    would otherwise stop short of ``train.steps``, its lr schedule unfinished.
    """
    return run.recipe.train.steps == 0 and run.state.epoch >= run.epochs


def _position_problem(run: TrainingRun) -> str | None:
    """Where a checkpoint's train state puts the run beyond this recipe's length, or None.

    The recipe cannot change on a resume, so such a state was written by hand (or for
    another run): resumed, it would end the run at once and call it finished. Epochs
    bound a run only where the recipe counts them (see :func:`_epochs_done`).
    """
    state = run.state
    if state.global_step > run.total_steps:
        return f"{TRAIN_STATE_FILE} is at step {state.global_step}, past this run's last, {run.total_steps}"
    if run.recipe.train.steps == 0 and state.epoch > run.epochs:
        return f"{TRAIN_STATE_FILE} is at epoch {state.epoch}, past this run's last, {run.epochs}"
    return None


def _is_finished(run: TrainingRun) -> bool:
    return run.state.global_step >= run.total_steps and (run.run_dir / METRICS_FILE).is_file()


def _remaining_batches(run: TrainingRun) -> Any:
    """This epoch's batches from the current position (a resumed run skips those already seen)."""
    skip = run.state.step_in_epoch
    return run.accelerator.skip_first_batches(run.train_loader, skip) if skip else run.train_loader


# -- one adversarial step through the objective ------------------------------------------------
def adversarial_step(run: TrainingRun, x: torch.Tensor, y: torch.Tensor) -> bool:
    """Attack, forward, backward and (at the end of an accumulation) step; True after a step."""
    accelerator, state = run.accelerator, run.state
    # Randomness per micro-batch is a pure function of (seed, position, rank): a resumed
    # run draws the same random starts and dropout masks whatever consumed the global
    # RNG in between (a new data-loader iterator draws from it, for one).
    torch.manual_seed(_step_seed(run.recipe.run.seed, state.batches_seen, accelerator))
    if run.recipe.train.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    eps = _eps(run, state.global_step)
    inner = run.objective.adversarial_examples(run.attack_model, x, y, run.train_attack, eps)
    x_adv = None if inner is None else _attack_result(run, inner, x, eps).x_adv
    with accelerator.accumulate(run.model):
        outer = run.objective.loss(
            run.step_model, x, x_adv, y, label_smoothing=run.recipe.optimizer.label_smoothing
        )
        _check_objective_loss(run, outer, len(y))
        accelerator.backward(outer.loss)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
    state.batches_seen += 1
    state.step_in_epoch += 1
    run.window.add(outer.loss, outer.logits, y, state.global_step + 1)
    return accelerator.sync_gradients


def _check_objective_loss(run: TrainingRun, outer: object, batch_size: int) -> None:
    """A plugin objective whose loss returns the wrong thing fails in one line, not a traceback."""
    problem = loss_problem(outer, batch_size, run.sat_config["data_info"]["num_classes"])
    if problem:
        raise SatError(f"objective '{run.recipe.objective.name}': {problem}")


def _attack_result(run: TrainingRun, result: object, x: torch.Tensor, eps: float | None) -> AttackResult:
    """The training attack's result as an AttackResult; the run's first one is checked.

    A plugin attack that returns the wrong thing fails in its first step with one line;
    later steps are not checked, since every check waits for the device.
    """
    label = run.recipe.attack.train.name
    if run.attack_checked:
        return as_attack_result(label, result, 0.0 if eps is None else eps)
    budget = eps if eps is not None else getattr(run.train_attack, "eps", None)
    if not isinstance(budget, (int, float)):
        budget = math.inf  # an attack without a budget: only type, shape and [0, 1] are checked
    norm = getattr(run.train_attack, "norm", None) or run.recipe.attack.threat_model.get("norm", "linf")
    checked = checked_result(label, result, x, float(budget), norm)
    run.attack_checked = True
    return checked


def _eps(run: TrainingRun, step: int) -> float | None:
    base = run.recipe.attack.eps
    return None if base is None else run_value(run.eps_schedule, step, run.total_steps, base, "schedule.eps")


# -- what follows an optimiser step ------------------------------------------------------------
def after_optimizer_step(run: TrainingRun, bar: tqdm, x: torch.Tensor, y: torch.Tensor) -> None:
    """Advance the schedule and the EMA; log and check at log steps; checkpoint when due."""
    recipe, state = run.recipe, run.state
    lr, eps = run.lr_scheduler.get_last_lr()[0], _eps(run, state.global_step)  # what this step used
    state.global_step += 1
    run.lr_scheduler.step()
    if run.ema is not None:
        run.ema.update(run.unwrapped, state.global_step)
    bar.update(1)
    if state.global_step % recipe.train.log_every_steps == 0 or state.global_step == run.total_steps:
        log_window(run, bar, x, y, lr, eps)
    every = recipe.checkpoint.every_steps
    if every and state.global_step % every == 0:
        checkpoint(run)


def log_window(
    run: TrainingRun, bar: tqdm, x: torch.Tensor, y: torch.Tensor, lr: float, eps: float | None
) -> None:
    """The window's metrics (one sync): a non-finite loss stops here, a diverging one is judged."""
    check_loss(run)
    scalars = run.window.flush(run.accelerator, run.unwrapped, x, y)
    scalars.update({"lr": lr, "eps": eps if eps is not None else 0.0})
    bar.set_postfix(loss=f"{scalars['loss']:.3f}", adv_acc=f"{scalars['adv_accuracy']:.2f}")
    if run.recipe.logging.tensorboard:
        run.accelerator.log({f"train/{k}": v for k, v in scalars.items()}, step=run.state.global_step)
    guard_divergence(run, scalars["loss"])


def check_loss(run: TrainingRun) -> None:
    """Stop, naming the last good checkpoint, if any loss since the start was NaN or inf.

    Called at every log window and before every checkpoint (where the run waits for the
    device anyway), so no checkpoint is ever written after a non-finite loss. Also records
    the last step's loss (averaged over the processes) in the train state.
    """
    found = run.window.check_loss(run.accelerator)
    run.state.last_loss = found.last_loss
    if found.bad_step is None:
        return
    last = _last_good(run)
    kept = f"the last good checkpoint is {last}" if last else "no checkpoint"
    if found.bad_step <= 1:  # computed on the initial weights: no update, no lr, had a hand in it
        from sat_toolkit.plugins import get_plugin_host

        record = get_plugin_host().record("objective", run.recipe.objective.name)
        package = "" if record.builtin else f" from {record.distribution}"
        fix = (
            f"the first loss, before any update (so not the lr): check the objective "
            f"'{run.recipe.objective.name}'{package}, the data and the attack's eps"
        )
    else:
        fix = "lower optimizer.lr, or check the data and the attack's eps"
    raise NonFiniteLossError(
        f"training stopped at step {run.state.global_step}: the loss is {found.bad_loss} since step "
        f"{found.bad_step} ({kept}); {fix}"
    )


def guard_divergence(run: TrainingRun, loss: float) -> None:
    """Warn once, or stop, when the window's loss has risen far above its early level."""
    state, mode = run.state, run.recipe.train.divergence
    if mode == "off" or state.divergence_warned_at:
        return
    verdict, problem = run.divergence_guard.check(
        state.loss_reference, state.global_step, loss, run.window.num_classes
    )
    if verdict == "ok":  # only a judged window vouches for the checkpoints written before it
        run.trusted_checkpoint = run.last_checkpoint
    if verdict != "diverged":
        return
    good = run.trusted_checkpoint
    named = f"the last good checkpoint is {good}" if good else "no checkpoint was written before it"
    if mode == "stop":
        raise DivergenceError(
            f"training stopped at step {state.global_step}: {problem}; {named}; lower optimizer.lr "
            '(or set train.divergence = "warn" to train on)'
        )
    state.divergence_warned_at = state.global_step
    _warn(
        run,
        f"step {state.global_step}: {problem}: the run has diverged; {named}; lower optimizer.lr "
        '(train.divergence = "stop" stops here)',
    )


def checkpoint(run: TrainingRun) -> None:
    """Save a checkpoint of a finite state (else stop naming the last good one); every rank calls it."""
    check_loss(run)
    guarded = run.recipe.train.divergence != "off"
    run.last_checkpoint = save_checkpoint(
        run.accelerator, run.run_dir, run.state, run.recipe.checkpoint.keep_last, run.ema,
        model=run.unwrapped, optimizer=run.optimizer,
        protect=run.trusted_checkpoint if guarded else None, last_good=_last_good(run),
        recipe_toml=run.recipe.to_toml(),
    )  # fmt: skip


def _last_good(run: TrainingRun) -> Path | None:
    """The checkpoint to name as good: the last one before the loss diverged, else the newest.

    Every checkpoint on disk is finite (save_checkpoint refuses a non-finite state).
    """
    return run.trusted_checkpoint if run.state.divergence_warned_at else run.last_checkpoint


def _warn(run: TrainingRun, message: str) -> None:
    """One line on stderr, from the main process only (every rank reaches the same verdict)."""
    if run.accelerator.is_main_process:
        print(f"warning: {message}", file=sys.stderr, flush=True)


# -- end of epoch ----------------------------------------------------------------------------
def end_epoch(run: TrainingRun, bar: tqdm) -> None:
    """Checkpoint at every epoch boundary; validate every ``validate_every_epochs``."""
    state, accelerator = run.state, run.accelerator
    state.epoch += 1
    state.step_in_epoch = 0
    k = run.recipe.train.validate_every_epochs
    if k and state.epoch % k == 0 and state.epoch < run.epochs:
        validation = validate(run.recipe, run.unwrapped, run.test_set, accelerator)
        run.history.append({"epoch": state.epoch, "step": state.global_step, **validation})
        if accelerator.is_main_process:  # every rank holds the gathered numbers; say them once
            bar.write(
                f"epoch {state.epoch}: clean {validation['clean_accuracy']:.3f}, "
                f"{validation['attack']} {validation['robust_accuracy']:.3f}, "
                f"{single_step_label(validation['norm'])} {validation['fgsm_accuracy']:.3f} "
                f"on {validation['samples']} test images"
            )
        if run.recipe.logging.tensorboard:
            accelerator.log({f"val/{k}": v for k, v in validation.items()}, step=state.global_step)
        guard_overfitting(run)
    # After the validation, so this checkpoint's train state holds it: a resume from here
    # does not validate this epoch again.
    checkpoint(run)


def guard_overfitting(run: TrainingRun) -> None:
    """Judge the latest validation for catastrophic overfitting; warn once, or stop.

    The verdict goes into the validation record (``"overfitting"``), so the train state
    and ``metrics.json`` keep it. Stopping writes ``metrics.json`` with the verdict and no
    evaluation, before the collapsed weights are checkpointed.
    """
    mode = run.recipe.train.overfitting
    if mode == "off":
        return
    collapse = judge(run.history)
    run.history[-1]["overfitting"] = collapse is not None
    if collapse is None:
        return
    earlier = [entry["step"] for entry in run.history[:-1]]
    before = [c for c in list_checkpoints(run.run_dir) if earlier and checkpoint_step(c) <= max(earlier)]
    named = (
        f"the last checkpoint before it is {before[-1]}" if before else "no checkpoint was written before it"
    )
    fix = "single-step training needs a random start and a step of at most 1.25 eps, or use 2+ PGD steps"
    if mode == "stop":
        if run.accelerator.is_main_process:
            write_json(run.run_dir / METRICS_FILE, _stopped_metrics(run, collapse.to_dict()))
        run.accelerator.wait_for_everyone()
        raise OverfittingError(
            f"training stopped at step {run.state.global_step}: {collapse.describe()}; {named}; {fix} "
            '(or set train.overfitting = "warn" to train on)'
        )
    if sum(bool(entry.get("overfitting")) for entry in run.history) == 1:  # warn once
        _warn(run, f'{collapse.describe()}; {named}; {fix} (train.overfitting = "stop" stops here)')


def _overfitting_record(run: TrainingRun) -> dict[str, Any] | None:
    """``metrics.json``'s ``"overfitting"``: the first collapse in the history, or null."""
    if run.recipe.train.overfitting == "off":
        return None
    collapse = first_collapse(run.history)
    return None if collapse is None else collapse.to_dict()


def _stopped_metrics(run: TrainingRun, overfitting: dict[str, Any]) -> dict[str, Any]:
    """What a run the overfitting guard stopped reports: where it stopped, why, its validations."""
    return {
        "steps": run.state.global_step,
        "epochs": run.state.epoch,
        "stopped_at_step": run.state.global_step,
        "overfitting": overfitting,
        "validation": run.history,
    }


# -- finish ----------------------------------------------------------------------------------
def finish(run: TrainingRun, show_progress: bool) -> RunSummary:
    """Export the (EMA) model, run the recipe's evaluation, write metrics.json."""
    accelerator, recipe, state = run.accelerator, run.recipe, run.state
    final_model = run.ema.module if run.ema is not None else run.unwrapped
    fingerprints = accelerator.gather(_fingerprint(run.unwrapped).to(accelerator.device)).view(-1, 3)
    metrics: dict[str, Any] = {
        "steps": state.global_step,
        "epochs": state.epoch,
        # The lr after the last step: the schedule's end (about 0 for cosine) when the run
        # was sized right, which a multi-process run once was not.
        "final_lr": run.lr_scheduler.get_last_lr()[0],
        "final_train_loss": state.last_loss,
        "train_seconds_this_process": round(time.perf_counter() - run.started, 2),
        "world_size": accelerator.num_processes,
        "per_device_batch_size": recipe.data.batch_size,
        "global_batch_size": recipe.data.batch_size
        * accelerator.num_processes
        * recipe.optimizer.grad_accumulation,
        # Identical rows prove every rank ended with the same weights (DDP kept them in sync).
        "rank_weight_fingerprints": fingerprints.tolist(),
        # "cuda:0 (NVIDIA H100 80GB HBM3)": which card, so a study's report can say where it ran.
        "device": describe_device(accelerator.device),
        "validation": run.history,
        # The first catastrophic-overfitting collapse the guard saw, or null.
        "overfitting": _overfitting_record(run),
        # Which package (and version) provided each plugin, so a shared run can be redone.
        "plugins": run_plugins(recipe),
    }
    if accelerator.is_main_process:
        save_model(final_model, run.sat_config, run.run_dir / MODEL_FILE)
        evaluation = final_evaluation(recipe, final_model, run.test_set, accelerator, show_progress)
        metrics["evaluation"] = evaluation
        if recipe.logging.tensorboard:
            accelerator.log(evaluation_scalars(evaluation), step=state.global_step)
        write_json(run.run_dir / METRICS_FILE, metrics)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return RunSummary(run.run_dir, metrics)


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


def _steps_per_epoch(batches_per_epoch: int, recipe: Recipe) -> int:
    steps = recipe.optimizer.steps_per_epoch(batches_per_epoch)
    if steps < 1:
        raise SatError(
            f"data.batch_size x optimizer.grad_accumulation is larger than the training set "
            f"({batches_per_epoch} batches per epoch); lower one of them"
        )
    return steps


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (a run's metrics.json) atomically: a crash leaves the old file or the new."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
