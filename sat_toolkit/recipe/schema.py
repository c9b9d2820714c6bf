"""The recipe schema: one frozen dataclass per TOML section.

The dataclasses *are* the documentation of a recipe: each field's type, default and
``doc`` metadata say what the key means. Bounds live in the metadata too (``ge``, ``gt``,
``le``, ``lt``) so that validation, ``recipe show`` and the docs cannot drift apart.
Sections that name a plugin (``[data]``, ``[model]``, ``activation``, ``[attack.*]``,
``[schedule.*]``) are flat: ``name`` picks the plugin and every other key is one of its
constructor's keyword parameters (``[data]`` also has a few keys of its own, which win).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from sat_toolkit.params import MAX_SEED


def setting(default: Any = dataclasses.MISSING, doc: str = "", **bounds: float) -> Any:
    """A dataclass field with its help text and numeric bounds in the metadata."""
    metadata = {"doc": doc, **bounds}
    if callable(default) and not isinstance(default, (str, int, float, bool)):
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class PluginSpec:
    """A plugin of ``kind`` picked by ``name``, with its constructor's keyword ``params``."""

    kind: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.params}

    def plugin_class(self) -> Any:
        """The registered class (import deferred: validation already found it)."""
        from sat_toolkit.plugins import get_plugin_host

        return get_plugin_host().get(self.kind, self.name)

    def build(self, **extra: Any) -> Any:
        """Instantiate the plugin; ``extra`` overrides or adds constructor parameters (tests, the API).

        The parameters were checked against the plugin's schema when the recipe was read. A
        plugin that still refuses them in its constructor (one that checks there instead of
        declaring ``Param`` bounds) gets one line naming the section, not a traceback.
        """
        from sat_toolkit.plugins.instantiate import construct

        return construct(self.kind, self.plugin_class(), {**self.params, **extra})


@dataclass(frozen=True)
class RunConfig:
    """``[run]``: what the run is called, where it writes, how it is seeded."""

    name: str = setting("sat", "run name; also names the default output directory")
    seed: int = setting(
        0, "seed for model init, data order and the training attack's randomness (< 2**32, numpy's limit)",
        ge=0, le=MAX_SEED,
    )  # fmt: skip
    output_dir: str = setting("", "where checkpoints, logs and the resolved recipe go; default runs/<name>")
    deterministic: bool = setting(False, "ask PyTorch for deterministic kernels (slower)")


@dataclass(frozen=True)
class DataConfig:
    """``[data]``: the dataset plugin (``name`` plus its parameters) and the loaders."""

    name: str = setting(doc="dataset plugin, e.g. 'digits'")
    # Upper bounds catch typos (an extra digit or three), far above what any device holds.
    batch_size: int = setting(128, "training batch size (per optimiser micro-step)", ge=1, le=2**20)
    eval_batch_size: int = setting(256, "batch size for validation and evaluation attacks", ge=1, le=2**20)
    num_workers: int = setting(0, "data-loader worker processes (at most 1024)", ge=0, le=1024)
    params: dict[str, Any] = field(default_factory=dict, metadata={"doc": "the dataset plugin's parameters"})

    @property
    def plugin(self) -> PluginSpec:
        return PluginSpec("dataset", self.name, self.params)

    def to_dict(self) -> dict[str, Any]:
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "params"}
        return {**own, **self.params}


@dataclass(frozen=True)
class EvalConfig:
    """``[attack.eval]``: the evaluation attacks and how much of the test set they see.

    Attacks are named sub-tables (``[attack.eval.pgd20]`` with ``name = "pgd"``) or an
    array ``attacks = [{name = "pgd", steps = 20}, ...]`` (named after the plugin, with
    ``_2``, ``_3`` for repeats). An attack that takes ``eps`` or ``norm`` and does not
    set it gets ``attack.train.eps`` / ``attack.train.norm`` (one threat model end to
    end). The resolved recipe always uses named sub-tables.
    """

    samples: int = setting(1000, "test samples to attack (0 = the whole test set)", ge=0)
    seed: int = setting(
        0, "seed for the sample choice and the attacks' randomness (< 2**32)", ge=0, le=MAX_SEED
    )
    cascade: bool = setting(
        True,
        "each attack attacks only the images every earlier one failed on (AutoAttack's way: same worst "
        "case, less time; an attack's number is the one after it); false: every attack on every image",
    )
    attacks: dict[str, PluginSpec] = field(default_factory=dict, metadata={"doc": "label -> attack"})

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "seed": self.seed,
            "cascade": self.cascade,
            **{label: attack.to_dict() for label, attack in self.attacks.items()},
        }


#: ``[attack.eval]``'s own settings; every other key there is an evaluation attack.
EVAL_SETTINGS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(EvalConfig) if f.name != "attacks")


def attack_label(spec: Mapping[str, Any]) -> str:
    """How logs and reports name an attack table: ``PGD-10``, ``APGD-CE-10``, ``FGSM``."""
    name = str(spec.get("name", "?")).upper().replace("_", "-")
    steps = spec.get("steps")
    return f"{name}-{steps}" if isinstance(steps, int) and not isinstance(steps, bool) else name


#: The multi-step attack of the per-epoch validation when a recipe has no ``[attack.validate]``:
#: PGD-10 at step eps / 4, without a random start, in the training attack's threat model.
DEFAULT_VALIDATION_ATTACK: dict[str, Any] = {"name": "pgd", "steps": 10, "rel_step_size": 0.25}
#: Its name in validation records; records written before they named their attack used it.
DEFAULT_VALIDATION_LABEL = attack_label(DEFAULT_VALIDATION_ATTACK)


@dataclass(frozen=True)
class AttackConfig:
    """``[attack.train]`` (the attacker inside training), ``[attack.eval]`` and ``[attack.validate]``.

    ``validate`` is the multi-step attack the per-epoch validation runs beside FGSM (the
    pair the catastrophic-overfitting guard compares). ``None`` means
    :data:`DEFAULT_VALIDATION_ATTACK`, and stays out of the saved ``recipe.toml``: runs
    saved before the key existed validated with exactly that attack, so they still read
    back as the same run on ``--resume`` and ``study --reuse``.
    """

    train: PluginSpec
    eval: EvalConfig = field(default_factory=EvalConfig)
    validate: PluginSpec | None = None

    @property
    def eps(self) -> float | None:
        """The training epsilon (the base of the epsilon schedule), if the attack has one."""
        eps = self.train.params.get("eps")
        return float(eps) if isinstance(eps, (int, float)) and not isinstance(eps, bool) else None

    @property
    def norm(self) -> str | None:
        """The training attack's threat model (``"linf"``, ``"l2"``, ...), if it has one."""
        norm = self.train.params.get("norm")
        return norm if isinstance(norm, str) else None

    @property
    def threat_model(self) -> dict[str, Any]:
        """What evaluation attacks inherit from the training attack: its eps and its norm.

        A model is scored under the threat model it was trained for unless the recipe
        says otherwise, so an L2 run is never validated or evaluated under L-inf.
        """
        inherited: dict[str, Any] = {}
        if self.eps is not None:
            inherited["eps"] = self.eps
        if self.norm is not None:
            inherited["norm"] = self.norm
        return inherited

    @property
    def validation(self) -> dict[str, Any]:
        """The validation attack's table: ``[attack.validate]``, or the default in this threat model."""
        if self.validate is not None:
            return self.validate.to_dict()
        return {**DEFAULT_VALIDATION_ATTACK, **self.threat_model}

    def to_dict(self) -> dict[str, Any]:
        own = {} if self.validate is None else {"validate": self.validate.to_dict()}
        return {"train": self.train.to_dict(), "eval": self.eval.to_dict(), **own}


@dataclass(frozen=True)
class OptimizerConfig:
    """``[optimizer]``: SGD (the paper's ResNet recipe) or AdamW, and training-loss extras."""

    name: Literal["sgd", "adamw"] = setting("sgd", "'sgd' (uses momentum, nesterov) or 'adamw' (uses betas)")
    lr: float = setting(0.1, "base learning rate (the lr schedule's base)", gt=0.0)
    momentum: float = setting(0.9, "SGD momentum", ge=0.0, lt=1.0)
    nesterov: bool = setting(True, "SGD Nesterov momentum (needs momentum > 0)")
    betas: tuple[float, float] = setting((0.9, 0.999), "AdamW betas", ge=0.0, lt=1.0)
    weight_decay: float = setting(
        5e-4, "L2 weight decay (at most 1; values in use are 1e-5 to 0.1)", ge=0.0, le=1.0
    )
    exclude_norm_and_bias_from_weight_decay: bool = setting(
        True, "no weight decay on norm layers and biases (the paper decays conv/fc weights only)"
    )
    label_smoothing: float = setting(0.0, "cross-entropy label smoothing", ge=0.0, lt=1.0)
    grad_accumulation: int = setting(1, "micro-batches per optimiser step (at most 65536)", ge=1, le=65536)
    ema: float | Literal["off"] = setting(
        "off", "EMA decay of the weights, e.g. 0.999, or 'off'", gt=0.0, lt=1.0
    )
    mixed_precision: Literal["no", "bf16", "auto"] = setting(
        "no",
        "'no' or 'bf16' autocast, or 'auto': bf16 where the hardware computes it natively (a CUDA GPU "
        "with bf16, a CPU with AVX512-BF16 or AMX), else 'no'; resolved when the recipe is, so "
        "recipe.toml records which; the training attack follows it unless attack.train.precision "
        "says otherwise (evaluation attacks stay fp32)",
    )

    def steps_per_epoch(self, batches_per_epoch: int) -> int:
        """Optimiser steps in an epoch of ``batches_per_epoch`` micro-batches: one per
        ``grad_accumulation`` of them. The trainer sizes its run by it, and a study reads a
        checkpoint's run length by it, so the two cannot disagree."""
        return batches_per_epoch // self.grad_accumulation


@dataclass(frozen=True)
class ScheduleConfig:
    """``[schedule.lr]`` (base ``optimizer.lr``) and ``[schedule.eps]`` (base ``attack.train.eps``)."""

    lr: PluginSpec = field(default_factory=lambda: PluginSpec("schedule", "constant"))
    eps: PluginSpec = field(default_factory=lambda: PluginSpec("schedule", "constant"))

    def to_dict(self) -> dict[str, Any]:
        return {"lr": self.lr.to_dict(), "eps": self.eps.to_dict()}


@dataclass(frozen=True)
class TrainConfig:
    """``[train]``: how long, and how often to look at progress."""

    epochs: int = setting(
        10,
        "passes over the training set, at most 100000: schedules in use are hundreds of epochs, so more "
        "is a typo (10**12 would run for ever rather than fail)",
        ge=1, le=100_000,
    )  # fmt: skip
    steps: int = setting(
        0,
        "if > 0: exactly this many optimiser steps, instead of epochs; at most 10**8 (ten steps a second "
        "for four months)",
        ge=0, le=10**8,
    )  # fmt: skip
    validate_every_epochs: int = setting(
        1,
        "cheap robust validation every N epochs (0 = never; the last epoch has the final evaluation)",
        ge=0,
    )
    validate_samples: int = setting(
        512,
        "test samples the cheap validation attacks (the first of the final evaluation's seeded subset)",
        ge=1,
    )
    log_every_steps: int = setting(50, "log training metrics every N optimiser steps", ge=1)
    sync_batchnorm: bool = setting(
        False, "with several processes, compute BatchNorm statistics over the global batch (SyncBatchNorm)"
    )
    channels_last: bool = setting(
        False,
        "keep the model's weights and each batch in channels_last memory format (faster convolutions "
        "on CPUs with bf16 and on GPUs; the weights and the results are the same)",
    )
    compile: bool = setting(
        False,
        "torch.compile the model for the training step and the training attack: faster steps after "
        "a first one that compiles (tens of seconds); checkpoints and evaluation use the same weights "
        "uncompiled",
    )
    divergence: Literal["warn", "stop", "off"] = setting(
        "warn",
        "when a logged window's training loss, after the lr warm-up, exceeds divergence_factor x its early "
        "level (the first three windows after warm-up; see engine/window.py): 'warn' once, 'stop' with an "
        "error naming the last checkpoint from before the rise, or 'off'",
    )
    divergence_factor: float = setting(
        10.0, "how many times its early level the training loss may reach before it counts as diverged",
        gt=1.0, le=1e6,
    )  # fmt: skip
    overfitting: Literal["warn", "stop", "off"] = setting(
        "warn",
        "catastrophic overfitting of single-step (FGSM / PGD-1) training, judged at each validation: the "
        "validation attack's accuracy ([attack.validate], PGD-10 by default) falls to 0.3 x its best so far "
        "(and by 0.05 or more) or by 0.15 or more, while FGSM accuracy stays at 0.8 x its best or above "
        "(Wong et al. 2020; see engine/overfitting.py): 'warn' once, 'stop' with an error naming the last "
        "checkpoint from before it, or 'off'; recorded in metrics.json either way",
    )

    def total_steps(self, steps_per_epoch: int) -> int:
        """Optimiser steps in the run: ``steps`` if set, else ``epochs * steps_per_epoch``."""
        return self.steps if self.steps > 0 else self.epochs * steps_per_epoch


@dataclass(frozen=True)
class CheckpointConfig:
    """``[checkpoint]``: when to save, and how many to keep."""

    every_steps: int = setting(1000, "save every N optimiser steps (0 = at the end of each epoch only)", ge=0)
    keep_last: int = setting(
        3,
        "checkpoints to keep (older ones are deleted, except the last one the divergence guard vouched for)",
        ge=1,
    )


@dataclass(frozen=True)
class LoggingConfig:
    """``[logging]``: where metrics go besides the console."""

    tensorboard: bool = setting(True, "write TensorBoard event files to <output_dir>/tensorboard")


@dataclass(frozen=True)
class Recipe:
    """A whole run, validated and resolved: every default filled in, fractions as floats.

    ``activation`` is written ``activation = "silu"`` or ``[activation]`` with ``name``
    and parameters; it defaults to ``"silu"``, the paper's best. ``objective`` is written
    the same way and defaults to ``"pgd_at"`` (SAT's cross-entropy on the attack's
    examples). ``[attack.train]``, ``[data]`` and ``[model]`` are required; every other
    section has defaults.
    """

    run: RunConfig
    data: DataConfig
    model: PluginSpec
    activation: PluginSpec
    attack: AttackConfig
    objective: PluginSpec = field(default_factory=lambda: PluginSpec("objective", "pgd_at"))
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts in TOML layout (what ``to_toml`` writes)."""
        return {
            "run": _plain(self.run),
            "data": self.data.to_dict(),
            "model": self.model.to_dict(),
            "activation": self.activation.to_dict(),
            "attack": self.attack.to_dict(),
            "objective": self.objective.to_dict(),
            "optimizer": _plain(self.optimizer),
            "schedule": self.schedule.to_dict(),
            "train": _plain(self.train),
            "checkpoint": _plain(self.checkpoint),
            "logging": _plain(self.logging),
        }

    def to_toml(self, header: str = "") -> str:
        """The resolved recipe as TOML; loading it back gives an equal :class:`Recipe`."""
        from sat_toolkit.recipe.toml_io import dumps

        return dumps(self.to_dict(), header=header)

    @property
    def output_dir(self) -> str:
        return self.run.output_dir


def _plain(section: Any) -> dict[str, Any]:
    return {f.name: _listify(getattr(section, f.name)) for f in dataclasses.fields(section)}


def _listify(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


SECTIONS: dict[str, type] = {
    "run": RunConfig,
    "data": DataConfig,
    "model": PluginSpec,
    "activation": PluginSpec,
    "attack": AttackConfig,
    "objective": PluginSpec,
    "optimizer": OptimizerConfig,
    "schedule": ScheduleConfig,
    "train": TrainConfig,
    "checkpoint": CheckpointConfig,
    "logging": LoggingConfig,
}
