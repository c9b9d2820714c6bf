"""Turn a raw recipe (nested dicts from TOML) into a validated, resolved :class:`Recipe`.

Every section is checked even after a problem is found, so one run of ``recipe
validate`` lists everything to fix. No plugin is built here: each is looked up and its
parameters checked against the schema it declares (see
:mod:`sat_toolkit.recipe.plugin_params`).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

from sat_toolkit.recipe.coerce import Invalid, coerce, toml_type
from sat_toolkit.recipe.errors import Problems, RecipeError, join
from sat_toolkit.recipe.plugin_params import check_bounds, check_plugin
from sat_toolkit.recipe.schema import (
    EVAL_SETTINGS,
    SECTIONS,
    AttackConfig,
    CheckpointConfig,
    DataConfig,
    EvalConfig,
    LoggingConfig,
    OptimizerConfig,
    PluginSpec,
    Recipe,
    RunConfig,
    ScheduleConfig,
    TrainConfig,
)

DEFAULT_ACTIVATION = "silu"  # the paper's best smooth activation
DEFAULT_OBJECTIVE = "pgd_at"  # the paper's objective: cross-entropy on the attack's examples


def resolve(raw: Mapping[str, Any], *, host: Any = None, source: str | None = None) -> Recipe:
    """Validate ``raw`` completely; raise one :class:`RecipeError` listing every problem."""
    if host is None:
        from sat_toolkit.plugins import get_plugin_host

        host = get_plugin_host()
    problems = Problems()
    if not isinstance(raw, Mapping):
        raise RecipeError([f"a recipe is a TOML table, got {toml_type(raw)}"], source)
    for key in raw:
        if key not in SECTIONS:
            problems.unknown("", key, SECTIONS, what="section")
    raw = _with_native_precision(raw)
    resolver = _Resolver(host, problems)
    parts = {
        "run": resolver.run(raw.get("run")),
        "data": resolver.data(raw.get("data")),
        "model": resolver.plugin_section("model", raw.get("model"), "model"),
        "activation": resolver.named(
            "activation", raw.get("activation", DEFAULT_ACTIVATION), "activation", DEFAULT_ACTIVATION
        ),
        "objective": resolver.named(
            "objective", raw.get("objective", DEFAULT_OBJECTIVE), "objective", DEFAULT_OBJECTIVE
        ),
        "attack": resolver.attack(raw.get("attack"), training_precision=_training_precision(raw)),
        "optimizer": resolver.plain(OptimizerConfig, raw.get("optimizer"), "optimizer"),
        "train": resolver.plain(TrainConfig, raw.get("train"), "train"),
        "checkpoint": resolver.plain(CheckpointConfig, raw.get("checkpoint"), "checkpoint"),
        "logging": resolver.plain(LoggingConfig, raw.get("logging"), "logging"),
    }
    parts["schedule"] = resolver.schedule(raw.get("schedule"), parts["attack"])
    _cross_checks(parts, problems)
    if problems:
        raise RecipeError(problems, source)
    return Recipe(**parts)


def _with_native_precision(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    """``optimizer.mixed_precision = "auto"`` for this machine: ``"bf16"`` where native, else ``"no"``."""
    optimizer = raw.get("optimizer")
    if not isinstance(optimizer, Mapping) or optimizer.get("mixed_precision") != "auto":
        return raw
    from sat_toolkit.devices import native_bf16

    return {**raw, "optimizer": {**optimizer, "mixed_precision": "bf16" if native_bf16() else "no"}}


def _training_precision(raw: Mapping[str, Any]) -> str | None:
    """The precision the training step asks for, read before [optimizer] is checked.

    The training attack inherits it; an invalid value is reported by [optimizer]'s own check,
    so this peek only has to recognise the one valid non-default value.
    """
    optimizer = raw.get("optimizer")
    mixed = optimizer.get("mixed_precision") if isinstance(optimizer, Mapping) else None
    return "bf16" if mixed == "bf16" else None


def _cross_checks(parts: dict[str, Any], problems: Problems) -> None:
    """Rules that involve more than one key."""
    optimizer = parts["optimizer"]
    if optimizer is not None and optimizer.name == "sgd" and optimizer.nesterov and optimizer.momentum == 0:
        problems.add("optimizer.nesterov", "needs momentum > 0 (set nesterov = false or a momentum)")
    attack, schedule, objective = parts["attack"], parts["schedule"], parts["objective"]
    if attack is not None and objective is not None:
        problem = _objective_attack_problem(objective, attack)
        if problem:
            problems.add("objective.name", problem)
    if attack is not None and schedule is not None and attack.eps is None and schedule.eps.name != "constant":
        problems.add(
            "schedule.eps",
            f"attack '{attack.train.name}' has no eps parameter for schedule '{schedule.eps.name}' to ramp",
        )


def _objective_attack_problem(objective: PluginSpec, attack: AttackConfig) -> str | None:
    """An objective that needs more of the training attack than it has (TRADES borrows PGD's steps)."""
    try:
        check = getattr(objective.plugin_class(), "attack_problem", None)
        return check(attack.train.plugin_class()) if callable(check) else None
    except Exception:  # a lookup problem is reported by the section's own check
        return None


def _input_shape(host: Any, spec: PluginSpec) -> tuple[int, ...] | None:
    """The dataset's ``(C, H, W)`` without building it: a class that fixes its shape says so
    (``input_shape``), else its ``channels`` and ``image_size`` parameters do; else unknown."""
    try:
        fixed = getattr(host.get("dataset", spec.name), "input_shape", None)
    except Exception:  # a lookup problem is reported by the dataset's own check
        return None
    if isinstance(fixed, tuple) and all(isinstance(n, int) for n in fixed):
        return fixed
    channels, size = spec.params.get("channels"), spec.params.get("image_size")
    if isinstance(channels, int) and isinstance(size, int) and not isinstance(size, bool):
        return (channels, size, size)
    return None


class _Resolver:
    """Section-by-section validation; each method returns its part or ``None`` on problems."""

    def __init__(self, host: Any, problems: Problems) -> None:
        self.host = host
        self.problems = problems
        self.input_shape: tuple[int, ...] | None = None  # the dataset's (C, H, W), once known

    # -- generic ---------------------------------------------------------------------------
    def table(self, value: Any, path: str, *, required: bool = False) -> Mapping[str, Any] | None:
        if value is None:
            if required:
                self.problems.add(path, "required section is missing")
                return None
            return {}
        if not isinstance(value, Mapping):
            self.problems.add(path, f"must be a table ([{path}]), got {toml_type(value)}")
            return None
        return value

    def fields(
        self, cls: type, raw: Mapping[str, Any], path: str, ignore: tuple[str, ...] = ()
    ) -> dict[str, Any] | None:
        """Check ``raw`` against the dataclass ``cls``: the converted values, or None on problems."""
        before = len(self.problems)
        hints = typing.get_type_hints(cls)
        own = {
            f.name: f for f in dataclasses.fields(cls) if f.name not in ("params", "attacks", "kind", *ignore)
        }
        values: dict[str, Any] = {}
        for key, value in raw.items():
            field = own.get(key)
            if field is None:
                self.problems.unknown(path, key, own)
                continue
            try:
                converted = coerce(value, hints[key])
            except Invalid as exc:
                self.problems.add(join(path, key), str(exc))
                continue
            bounds = {k: v for k, v in field.metadata.items() if k in ("ge", "gt", "le", "lt")}
            items = converted if isinstance(converted, tuple) else (converted,)
            message = next((m for m in (check_bounds(i, bounds) for i in items) if m), None)
            if message:
                self.problems.add(join(path, key), message)
                continue
            values[key] = converted
        for key, field in own.items():
            missing = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
            if missing and key not in raw:
                self.problems.add(join(path, key), "required")
        return values if len(self.problems) == before else None

    def plain(self, cls: type, value: Any, path: str) -> Any:
        raw = self.table(value, path)
        checked = None if raw is None else self.fields(cls, raw, path)
        return None if checked is None else cls(**checked)

    def plugin(
        self, kind: str, raw: Mapping[str, Any], path: str, *, reserved: tuple[str, ...] = (), **kw: Any
    ) -> PluginSpec | None:
        params = {k: v for k, v in raw.items() if k != "name"}
        result = check_plugin(
            kind, raw.get("name"), params, path, self.problems, host=self.host, reserved=reserved, **kw
        )
        return None if result is None else PluginSpec(kind, *result)

    def plugin_section(self, kind: str, value: Any, path: str, *, required: bool = True, **kw: Any) -> Any:
        raw = self.table(value, path, required=required)
        return None if raw is None else self.plugin(kind, raw, path, **kw)

    # -- sections --------------------------------------------------------------------------
    def run(self, value: Any) -> RunConfig | None:
        config = self.plain(RunConfig, value, "run")
        if config is None:
            return None
        if not config.name or any(c in config.name for c in "/\\") or config.name in (".", ".."):
            self.problems.add("run.name", f"must be a non-empty name without slashes, got {config.name!r}")
            return None
        if not config.output_dir:
            config = dataclasses.replace(config, output_dir=f"runs/{config.name}")
        return config

    def data(self, value: Any) -> DataConfig | None:
        raw = self.table(value, "data", required=True)
        if raw is None:
            return None
        reserved = tuple(f.name for f in dataclasses.fields(DataConfig) if f.name not in ("name", "params"))
        own_raw = {k: v for k, v in raw.items() if k in reserved}
        params = {k: v for k, v in raw.items() if k not in reserved}
        checked = self.fields(DataConfig, own_raw, "data", ignore=("name",))
        spec = self.plugin("dataset", params, "data", reserved=reserved)
        if checked is None or spec is None:
            return None
        self.input_shape = _input_shape(self.host, spec)
        return DataConfig(name=spec.name, params=spec.params, **checked)

    def named(self, kind: str, value: Any, path: str, default: str | None = None) -> PluginSpec | None:
        """A plugin section that may also be written as just its name (``activation = "silu"``)."""
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, Mapping):
            self.problems.add(path, f"must be a name or a table with 'name', got {toml_type(value)}")
            return None
        return self.plugin(kind, value, path, default=default)

    def attack(self, value: Any, *, training_precision: str | None) -> AttackConfig | None:
        """``[attack]``; the training attack computes in the training step's precision unless it says."""
        raw = self.table(value, "attack", required=True)
        if raw is None:
            return None
        for key in raw:
            if key not in ("train", "eval", "validate"):
                self.problems.unknown("attack", key, ("train", "eval", "validate"))
        train = self.plugin_section(
            "attack", raw.get("train"), "attack.train", input_shape=self.input_shape,
            inherit={"precision": training_precision} if training_precision else None,
        )  # fmt: skip
        inherit = {} if train is None else AttackConfig(train).threat_model
        evaluation = self.evaluation(raw.get("eval"), inherit)
        validate = None
        if "validate" in raw:  # absent: the default PGD-10, kept out of the saved recipe
            table = self.table(raw["validate"], "attack.validate")
            validate = None if table is None else self.inheriting_attack(table, "attack.validate", inherit)
            if validate is None:
                return None
        if train is None or evaluation is None:
            return None
        return AttackConfig(train=train, eval=evaluation, validate=validate)

    def evaluation(self, value: Any, inherit: Mapping[str, Any]) -> EvalConfig | None:
        """``[attack.eval]``; ``inherit`` is the training attack's threat model (eps, norm)."""
        raw = self.table(value, "attack.eval")
        if raw is None:
            return None
        settings = {k: v for k, v in raw.items() if k in EVAL_SETTINGS}
        checked = self.fields(EvalConfig, settings, "attack.eval")
        attacks: dict[str, PluginSpec] = {}
        ok = checked is not None
        for label, entry, path in self._eval_entries(raw):
            if label in attacks:
                self.problems.add(path, f"two evaluation attacks are labelled '{label}'")
                ok = False
                continue
            spec = self.inheriting_attack(entry, path, inherit)
            if spec is None:
                ok = False
            else:
                attacks[label] = spec
        if not ok or checked is None:
            return None
        return EvalConfig(**checked, attacks=attacks)

    def inheriting_attack(
        self, entry: Mapping[str, Any], path: str, inherit: Mapping[str, Any]
    ) -> PluginSpec | None:
        """An evaluation or validation attack; it takes the training attack's eps and norm
        where it leaves them out, but an attack of another norm must name its own eps."""
        own_norm = entry.get("norm")
        if isinstance(own_norm, str) and own_norm != inherit.get("norm", own_norm) and "eps" not in entry:
            self.problems.add(
                join(path, "eps"),
                f"required: this attack's norm '{own_norm}' differs from attack.train.norm "
                f"'{inherit['norm']}', so the training eps is no budget for it",
            )
            return None
        return self.plugin("attack", entry, path, inherit=inherit, input_shape=self.input_shape)

    def _eval_entries(self, raw: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any], str]]:
        """(label, attack table, key path) for named sub-tables and the ``attacks`` array."""
        entries = []
        for key, value in raw.items():
            if key in EVAL_SETTINGS:
                continue
            path = join("attack.eval", key)
            if key == "attacks":
                entries.extend(self._eval_array(value, raw))
            elif isinstance(value, Mapping):
                entries.append((key, value, path))
            else:
                self.problems.unknown("attack.eval", key, (*EVAL_SETTINGS, "attacks"))
        return entries

    def _eval_array(self, value: Any, raw: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any], str]]:
        if not isinstance(value, list):
            self.problems.add(
                "attack.eval.attacks", f"must be an array of attack tables, got {toml_type(value)}"
            )
            return []
        entries = []
        taken = {k for k, v in raw.items() if isinstance(v, Mapping)}
        for index, item in enumerate(value):
            path = f"attack.eval.attacks[{index}]"
            if isinstance(item, str):
                item = {"name": item}
            if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
                self.problems.add(
                    path, f"must be an attack name or a table with 'name', got {toml_type(item)}"
                )
                continue
            label, count = item["name"], 1
            while label in taken:
                count += 1
                label = f"{item['name']}_{count}"
            taken.add(label)
            entries.append((label, item, path))
        return entries

    def _schedule_fits(self, name: str, slot: str) -> bool:
        """Whether schedule ``name`` declares itself usable for ``slot`` (``lr``/``eps``)."""
        try:
            return slot in getattr(self.host.get("schedule", name), "targets", (slot,))
        except Exception:  # a conflicting or broken plugin is reported elsewhere
            return False

    def schedule(self, value: Any, attack: AttackConfig | None) -> ScheduleConfig | None:
        raw = self.table(value, "schedule")
        if raw is None:
            return None
        for key in raw:
            if key not in ("lr", "eps"):
                self.problems.unknown("schedule", key, ("lr", "eps"))
        parts: dict[str, PluginSpec | None] = {}
        for slot in ("lr", "eps"):
            path = f"schedule.{slot}"
            section = self.table(raw.get(slot, {"name": "constant"}), path)
            spec = None if section is None else self.plugin("schedule", section, path)
            if spec is not None and not self._schedule_fits(spec.name, slot):
                fits = [n for n in self.host.names("schedule") if self._schedule_fits(n, slot)]
                self.problems.add(
                    join(path, "name"),
                    f"schedule '{spec.name}' does not apply to {slot}; "
                    f"for {slot} use one of: {', '.join(fits)}",
                )
                spec = None
            parts[slot] = spec
        if parts["lr"] is None or parts["eps"] is None:
            return None
        return ScheduleConfig(lr=parts["lr"], eps=parts["eps"])
