"""TOML recipes: schema, validation messages, overrides, round trip, CLI and run-dir guard.

Attack, model and dataset plugins are faked (registered through a real ``PluginHost``
with in-memory entry points) so these tests do not depend on those plugins' internals;
the built-in activations and schedules are the real ones.
"""

from __future__ import annotations

import importlib.metadata as importlib_metadata
import json
import sys
import types
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from click.testing import CliRunner

from sat_toolkit.commands.recipe import recipe_command
from sat_toolkit.errors import SatError
from sat_toolkit.params import Param
from sat_toolkit.plugins import PluginHost, hookimpl, manager
from sat_toolkit.recipe import (
    PluginSpec,
    Recipe,
    RecipeError,
    check_run_dir,
    load_recipe,
    parse_number,
    recipe_from_toml,
    save_resolved_recipe,
)
from sat_toolkit.recipe.overrides import parse_value


# -- fake plugins ------------------------------------------------------------------------------
class FakeDigits:
    name = "digits"

    def __init__(
        self,
        path: Annotated[str | None, Param(local="file")] = None,  # a plugin whose data is one file
        limit_train: Annotated[int | None, Param(ge=1)] = None,
        seed: int = 0,
    ) -> None:
        pass

    # The dataset contract's methods; validation never calls them.
    def info(self) -> None:
        raise AssertionError("validation must not load data")

    def load(self, split: str) -> None:
        raise AssertionError("validation must not load data")


class _FakeAttack:
    """The attack contract's method; validation never attacks."""

    def perturb(self, model: Any, x: Any, y: Any, *, eps: Any = None) -> None:
        raise AssertionError("validation must not attack")


class FakePGD(_FakeAttack):
    name = "pgd"

    def __init__(
        self,
        eps: Annotated[float, Param(ge=0)] = 8 / 255,
        steps: Annotated[int, Param(ge=1)] = 10,
        step_size: Annotated[float, Param(ge=0)] = 2 / 255,
        random_start_fraction: Annotated[float, Param(ge=0, le=1)] = 1.0,
        bn_mode: Literal["eval", "train"] = "eval",
    ) -> None:
        raise AssertionError("validation must not build attacks")


class FakeAPGD(_FakeAttack):
    """Declares its ranges, as the real attacks do; validation never builds it."""

    name = "apgd_ce"

    def __init__(
        self,
        eps: Annotated[float, Param(ge=0)] = 8 / 255,
        steps: int = 100,
        restarts: Annotated[int, Param(ge=1, le=100)] = 1,
    ) -> None:
        raise AssertionError("validation must not build attacks")


class FakeSquare(_FakeAttack):
    """Takes **kwargs and checks them in ``check_params``, which sees every value."""

    name = "square"

    def __init__(self, **params: Any) -> None:
        raise AssertionError("validation must not build attacks")

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        if params.get("n_queries", 1) > 10_000:
            raise ValueError("n_queries above 10000 would take hours")


class FakeSmallCNN:
    name = "small_cnn"

    def __init__(self, width: int = 32, dropout: float = 0.0) -> None:
        pass

    def build(self, info: Any, activation: Any) -> None:
        raise AssertionError("validation must not build models")


@pytest.fixture
def fake_plugins(monkeypatch: pytest.MonkeyPatch) -> PluginHost:
    """The process-wide plugin host: the real activations, schedules and objectives, and the fakes above."""
    module = types.ModuleType("sat_test_fake_plugins")
    module.sat_register_attacks = hookimpl(lambda: [FakePGD, FakeAPGD, FakeSquare])
    module.sat_register_models = hookimpl(lambda: [FakeSmallCNN])
    module.sat_register_datasets = hookimpl(lambda: [FakeDigits])
    monkeypatch.setitem(sys.modules, module.__name__, module)
    builtin = [
        ep
        for ep in importlib_metadata.entry_points(group="sat_toolkit")
        if ep.name in ("builtin-activations", "builtin-schedules", "builtin-objectives")
    ]
    fake = importlib_metadata.EntryPoint(name="fake", value=module.__name__, group="sat_toolkit")
    host = PluginHost(entry_points=[*builtin, fake], blocked=set()).load()
    monkeypatch.setattr(manager, "_host", host)
    return host


def base_recipe() -> dict[str, Any]:
    return {
        "run": {"name": "demo", "seed": 1},
        "data": {"name": "digits", "batch_size": 32},
        "model": {"name": "small_cnn"},
        "activation": "silu",
        "attack": {"train": {"name": "pgd", "eps": "4/255", "steps": 1, "step_size": "4/255"}},
    }


def problems_of(raw: dict[str, Any], overrides: tuple[str, ...] = ()) -> list[str]:
    with pytest.raises(RecipeError) as info:
        load_recipe(raw, overrides)
    lines = str(info.value).splitlines()
    assert lines == [str(p) for p in info.value.problems]
    return lines


# -- numbers -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "value"),
    [("4/255", 4 / 255), (" 8 / 255 ", 8 / 255), ("0.5", 0.5), (3, 3.0), (0.25, 0.25), ("1e-3/2", 5e-4)],
)
def test_parse_number(text: object, value: float) -> None:
    assert parse_number(text) == pytest.approx(value)


@pytest.mark.parametrize(
    ("text", "message"), [("4/0", "division by zero"), ("four", "fraction"), (True, "boolean")]
)
def test_parse_number_refuses(text: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_number(text)


# -- resolution --------------------------------------------------------------------------------
def test_minimal_recipe_is_resolved_with_every_default(fake_plugins: PluginHost) -> None:
    recipe = load_recipe(base_recipe())
    assert isinstance(recipe, Recipe)
    assert recipe.run.output_dir == "runs/demo"
    assert recipe.attack.train == PluginSpec(
        "attack",
        "pgd",
        {"eps": 4 / 255, "steps": 1, "step_size": 4 / 255, "random_start_fraction": 1.0, "bn_mode": "eval"},
    )
    assert recipe.attack.eps == 4 / 255
    assert recipe.activation == PluginSpec("activation", "silu", {})
    # Constructor defaults are written out; None defaults are not (TOML has no null).
    assert recipe.model.params == {"width": 32, "dropout": 0.0}
    assert recipe.data.params == {"seed": 0}  # None defaults (path, limit_train) are left out
    assert recipe.schedule.lr.name == recipe.schedule.eps.name == "constant"
    assert recipe.optimizer.lr == 0.1 and recipe.optimizer.ema == "off"
    assert recipe.train.total_steps(steps_per_epoch=7) == 70
    assert recipe.to_dict()["attack"]["train"]["eps"] == 4 / 255


def test_int_is_fine_where_a_float_is_expected(fake_plugins: PluginHost) -> None:
    raw = base_recipe()
    raw["optimizer"] = {"lr": 1, "weight_decay": 0}
    raw["attack"]["train"]["eps"] = 0
    recipe = load_recipe(raw)
    assert isinstance(recipe.optimizer.lr, float) and recipe.optimizer.lr == 1.0
    assert isinstance(recipe.attack.train.params["eps"], float)


def test_plugin_sections_build_their_plugin(fake_plugins: PluginHost) -> None:
    raw = base_recipe()
    raw["activation"] = {"name": "smoothrelu", "alpha": 5}
    raw["schedule"] = {"lr": {"name": "cosine", "floor": 0.001}}
    recipe = load_recipe(raw)
    activation = recipe.activation.build()
    assert activation.hparams() == {"alpha": 5.0, "learnable": False}
    assert recipe.schedule.lr.build().value(0, 10, 0.1) == pytest.approx(0.1)
    assert isinstance(recipe.model.build(), FakeSmallCNN)


# -- validation: one kind of problem at a time ---------------------------------------------------
def test_unknown_keys_get_the_closest_valid_key(fake_plugins: PluginHost) -> None:
    raw = base_recipe()
    raw["optimizer"] = {"lrr": 0.1}
    raw["attack"]["train"]["setps"] = 3
    raw["traning"] = {}
    assert problems_of(raw) == [
        "traning: unknown section; did you mean 'train'?",
        "attack.train.setps: unknown parameter of attack 'pgd'; did you mean 'steps'?",
        "optimizer.lrr: unknown key; did you mean 'lr'?",
    ]


def test_a_plugin_tables_bad_value_is_reported_beside_its_unknown_key(fake_plugins: PluginHost) -> None:
    """One `recipe validate` lists both: the range error used to appear only once the typo was fixed."""
    raw = base_recipe()
    raw["attack"]["train"].update({"setps": 3, "eps": -0.1})
    assert problems_of(raw) == [
        "attack.train.setps: unknown parameter of attack 'pgd'; did you mean 'steps'?",
        "attack.train.eps: must be >= 0, got -0.1",
    ]


def test_unknown_key_without_close_match_lists_valid_keys(fake_plugins: PluginHost) -> None:
    raw = base_recipe()
    raw["logging"] = {"wandb": True}
    assert problems_of(raw) == ["logging.wandb: unknown key; valid: tensorboard"]


def test_wrong_types_are_reported_with_what_was_written(fake_plugins: PluginHost) -> None:
    raw = base_recipe()
    raw["data"]["batch_size"] = True  # bool is not an int
    raw["optimizer"] = {"lr": "fast", "nesterov": 1, "mixed_precision": "fp16", "betas": [0.9]}
    raw["train"] = {"epochs": 2.5}
    raw["attack"]["train"]["bn_mode"] = "frozen"
    assert problems_of(raw) == [
        "data.batch_size: expected an integer, got boolean true",
        "attack.train.bn_mode: must be one of 'eval', 'train', got string 'frozen'",
        "optimizer.lr: expected a number or a fraction like '4/255', got 'fast'",
        "optimizer.nesterov: expected true or false, got integer 1",
        "optimizer.mixed_precision: must be one of 'no', 'bf16', 'auto', got string 'fp16'",
        "optimizer.betas: expected an array of 2 values, got 1",
        "train.epochs: expected an integer, got float 2.5",
    ]


@pytest.mark.parametrize(
    ("value", "hint", "message"),
    [
        (0.5, tuple[float, ...] | None, "expected an array, got float 0.5; write it as [0.5]"),
        (3, list[int], "expected an array, got integer 3; write it as [3]"),
        ("0.5", tuple[float, ...] | None, "expected an array, got string '0.5'"),
        (True, list[int], "expected an array, got boolean true"),
    ],
)
def test_a_lone_number_where_an_array_is_asked_for_shows_the_array(
    value: object, hint: object, message: str
) -> None:
    """``data.mean = 0.5`` for ``[0.5]``: the error writes what was probably meant."""
    from sat_toolkit.recipe.coerce import Invalid, coerce

    with pytest.raises(Invalid) as caught:
        coerce(value, hint)
    assert str(caught.value) == message


def test_out_of_range_values(fake_plugins: PluginHost) -> None:
    raw = base_recipe()
    raw["attack"]["train"].update(eps=-0.1, steps=0, random_start_fraction=1.5)
    raw["data"]["batch_size"] = 0
    raw["optimizer"] = {"lr": 0, "ema": 1.0, "momentum": -0.5}
    raw["checkpoint"] = {"keep_last": 0}
    assert problems_of(raw) == [
        "data.batch_size: must be >= 1, got 0",
        "attack.train.eps: must be >= 0, got -0.1",
        "attack.train.steps: must be >= 1, got 0",
        "attack.train.random_start_fraction: must be <= 1, got 1.5",
        "optimizer.lr: must be > 0, got 0.0",
        "optimizer.ema: must be < 1, got 1.0",
        "optimizer.momentum: must be >= 0, got -0.5",
        "checkpoint.keep_last: must be >= 1, got 0",
    ]


def test_built_in_plugins_declared_ranges_and_constraints_are_checked(fake_plugins: PluginHost) -> None:
    raw = base_recipe()
    raw["activation"] = {"name": "smoothrelu", "alpha": -1}
    raw["schedule"] = {"lr": {"name": "multistep", "milestones": [0.6, 0.3]}}
    assert problems_of(raw) == [
        "activation.alpha: must be > 0, got -1.0",
        "schedule.lr.milestones: must be strictly increasing, got [0.6, 0.3]",
    ]


def test_a_declared_range_is_filed_under_its_key_without_building(fake_plugins: PluginHost) -> None:
    raw = base_recipe()
    raw["attack"]["eval"] = {"a": {"name": "apgd_ce", "restarts": 1000}}
    assert problems_of(raw) == ["attack.eval.a.restarts: must be <= 100, got 1000"]


def test_unknown_plugin_names_get_the_closest_name(fake_plugins: PluginHost) -> None:
    raw = base_recipe()
    raw["activation"] = "swish"
    raw["attack"]["train"]["name"] = "pgdd"
    raw["schedule"] = {"lr": {"name": "cosin"}}
    lines = problems_of(raw)
    assert lines[0].startswith("activation.name: unknown activation 'swish'.")
    assert lines[1].startswith("attack.train.name: unknown attack 'pgdd'. Did you mean 'pgd'?")
    assert lines[2].startswith("schedule.lr.name: unknown schedule 'cosin'. Did you mean 'cosine'?")


def test_missing_sections(fake_plugins: PluginHost) -> None:
    # An attack's eps left out takes the attack's default: the attack contract demands one.
    raw = base_recipe()
    del raw["model"]
    del raw["attack"]["train"]["eps"]
    raw["data"] = {"batch_size": 8}
    lines = problems_of(raw)
    assert lines[0].startswith("data.name: required: which dataset to use (installed: digits")
    assert lines[1:] == ["model: required section is missing"]


def test_missing_data_path(fake_plugins: PluginHost, tmp_path: Path) -> None:
    raw = base_recipe()
    raw["data"]["path"] = str(tmp_path / "nowhere.npz")
    assert problems_of(raw) == [
        f"data.path: no such file or directory: '{tmp_path / 'nowhere.npz'}' "
        "(point it at a file: --set data.path=FILE)"
    ]
    (tmp_path / "nowhere.npz").mkdir()
    assert problems_of(raw) == [
        f"data.path: '{tmp_path / 'nowhere.npz'}' is a folder (point it at a file: --set data.path=FILE)"
    ]
    (tmp_path / "nowhere.npz").rmdir()
    (tmp_path / "nowhere.npz").write_bytes(b"")
    assert load_recipe(raw).data.params["path"] == str(tmp_path / "nowhere.npz")


@pytest.mark.parametrize("name", ["fashion_mnist", "hub", "imagefolder"])
def test_a_builtin_datasets_path_must_be_a_folder(tmp_path: Path, name: str) -> None:
    """Declared once, on the plugin (``Param(local="folder")``): validate refuses a file there."""
    (tmp_path / "train.npz").write_bytes(b"")
    raw = {**base_recipe(), "data": {"name": name, "batch_size": 32, "path": str(tmp_path / "train.npz")}}
    lines = problems_of(raw)
    assert (
        f"data.path: '{tmp_path / 'train.npz'}' is a file (point it at a folder: --set data.path=DIR)"
        in lines
    )


def test_check_params_sees_every_typed_value_of_a_kwargs_plugin(fake_plugins: PluginHost) -> None:
    raw = base_recipe()
    raw["attack"]["eval"] = {"sq": {"name": "square", "n_queries": 5000, "p_init": "1/10"}}
    recipe = load_recipe(raw)
    assert recipe.attack.eval.attacks["sq"].params == {"n_queries": 5000, "p_init": 0.1}
    raw["attack"]["eval"]["sq"]["n_queries"] = 50_000
    assert problems_of(raw) == ["attack.eval.sq.n_queries: above 10000 would take hours"]


def test_schedule_must_fit_its_slot(fake_plugins: PluginHost) -> None:
    raw = base_recipe()
    raw["schedule"] = {"eps": {"name": "cosine"}}
    assert problems_of(raw) == [
        "schedule.eps.name: schedule 'cosine' does not apply to eps; "
        "for eps use one of: constant, linear_ramp"
    ]


def test_cross_key_rules(fake_plugins: PluginHost) -> None:
    raw = base_recipe()
    raw["optimizer"] = {"momentum": 0.0, "nesterov": True}
    assert problems_of(raw) == ["optimizer.nesterov: needs momentum > 0 (set nesterov = false or a momentum)"]


def test_every_problem_is_reported_at_once(fake_plugins: PluginHost) -> None:
    raw = base_recipe()
    raw["run"]["sede"] = 3
    raw["attack"]["train"]["eps"] = -0.1
    raw["model"]["widht"] = 64
    raw["optimizer"] = {"lr": -1}
    raw["activation"] = "gelu_tanh"
    with pytest.raises(RecipeError) as info:
        load_recipe(raw)
    assert [p.path for p in info.value.problems] == [
        "run.sede",
        "model.widht",
        "activation.name",
        "attack.train.eps",
        "optimizer.lr",
    ]
    assert isinstance(info.value, SatError) and info.value.exit_code == 2


# -- evaluation attacks --------------------------------------------------------------------------
def test_eval_attacks_as_tables_and_array_inherit_the_training_eps(fake_plugins: PluginHost) -> None:
    raw = base_recipe()
    raw["attack"]["eval"] = {
        "samples": 200,
        "pgd20": {"name": "pgd", "steps": 20},
        "attacks": ["apgd_ce", {"name": "pgd", "steps": 50, "eps": "8/255"}, {"name": "pgd"}],
    }
    attacks = load_recipe(raw).attack.eval.attacks
    assert list(attacks) == ["pgd20", "apgd_ce", "pgd", "pgd_2"]
    assert attacks["pgd20"].params["eps"] == 4 / 255 and attacks["pgd20"].params["steps"] == 20
    assert attacks["apgd_ce"].params["eps"] == 4 / 255  # inherited, not the plugin's 8/255 default
    assert attacks["pgd"].params["eps"] == 8 / 255  # explicit wins


def test_bad_eval_entries(fake_plugins: PluginHost) -> None:
    raw = base_recipe()
    raw["attack"]["eval"] = {"sampels": 10, "attacks": [3], "x": {"name": "apgd_ce", "restarts": 0}}
    assert problems_of(raw) == [
        "attack.eval.sampels: unknown key; did you mean 'samples'?",
        "attack.eval.attacks[0]: must be an attack name or a table with 'name', got integer 3",
        "attack.eval.x.restarts: must be >= 1, got 0",
    ]


# -- overrides -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3", 3),
        ("1e-3", 1e-3),
        ("true", True),
        ('"quoted"', "quoted"),
        ("gelu", "gelu"),
        ("8/255", "8/255"),
        ("[0.3, 0.6]", [0.3, 0.6]),
        ('{name = "smoothrelu", alpha = 20}', {"name": "smoothrelu", "alpha": 20}),
    ],
)
def test_override_values_parse_as_toml_else_bare_strings(text: str, value: Any) -> None:
    assert parse_value(text) == value


def test_overrides_nested_new_tables_and_fractions(fake_plugins: PluginHost) -> None:
    recipe = load_recipe(
        base_recipe(),
        [
            "attack.train.eps=8/255",
            "optimizer.lr=0.05",
            "activation={name = 'smoothrelu', alpha = 20}",
            "schedule.lr.name=cosine",
            "schedule.lr.warmup_steps=10",
            "attack.eval.pgd20={name = 'pgd', steps = 20}",
            "run.name=other",
        ],
    )
    assert recipe.attack.train.params["eps"] == 8 / 255
    assert recipe.optimizer.lr == 0.05
    assert recipe.activation.params["alpha"] == 20.0
    assert (recipe.schedule.lr.name, recipe.schedule.lr.params["warmup_steps"]) == ("cosine", 10)
    assert recipe.attack.eval.attacks["pgd20"].params["eps"] == 8 / 255
    assert recipe.run.output_dir == "runs/other"


def test_override_promotes_a_plain_activation_name_to_a_table(fake_plugins: PluginHost) -> None:
    raw = base_recipe()
    raw["activation"] = "smoothrelu"
    assert load_recipe(raw, ["activation.alpha=3"]).activation.params["alpha"] == 3.0
    assert load_recipe(raw, ["activation=gelu"]).activation.name == "gelu"


def test_bad_override_keys(fake_plugins: PluginHost) -> None:
    assert problems_of(base_recipe(), ("attack.trian.eps=0.1", "optimizer.lr=-1")) == [
        "attack.trian: unknown key; did you mean 'train'? (from --set)",
        "optimizer.lr: must be > 0, got -1.0 (from --set)",
    ]
    assert problems_of(base_recipe(), ("activation={name = 'smoothrelu', alpha = -2}",)) == [
        "activation.alpha: must be > 0, got -2.0 (from --set)"
    ]
    assert problems_of(base_recipe(), ("run.seed.x=1",)) == [
        "run.seed: is integer 1, not a table; cannot --set run.seed.x=1"
    ]
    assert problems_of(base_recipe(), ("optimizer.lr",)) == [
        "--set optimizer.lr: expected KEY.PATH=VALUE, e.g. --set optimizer.lr=0.05"
    ]


# -- TOML: round trip and syntax errors ---------------------------------------------------------
def test_toml_round_trip(fake_plugins: PluginHost, tmp_path: Path) -> None:
    raw = base_recipe()
    raw["run"]["output_dir"] = 'odd "dir"\\ünï\tcode'
    raw["activation"] = {"name": "gelu", "approximate": "tanh"}
    raw["optimizer"] = {"name": "adamw", "lr": 3e-4, "betas": [0.9, 0.95], "ema": 0.9999}
    raw["schedule"] = {
        "lr": {"name": "multistep", "milestones": [0.3, 0.6, 0.9], "warmup_fraction": 0.05},
        "eps": {"name": "linear_ramp", "ramp_steps": 100},
    }
    raw["attack"]["eval"] = {"attacks": ["apgd_ce", "pgd"], "sq": {"name": "square", "p_init": 0.8}}
    recipe = load_recipe(raw)
    text = recipe.to_toml()
    assert recipe_from_toml(text) == recipe
    path = tmp_path / "resolved.toml"
    path.write_text(text, encoding="utf-8")
    assert load_recipe(path) == recipe
    assert "[attack.train]" in text and "[attack]" not in text and "eps = 0.01568627450980392" in text


def test_syntax_error_names_file_line_and_column(fake_plugins: PluginHost, tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[run]\nname = "x"\n\n[optimizer]\nlr = = 0.1\n')
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    (line,) = str(info.value).splitlines()
    assert line.startswith(f"{path}:5:6: invalid TOML: ")


def test_missing_recipe_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="recipe file not found: .*nope.toml"):
        load_recipe(tmp_path / "nope.toml")


# -- CLI -----------------------------------------------------------------------------------------
def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    return path


GOOD_TOML = """
activation = "silu"
[run]
name = "cli"
[data]
name = "digits"
[model]
name = "small_cnn"
[attack.train]
name = "pgd"
eps = "8/255"
"""


def test_cli_show_prints_the_resolved_recipe(fake_plugins: PluginHost, tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD_TOML)
    result = CliRunner().invoke(recipe_command, ["show", str(path), "--set", "optimizer.lr=0.02"])
    assert result.exit_code == 0, result.output
    assert "eps = 0.03137254901960784" in result.output and "lr = 0.02" in result.output
    assert recipe_from_toml(result.output) == load_recipe(path, ["optimizer.lr=0.02"])


def test_cli_validate_ok_and_errors(fake_plugins: PluginHost, tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD_TOML)
    runner = CliRunner()
    ok = runner.invoke(recipe_command, ["validate", str(path)])
    assert (ok.exit_code, ok.output) == (0, "ok\n")
    bad = runner.invoke(
        recipe_command, ["validate", str(path), "--set", "attack.train.eps=-0.1", "--set", "optimizer.lrr=1"]
    )
    assert bad.exit_code == 2
    assert "Traceback" not in bad.output and isinstance(bad.exception, SystemExit)
    assert bad.output.splitlines() == [
        f"Error: recipe {path} has 2 problems:",
        "  attack.train.eps: must be >= 0, got -0.1 (from --set)",
        "  optimizer.lrr: unknown key; did you mean 'lr'? (from --set)",
    ]


def test_cli_single_problem_is_one_line(fake_plugins: PluginHost, tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD_TOML.replace('"8/255"', "-1"))
    result = CliRunner().invoke(recipe_command, ["show", str(path)])
    assert result.exit_code == 2
    assert result.output == f"Error: {path}: attack.train.eps: must be >= 0, got -1.0\n"
    missing = CliRunner().invoke(recipe_command, ["validate", str(tmp_path / "none.toml")])
    assert missing.exit_code == 2 and missing.output.startswith("Error: recipe file not found:")


# -- run directory guard -------------------------------------------------------------------------
def test_run_dir_guard(fake_plugins: PluginHost, tmp_path: Path) -> None:
    recipe = load_recipe(base_recipe())
    run_dir = tmp_path / "runs" / "demo"
    assert check_run_dir(run_dir, recipe, resume=False) is False  # nothing there yet
    run_dir.mkdir(parents=True)
    assert check_run_dir(run_dir, recipe, resume=True) is False  # empty: fresh start
    saved = save_resolved_recipe(recipe, run_dir)
    assert check_run_dir(run_dir, recipe, resume=False) is False  # a failed start: run it again
    (run_dir / "checkpoints" / "step-00000001").mkdir(parents=True)
    (run_dir / "checkpoints" / "step-00000001" / "model.safetensors").write_bytes(b"weights")
    before = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}

    with pytest.raises(SatError, match="already holds a run of this recipe; pass --resume"):
        check_run_dir(run_dir, recipe, resume=False)
    assert check_run_dir(run_dir, recipe, resume=True) is True

    # Run-irrelevant keys may change on resume.
    quieter = load_recipe(base_recipe(), ["logging.tensorboard=false", "checkpoint.keep_last=9"])
    assert check_run_dir(run_dir, quieter, resume=True) is True

    other = load_recipe(base_recipe(), ["optimizer.lr=0.2"])
    for resume in (False, True):
        with pytest.raises(
            SatError, match=r"holds a different run \(optimizer.lr: 0.1 -> 0.2\); pick another"
        ) as info:
            check_run_dir(run_dir, other, resume=resume)
        # The way back to the run that is there, without its --set: its own saved recipe.
        assert info.value.message.endswith(
            f"(sat-toolkit run {saved} --resume continues the run that is there)"
        )
    with pytest.raises(SatError, match="belongs to a different run"):
        save_resolved_recipe(other, run_dir)
    after = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert after == before  # nothing overwritten
    assert load_recipe(saved) == recipe


def test_failed_start_is_reused_only_by_the_same_recipe(fake_plugins: PluginHost, tmp_path: Path) -> None:
    """A run that stopped before its first checkpoint (bad data, an early NaN) is started again
    by a plain rerun; finished results, a checkpoint or a different recipe still refuse it."""
    recipe = load_recipe(base_recipe())
    run_dir = tmp_path / "demo"
    save_resolved_recipe(recipe, run_dir)
    (run_dir / "tensorboard").mkdir()
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / ".tmp-step-00000004").mkdir()  # died while writing: no checkpoint
    assert check_run_dir(run_dir, recipe, resume=False) is False
    other = load_recipe(base_recipe(), ["optimizer.lr=0.2"])
    with pytest.raises(SatError, match=r"holds a different run .* no checkpoint and no results; if it"):
        check_run_dir(run_dir, other, resume=False)
    for progress in ("metrics.json", "model.safetensors"):
        (run_dir / progress).write_text("{}")
        with pytest.raises(SatError, match="already holds a run of this recipe"):
            check_run_dir(run_dir, recipe, resume=False)
        (run_dir / progress).unlink()
    finished = {"evaluation": {"clean_accuracy": 0.9, "robust_accuracy": 0.5, "attacks": {}}}
    (run_dir / "metrics.json").write_text(json.dumps(finished))
    with pytest.raises(SatError) as info:  # --resume would only say "nothing to do"
        check_run_dir(run_dir, recipe, resume=False)
    assert info.value.message == (
        f"{run_dir} already holds a finished run of this recipe (its results: metrics.json, "
        f"model.safetensors; sat-toolkit eval {run_dir}); to train it again, pick another run.output_dir"
    )


def test_unwritable_output_dir_is_refused_before_anything(fake_plugins: PluginHost, tmp_path: Path) -> None:
    recipe = load_recipe(base_recipe())
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(SatError, match=r"cannot be created: .*a-file is a file, not a directory"):
        check_run_dir(blocker / "run", recipe, resume=False)
    with pytest.raises(SatError, match=r"a-file is a file, not a directory"):
        check_run_dir(blocker, recipe, resume=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # the write check left nothing


def test_run_dir_that_is_not_a_run_is_refused(fake_plugins: PluginHost, tmp_path: Path) -> None:
    recipe = load_recipe(base_recipe())
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SatError, match="not empty and holds no recipe.toml"):
        check_run_dir(tmp_path, recipe, resume=True)


# -- the shipped quickstart recipe ---------------------------------------------------------------
QUICKSTART = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml"


def test_quickstart_recipe_validates_with_the_real_plugins(fresh_plugin_host: None) -> None:
    from sat_toolkit.plugins import get_plugin_host

    host = get_plugin_host()
    needed = {"dataset": "digits", "model": "small_cnn", "attack": "pgd"}
    missing = [f"{kind} '{name}'" for kind, name in needed.items() if name not in host.names(kind)]
    if missing or "apgd_ce" not in host.names("attack"):
        pytest.skip(f"plugins not installed yet: {', '.join(missing) or 'apgd_ce'}")
    recipe = load_recipe(QUICKSTART)
    assert recipe.run.name == "quickstart"
    assert recipe_from_toml(recipe.to_toml()) == recipe


def test_the_training_attack_computes_in_the_training_precision_unless_it_says() -> None:
    from sat_toolkit.recipe import load_recipe

    base = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml"
    default = load_recipe(base)
    assert default.attack.train.params.get("precision", "fp32") == "fp32"
    bf16 = load_recipe(base, overrides=["optimizer.mixed_precision=bf16"])
    assert bf16.attack.train.params["precision"] == "bf16"
    assert bf16.attack.train.build().precision == "bf16"
    # Evaluation stays in full precision: the numbers to quote do not depend on the training's.
    assert all(spec.params.get("precision", "fp32") == "fp32" for spec in bf16.attack.eval.attacks.values())
    pinned = load_recipe(base, overrides=["optimizer.mixed_precision=bf16", "attack.train.precision=fp32"])
    assert pinned.attack.train.params["precision"] == "fp32"


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_where_the_hardware_has_it(monkeypatch, native: bool) -> None:
    """An AVX2-only CPU emulates bf16 (about 7x slower than fp32): "auto" must not pick it there."""
    import sat_toolkit.devices
    from sat_toolkit.recipe import load_recipe

    monkeypatch.setattr(sat_toolkit.devices, "native_bf16", lambda device=None: native)
    shipped = Path(__file__).resolve().parents[1] / "recipes" / "fashion_mnist_relu.toml"
    recipe = load_recipe(shipped)
    expected = "bf16" if native else "no"
    assert recipe.optimizer.mixed_precision == expected  # resolved, so recipe.toml records which
    assert recipe.attack.train.params.get("precision", "fp32") == ("bf16" if native else "fp32")
    assert f'mixed_precision = "{expected}"' in recipe.to_toml()


@pytest.mark.parametrize(
    ("mixed_precision", "native", "warned"),
    [("bf16", False, True), ("bf16", True, False), ("no", False, False)],
)
def test_a_run_asking_for_bf16_where_it_is_emulated_is_warned(
    tmp_path: Path, monkeypatch, capsys, mixed_precision: str, native: bool, warned: bool
) -> None:
    """A study pinned to bf16, started on an AVX2-only CPU, trained for 27 minutes before anyone
    saw that a cell would take 38 hours: the run now says why on its first line."""
    import torch

    import sat_toolkit.devices
    from sat_toolkit.engine.trainer import make_accelerator
    from sat_toolkit.recipe import load_recipe

    monkeypatch.setattr(sat_toolkit.devices, "native_bf16", lambda device=None: native)
    recipe = load_recipe(QUICKSTART, [f"optimizer.mixed_precision={mixed_precision}"])
    device = make_accelerator(recipe, tmp_path).device
    err = capsys.readouterr().err
    expected = sat_toolkit.devices.emulated_bf16_warning("bf16", device)
    assert (f"warning: {expected}\n" in err) is warned and err.count("warning:") == int(warned), err
    if warned and device == torch.device("cpu"):
        assert "neither AVX512-BF16 nor AMX" in err and '"auto" uses bf16 only where it is native' in err


def test_native_bf16_on_the_cpu_agrees_with_the_cpu_flags() -> None:
    import torch

    from sat_toolkit.devices import native_bf16

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo to read the CPU's flags from")
    flags = set(cpuinfo.read_text().split())
    assert native_bf16(torch.device("cpu")) == bool({"avx512_bf16", "amx_tile"} & flags)


def test_cli_show_states_the_step_size_and_validation_attack_a_run_resolves() -> None:
    """TOML has no None: PGD-20's table showed no step size, and the default validation
    attack (kept out of saved recipes) did not show at all. Both appear as comments, true
    to what a run uses, and the output still loads as the same recipe."""
    quickstart = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml"
    result = CliRunner().invoke(recipe_command, ["show", str(quickstart)])
    assert result.exit_code == 0, result.output
    text = result.output
    assert recipe_from_toml(text) == load_recipe(quickstart)
    pgd20 = text.split("[attack.eval.pgd20]\n", 1)[1].split("\n[", 1)[0]
    assert "# step size 0.0125 (unset: 2.5 / steps x eps = 2.5 / 20 x 0.1;" in pgd20  # Madry et al.'s rule
    assert "step size" not in text.split("[attack.train]\n", 1)[1].split("\n[", 1)[0]  # it sets rel_step_size
    assert '# [attack.validate]\n# name = "pgd"\n# steps = 10\n# rel_step_size = 0.25\n' in text
    uncommented = "\n".join(
        line[2:] if line.startswith("# ") and not line.startswith("# [attack.validate] is") else line
        for line in text.splitlines()
        if not line.startswith("# step size")
    )
    shown = recipe_from_toml(uncommented)
    assert shown.attack.validate is not None  # the block parsed as a table...
    default = load_recipe(quickstart).attack.validation  # what a run without the table validates with
    assert default.items() <= shown.attack.validation.items()  # the rest is the plugin's defaults

    chosen = CliRunner().invoke(
        recipe_command, ["show", str(quickstart), "--set", 'attack.validate={name = "apgd_ce", steps = 10}']
    )
    assert chosen.exit_code == 0 and "# [attack.validate]" not in chosen.output
    assert '[attack.validate]\nname = "apgd_ce"' in chosen.output
