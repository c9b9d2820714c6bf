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
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from torch import nn

from sat_toolkit.engine.checkpoint import TrainState, latest_checkpoint, save_checkpoint
from sat_toolkit.engine.loader import take_samples, training_loader
from sat_toolkit.engine.logging import flatten_hparams, progress_bar
from sat_toolkit.engine.memory import keep_freed_memory
from sat_toolkit.engine.optim import build_optimizer
from sat_toolkit.errors import SatError
from sat_toolkit.export import save_model
from sat_toolkit.recipe import Recipe, check_run_dir, save_resolved_recipe

METRICS_FILE = "metrics.json"
MODEL_FILE = "model.safetensors"


class NonFiniteLossError(SatError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


@dataclasses.dataclass
class RunSummary:
    """What a finished run produced (also written to ``metrics.json``)."""

    run_dir: Path
    metrics: dict[str, Any]


class _EMA:
    """Exponential moving average of the weights, checkpointed with the run.

    timm's ``ModelEmaV3`` does the averaging; this wrapper gives accelerate the
    ``state_dict``/``load_state_dict`` pair it needs to save the averaged weights.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        from timm.utils import ModelEmaV3

        self.ema = ModelEmaV3(model, decay=decay, stochastic_rounding=False)

    def update(self, model: nn.Module, step: int) -> None:
        self.ema.update(model, step=step)

    @property
    def module(self) -> nn.Module:
        return self.ema.module

    def state_dict(self) -> dict[str, Any]:
        return self.ema.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema.load_state_dict(state)


def _build_data(recipe: Recipe) -> tuple[Any, Any, Any]:
    from sat_toolkit.data import create_dataset

    source = create_dataset(recipe.data.plugin.to_dict())
    return source, source.load("train"), source.load("test")


def _subset(dataset: Any, samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, seeded subset of the test split (the same one for every attack)."""
    count = len(dataset) if samples <= 0 else min(samples, len(dataset))
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count]
    order, _ = order.sort()
    return take_samples(dataset, order)


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
    run_dir = Path(recipe.run.output_dir)
    resuming = check_run_dir(run_dir, recipe, resume=resume)
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
    set_seed(recipe.run.seed, deterministic=recipe.run.deterministic)
    if accelerator.device.type == "cpu":
        keep_freed_memory()

    from sat_toolkit.models import create_model

    source, train_set, test_set = _build_data(recipe)
    info = source.info()
    activation = recipe.activation.to_dict()
    model = create_model(recipe.model.to_dict(), info, activation)
    # What `sat-toolkit eval` needs besides the architecture: where the data came from and
    # the threat model the run was trained for.
    sat_config = {
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
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    unwrapped = accelerator.unwrap_model(model)

    accumulation = recipe.optimizer.grad_accumulation
    steps_per_epoch = _steps_per_epoch(len(train_loader), accumulation)
    total_steps = recipe.train.total_steps(steps_per_epoch)
    epochs = math.ceil(total_steps / steps_per_epoch)
    lr_schedule = recipe.schedule.lr.build()
    eps_schedule = recipe.schedule.eps.build()
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    base_eps = recipe.attack.eps
    train_attack = recipe.attack.train.build()

    state = TrainState()
    ema = _EMA(unwrapped, recipe.optimizer.ema) if recipe.optimizer.ema != "off" else None
    accelerator.register_for_checkpointing(state)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
    if resuming:
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is not None:
            accelerator.load_state(str(checkpoint))
            accelerator.print(f"resumed from {checkpoint} (step {state.global_step}/{total_steps})")
    if resuming and state.global_step >= total_steps and (run_dir / METRICS_FILE).is_file():
        accelerator.print(f"{run_dir} is already finished ({state.global_step} steps); nothing to do")
        return RunSummary(run_dir, json.loads((run_dir / METRICS_FILE).read_text(encoding="utf-8")))
    if accelerator.is_main_process:
        save_resolved_recipe(recipe, run_dir)
    if recipe.logging.tensorboard:
        accelerator.init_trackers("train", config=flatten_hparams(recipe.to_dict()))

    def set_lr(step: int) -> float:
        for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = lr_schedule.value(step, total_steps, base)
        return optimizer.param_groups[0]["lr"]

    def current_eps(step: int) -> float | None:
        return None if base_eps is None else eps_schedule.value(step, total_steps, base_eps)

    bar = progress_bar(
        total_steps, state.global_step, enabled=show_progress and accelerator.is_local_main_process
    )
    window = _Window()
    stopped_early = False
    started = time.perf_counter()
    steps_this_process = 0
    last_checkpoint: Path | None = latest_checkpoint(run_dir)
    history: list[dict[str, Any]] = []

    while state.epoch < epochs and state.global_step < total_steps:
        train_loader.set_epoch(state.epoch)
        batches = (
            accelerator.skip_first_batches(train_loader, state.step_in_epoch)
            if state.step_in_epoch
            else train_loader
        )
        model.train()
        for x, y in batches:
            # Randomness per micro-batch is a pure function of (seed, position, rank): a resumed
            # run draws the same random starts and dropout masks whatever consumed the global
            # RNG in between (a new data-loader iterator draws from it, for one).
            torch.manual_seed(_step_seed(recipe.run.seed, state.batches_seen, accelerator))
            lr = set_lr(state.global_step)
            eps = current_eps(state.global_step)
            result = train_attack.perturb(unwrapped, x, y, eps=eps)
            with accelerator.accumulate(model):
                logits = model(result.x_adv)
                loss = F.cross_entropy(logits, y, label_smoothing=recipe.optimizer.label_smoothing)
                total_loss = accelerator.reduce(loss.detach(), reduction="mean")
                if not torch.isfinite(total_loss):
                    bar.close()
                    kept = (
                        f"the last good checkpoint is {last_checkpoint}"
                        if last_checkpoint
                        else "no checkpoint"
                    )
                    raise NonFiniteLossError(
                        f"training stopped at step {state.global_step}: the loss is {float(total_loss)} "
                        f"({kept}); lower optimizer.lr, or check the data and the attack's eps"
                    )
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            state.batches_seen += 1
            state.step_in_epoch += 1
            window.add(loss.detach(), logits.detach(), y)
            if not accelerator.sync_gradients:
                continue
            state.global_step += 1
            steps_this_process += 1
            state.last_loss = float(total_loss)
            if ema is not None:
                ema.update(unwrapped, state.global_step)
            bar.update(1)
            if state.global_step % recipe.train.log_every_steps == 0 or state.global_step == total_steps:
                scalars = window.flush(accelerator, unwrapped, x, y)
                scalars.update({"lr": lr, "eps": eps if eps is not None else 0.0})
                bar.set_postfix(loss=f"{scalars['loss']:.3f}", adv_acc=f"{scalars['adv_accuracy']:.2f}")
                if recipe.logging.tensorboard:
                    accelerator.log({f"train/{k}": v for k, v in scalars.items()}, step=state.global_step)
            every = recipe.checkpoint.every_steps
            if every and state.global_step % every == 0:
                last_checkpoint = save_checkpoint(accelerator, run_dir, state, recipe.checkpoint.keep_last)
            if stop_after_steps is not None and steps_this_process >= stop_after_steps:
                stopped_early = True
                break
            if state.global_step >= total_steps:
                break
        if stopped_early:
            break
        state.epoch += 1
        state.step_in_epoch = 0
        last_checkpoint = save_checkpoint(accelerator, run_dir, state, recipe.checkpoint.keep_last)
        k = recipe.train.validate_every_epochs
        if k and state.epoch % k == 0 and state.epoch < epochs:
            validation = _validate(recipe, unwrapped, test_set, accelerator)
            history.append({"epoch": state.epoch, "step": state.global_step, **validation})
            bar.write(
                f"epoch {state.epoch}: clean {validation['clean_accuracy']:.3f}, "
                f"PGD-10 {validation['robust_accuracy']:.3f} on {validation['samples']} test images"
            )
            if recipe.logging.tensorboard:
                accelerator.log({f"val/{k}": v for k, v in validation.items()}, step=state.global_step)
    bar.close()
    if stopped_early:
        accelerator.end_training()
        return RunSummary(run_dir, {"stopped_at_step": state.global_step})

    final_model = ema.module if ema is not None else unwrapped
    fingerprints = accelerator.gather(_fingerprint(unwrapped).to(accelerator.device)).view(-1, 3)
    metrics: dict[str, Any] = {
        "steps": state.global_step,
        "epochs": state.epoch,
        "final_train_loss": state.last_loss,
        "train_seconds_this_process": round(time.perf_counter() - started, 2),
        "world_size": accelerator.num_processes,
        "per_device_batch_size": recipe.data.batch_size,
        "global_batch_size": recipe.data.batch_size * accelerator.num_processes * accumulation,
        # Identical rows prove every rank ended with the same weights (DDP kept them in sync).
        "rank_weight_fingerprints": fingerprints.tolist(),
        "device": str(accelerator.device),
        "validation": history,
    }
    if accelerator.is_main_process:
        save_model(final_model, sat_config, run_dir / MODEL_FILE)
        evaluation = _final_evaluation(recipe, final_model, test_set, accelerator, show_progress)
        metrics["evaluation"] = evaluation
        if recipe.logging.tensorboard:
            accelerator.log(_evaluation_scalars(evaluation), step=state.global_step)
        _write_json(run_dir / METRICS_FILE, metrics)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return RunSummary(run_dir, metrics)


class _Window:
    """Running training metrics between two log points (cheap: no extra forward passes)."""

    def __init__(self) -> None:
        self.loss_sum = 0.0
        self.attack_loss_sum = 0.0
        self.correct = 0
        self.count = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss_sum += float(loss) * len(y)
        # The attacker's objective (plain cross-entropy) at the adversarial examples, as the
        # training model scores them; differs from the loss only by label smoothing.
        self.attack_loss_sum += float(F.cross_entropy(logits.float(), y)) * len(y)
        self.correct += int((logits.argmax(1) == y).sum())
        self.count += len(y)

    def flush(
        self, accelerator: Accelerator, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> dict[str, float]:
        """Averages since the last flush (over all processes), plus clean accuracy on this batch."""
        totals = torch.tensor(
            [self.loss_sum, self.attack_loss_sum, self.correct, self.count],
            device=accelerator.device,
            dtype=torch.float64,
        )
        totals = accelerator.reduce(totals, reduction="sum")
        was_training = model.training
        model.eval()
        with torch.no_grad():
            clean = (model(x).argmax(1) == y).float().mean()
        model.train(was_training)
        clean = accelerator.reduce(clean, reduction="mean")
        self.loss_sum, self.attack_loss_sum, self.correct, self.count = 0.0, 0.0, 0, 0
        count = max(float(totals[3]), 1.0)
        return {
            "loss": float(totals[0]) / count,
            "attack_loss": float(totals[1]) / count,
            "adv_accuracy": float(totals[2]) / count,
            "clean_accuracy": float(clean),
        }


def _validate(recipe: Recipe, model: nn.Module, test_set: Any, accelerator: Accelerator) -> dict[str, float]:
    """Cheap robust validation: clean accuracy and PGD-10 on a fixed test subset.

    Each process attacks its share of the subset; ``gather_for_metrics`` collects the
    per-sample outcomes without counting the padding of uneven shares twice.
    """
    from sat_toolkit.attacks import create_attack
    from sat_toolkit.evaluation import evaluate_robustness

    x_all, y_all = _subset(test_set, recipe.train.validate_samples, recipe.attack.eval.seed)
    with accelerator.split_between_processes((x_all, y_all)) as (x, y):
        x, y = x.to(accelerator.device), y.to(accelerator.device)
        attacks = {}
        if recipe.attack.eps is not None:
            pgd = {"name": "pgd", "eps": recipe.attack.eps, "steps": 10, "rel_step_size": 0.25}
            attacks["pgd10"] = create_attack(pgd)
        report = evaluate_robustness(model, x, y, attacks, batch_size=recipe.data.eval_batch_size)
        outcome = torch.stack([report.clean_correct, report.worst_case], dim=1).float()
    outcome = accelerator.gather_for_metrics(outcome)
    return {
        "samples": int(outcome.shape[0]),
        "clean_accuracy": float(outcome[:, 0].mean()),
        "robust_accuracy": float(outcome[:, 1].mean()) if attacks else math.nan,
    }


def _final_evaluation(
    recipe: Recipe, model: nn.Module, test_set: Any, accelerator: Accelerator, show_progress: bool
) -> dict[str, Any]:
    """The evaluation the recipe configures, on a fixed seeded test subset."""
    from sat_toolkit.evaluation import evaluate_robustness

    x, y = _subset(test_set, recipe.attack.eval.samples, recipe.attack.eval.seed)
    x, y = x.to(accelerator.device), y.to(accelerator.device)
    torch.manual_seed(recipe.attack.eval.seed)
    attacks = {label: spec.build() for label, spec in recipe.attack.eval.attacks.items()}
    bar = progress_bar(
        len(attacks), 0, enabled=show_progress and bool(attacks), unit="attack", desc="evaluating"
    )
    report = evaluate_robustness(
        model, x, y, attacks, batch_size=recipe.data.eval_batch_size, progress=lambda *_: None
    )
    bar.update(len(attacks))
    bar.close()
    result = report.to_dict()
    lines = [f"clean accuracy {report.clean_accuracy:.4f} on {len(y)} test images"]
    for label, outcome in report.attacks.items():
        lines.append(f"  {label:<12} robust accuracy {outcome.robust_accuracy:.4f}")
    if report.attacks:
        lines.append(f"  {'worst case':<12} robust accuracy {report.robust_accuracy:.4f}")
    accelerator.print("\n".join(lines))
    return result


def _evaluation_scalars(evaluation: dict[str, Any]) -> dict[str, float]:
    scalars = {"eval/clean_accuracy": evaluation["clean_accuracy"]}
    if evaluation.get("robust_accuracy") is not None:
        scalars["eval/robust_accuracy"] = evaluation["robust_accuracy"]
    for label, outcome in evaluation["attacks"].items():
        scalars[f"eval/{label}"] = outcome["robust_accuracy"]
    return scalars


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
