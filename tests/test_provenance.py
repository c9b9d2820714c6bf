"""Plugin provenance: runs, model files and eval reports say which package provided each plugin.

A fake third-party distribution provides the activation a tiny digits run nests inside the
built-in ``relu_smooth_grad``; after it is "uninstalled", loading the model names the
package and version to install.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

import sat_toolkit
from sat_toolkit.cli import cli
from sat_toolkit.data import DatasetInfo, create_dataset
from sat_toolkit.errors import SatError, UnknownPluginError
from sat_toolkit.export import read_sat_config, save_model
from sat_toolkit.models import create_model
from sat_toolkit.models.config import rebuild_model
from sat_toolkit.plugins import PluginWarning, reset_plugin_host
from sat_toolkit.plugins.provenance import missing_plugin_message, run_plugins
from sat_toolkit.recipe import load_recipe

FAKE = "sat-extra-activations"
FAKE_VERSION = "0.1.0"
FAKE_MODULE = "sat_extra_activations_plugin"  # what the fake_distribution fixture names it
BUILTIN = "smooth-adversarial-training"
BUILTIN_VERSION = importlib.metadata.version(BUILTIN)

MISH_PLUGIN = """
import torch
from torch import nn
from sat_toolkit.plugins import hookimpl

class Mish(nn.Module):
    name = "mish"
    description = "x * tanh(softplus(x))"
    smooth = True
    def forward(self, x):
        return x * torch.tanh(nn.functional.softplus(x))

@hookimpl
def sat_register_activations():
    return [Mish]
"""

MISSING = (
    f"the model needs activation 'mish' from the package {FAKE} {FAKE_VERSION}, which is not installed: "
    f"pip install '{FAKE}>={FAKE_VERSION}'"
)


def entry(kind: str, name: str, distribution: str | None = BUILTIN, version: str | None = None) -> dict:
    if version is None and distribution == BUILTIN:
        version = BUILTIN_VERSION
    return {"kind": kind, "name": name, "distribution": distribution, "version": version}


MODEL_PLUGINS = [
    entry("activation", "mish", FAKE, FAKE_VERSION),
    entry("activation", "relu_smooth_grad"),
    entry("dataset", "digits"),  # what eval reads unless told --data
    entry("model", "small_cnn"),
]


def tiny_recipe(output_dir: Path) -> dict[str, Any]:
    """One epoch of 10 steps on 320 digits with the fake activation nested in a built-in."""
    return {
        "run": {"name": "provenance", "seed": 0, "output_dir": str(output_dir)},
        "data": {"name": "digits", "batch_size": 32, "eval_batch_size": 128, "limit_train": 320},
        "model": {"name": "small_cnn", "width": 8, "depth": 2, "convs_per_stage": 1},
        "activation": {"name": "relu_smooth_grad", "smooth": "mish", "smooth_params": {}},
        "attack": {
            "train": {"name": "pgd", "eps": 0.1, "steps": 1, "rel_step_size": 1.0},
            "eval": {"samples": 32, "seed": 0, "fgsm": {"name": "fgsm"}},
        },
        "optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 0.0},
        "schedule": {"lr": {"name": "cosine"}},
        "train": {"epochs": 1, "validate_every_epochs": 0},
        "checkpoint": {"every_steps": 0},
        "logging": {"tensorboard": False},
    }


def uninstall(dist_info: Path, module: str = FAKE_MODULE) -> None:
    """What ``pip uninstall`` leaves: no metadata, no module, a host that forgot the plugin."""
    for path in dist_info.iterdir():
        path.unlink()
    dist_info.rmdir()
    (dist_info.parent / f"{module}.py").unlink()
    sys.modules.pop(module, None)
    importlib.invalidate_caches()
    reset_plugin_host()


@pytest.fixture
def trained_run(fake_distribution: Any, tmp_path: Path) -> tuple[Path, Path]:
    """A finished run using the fake activation, and the fake's dist-info (to uninstall it)."""
    dist_info = fake_distribution(FAKE, MISH_PLUGIN, version=FAKE_VERSION)
    run_dir = tmp_path / "run"
    sat_toolkit.run(tiny_recipe(run_dir), show_progress=False)
    return run_dir, dist_info


def test_run_model_file_and_eval_report_name_each_plugins_package(trained_run: tuple[Path, Path]) -> None:
    run_dir, _ = trained_run
    recipe = load_recipe(tiny_recipe(run_dir))
    assert run_plugins(recipe) == [
        entry("activation", "mish", FAKE, FAKE_VERSION),
        entry("activation", "relu_smooth_grad"),
        entry("attack", "fgsm"),
        entry("attack", "pgd"),
        entry("dataset", "digits"),
        entry("model", "small_cnn"),
        entry("objective", "pgd_at"),
        entry("schedule", "constant"),
        entry("schedule", "cosine"),
    ]
    assert read_sat_config(run_dir / "model.safetensors")["plugins"] == MODEL_PLUGINS
    assert sat_toolkit.load_model(run_dir).sat_config["plugins"] == MODEL_PLUGINS

    report_file = run_dir / "report.json"
    args = ["eval", str(run_dir), "--suite", "none", "--attack", "pgd:steps=2", "--no-checks"]
    result = CliRunner().invoke(cli, [*args, "--samples", "16", "--output", str(report_file)])
    assert result.exit_code == 0, result.output
    report = json.loads(report_file.read_text())
    assert report["plugins"] == [
        *MODEL_PLUGINS[:2],
        entry("attack", "pgd"),
        entry("dataset", "digits"),
        entry("model", "small_cnn"),
    ]


def test_metrics_json_names_each_plugins_package(trained_run: tuple[Path, Path]) -> None:
    run_dir, _ = trained_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["plugins"] == run_plugins(load_recipe(tiny_recipe(run_dir)))


def test_a_model_whose_plugin_is_uninstalled_names_the_package_to_install(
    trained_run: tuple[Path, Path],
) -> None:
    run_dir, dist_info = trained_run
    uninstall(dist_info)
    model_file = run_dir / "model.safetensors"
    with pytest.raises(SatError) as info:
        sat_toolkit.load_model(run_dir)
    assert info.value.message == f"{model_file}: {MISSING}"
    result = CliRunner().invoke(cli, ["eval", str(run_dir), "--suite", "none", "--attack", "fgsm"])
    assert result.exit_code == 2
    assert result.output == f"Error: {model_file}: {MISSING}\n"
    # The run's own recipe (validate, --resume, a study cell) names the package too: its
    # metrics.json records which one provided each plugin.
    validated = CliRunner().invoke(cli, ["recipe", "validate", str(run_dir / "recipe.toml")])
    assert validated.exit_code == 2
    assert "unknown activation 'mish'" in validated.output
    assert (
        validated.output.strip()
        .splitlines()[-1]
        .endswith(
            f"the run in {run_dir} needs activation 'mish' from the package {FAKE} {FAKE_VERSION}, which is "
            f"not installed: pip install '{FAKE}>={FAKE_VERSION}'"
        )
    ), validated.output


DATA_PLUGIN = """
from sat_toolkit.data.digits import Digits
from sat_toolkit.plugins import hookimpl

class DigitsCopy(Digits):
    name = "digits_copy"
    description = "the 8x8 digits under another name"

@hookimpl
def sat_register_datasets():
    return [DigitsCopy]
"""


def test_a_model_whose_dataset_plugin_is_uninstalled_says_what_eval_needs(
    fake_distribution: Any, tmp_path: Path
) -> None:
    """eval reads the dataset the model file names: gone, it said only 'unknown dataset'."""
    dist_info = fake_distribution("sat-more-data", DATA_PLUGIN, version="0.2.0")
    recipe = tiny_recipe(tmp_path / "run")
    recipe["data"]["name"] = "digits_copy"
    recipe["activation"] = {"name": "silu"}
    sat_toolkit.run(recipe, show_progress=False)
    uninstall(dist_info, "sat_more_data_plugin")
    args = ["eval", str(tmp_path / "run"), "--suite", "none", "--attack", "fgsm", "--samples", "8"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert result.output == (
        "Error: evaluating on the model's own data needs dataset 'digits_copy' from the package "
        "sat-more-data 0.2.0, which is not installed: pip install 'sat-more-data>=0.2.0' "
        "(or pass --data NAME)\n"
    )
    other = CliRunner().invoke(cli, [*args, "--data", "digits", "--no-checks"])
    assert other.exit_code == 0, other.output  # the model itself needs no dataset plugin


def _small_model_config(activation: str = "silu") -> dict[str, Any]:
    info = create_dataset({"name": "digits"}).info()
    return create_model({"name": "small_cnn", "width": 4, "depth": 1}, info, activation).sat_config


def test_a_missing_builtin_says_to_upgrade_the_toolkit(fresh_plugin_host: None) -> None:
    config = {
        **_small_model_config(),
        "activation": "zigzag",
        "plugins": [entry("activation", "zigzag", BUILTIN, "99.0")],
    }
    with pytest.raises(SatError) as info:
        rebuild_model(config)
    assert info.value.message == (
        f"the model needs activation 'zigzag', built into {BUILTIN} 99.0; the installed {BUILTIN_VERSION} "
        f"lacks it: pip install --upgrade '{BUILTIN}>=99.0'"
    )


def test_an_older_file_without_provenance_keeps_the_unknown_name_error(fresh_plugin_host: None) -> None:
    config = {**_small_model_config(), "activation": "zigzag"}
    assert "plugins" not in config
    with pytest.raises(UnknownPluginError, match="^unknown activation 'zigzag'"):
        rebuild_model(config)


def test_saved_provenance_leaves_the_callers_config_alone_and_the_bytes_stable(
    fresh_plugin_host: None, tmp_path: Path
) -> None:
    config = _small_model_config("gelu")
    torch.manual_seed(0)
    model = create_model(config["model"], DatasetInfo.from_dict(config["data_info"]), "gelu")
    first, second = save_model(model, config, tmp_path / "a.safetensors"), tmp_path / "b.safetensors"
    save_model(model, dict(reversed(list(config.items()))), second)
    assert "plugins" not in config
    assert first.read_bytes() == second.read_bytes()
    assert read_sat_config(first)["plugins"] == [entry("activation", "gelu"), entry("model", "small_cnn")]


class _Identity:
    """An attack object no package registers: it returns the clean images."""

    name = "identity"

    def perturb(self, model: Any, x: torch.Tensor, y: torch.Tensor, *, eps: float | None = None) -> Any:
        return x.clone()


def test_the_report_lists_an_unregistered_attack_without_a_package(fresh_plugin_host: None) -> None:
    from sat_toolkit.engine.evaluation import fixed_test_subset

    source = create_dataset({"name": "digits"})
    x, y = fixed_test_subset(source.load("test"), 8, 0)
    model = create_model({"name": "small_cnn", "width": 4, "depth": 1}, source.info(), "elu")
    evaluation = sat_toolkit.evaluate(model, x, y, eps=0.1, suite=None, attacks={"mine": _Identity()})
    assert evaluation.to_dict()["plugins"] == [
        entry("activation", "elu"),
        entry("attack", "identity", None, None),
        entry("model", "small_cnn"),
    ]


def test_a_name_now_provided_by_another_package_is_rebuilt_with_a_warning(
    trained_run: tuple[Path, Path], fake_distribution: Any
) -> None:
    """The original package is gone and another one provides 'mish': the model says so when loaded."""
    run_dir, dist_info = trained_run
    uninstall(dist_info)
    fake_distribution("other-mish", MISH_PLUGIN, version="3.0")
    with pytest.warns(PluginWarning) as caught:
        sat_toolkit.load_model(run_dir)
    assert [str(w.message) for w in caught] == [
        f"the model was saved with activation 'mish' from {FAKE} {FAKE_VERSION}; it is rebuilt with "
        f"'mish' from other-mish 3.0 (install {FAKE} to get the original)"
    ]


def test_every_missing_package_is_named_in_one_pip_install() -> None:
    """A run needing two packages named only the first; installing it led to the next error."""
    entries = [
        entry("activation", "mish", FAKE, FAKE_VERSION),
        entry("objective", "alp", "sat-alp", "0.3"),
        entry("schedule", "warm", FAKE, FAKE_VERSION),  # the same package: listed once
        entry("model", "small_cnn"),  # installed: not named
    ]
    assert missing_plugin_message(entries) == (
        f"needs activation 'mish' and schedule 'warm' from the package {FAKE} {FAKE_VERSION} and objective "
        f"'alp' from the package sat-alp 0.3, which are not installed: pip install '{FAKE}>={FAKE_VERSION}' "
        "'sat-alp>=0.3'"
    )
    # a lacking built-in keeps its own clause after the packages to install
    gone = entry("attack", "gone_attack", BUILTIN, "0.0.1")
    assert missing_plugin_message([entries[1], gone]) == (
        "needs objective 'alp' from the package sat-alp 0.3, which is not installed: "
        f"pip install 'sat-alp>=0.3'; needs attack 'gone_attack', built into {BUILTIN} 0.0.1; "
        f"the installed {BUILTIN_VERSION} no longer has it: pip install '{BUILTIN}==0.0.1'"
    )
    assert missing_plugin_message(entries[3:]) is None
    # one package recorded in two spellings and versions is one requirement, the newer one
    spelt = [entry("activation", "mish", "sat-x", "1.0"), entry("objective", "alp", "sat_x", "1.1")]
    assert missing_plugin_message(spelt) == (
        "needs activation 'mish' and objective 'alp' from the package sat-x 1.1, which is not installed: "
        "pip install 'sat-x>=1.1'"
    )


def test_validating_a_run_that_needs_two_absent_packages_names_both(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path / "run")
    recipe["activation"] = {"name": "mish"}
    recipe["objective"] = {"name": "alp"}
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    from sat_toolkit.recipe.toml_io import dumps

    (run_dir / "recipe.toml").write_text(dumps(recipe))
    metrics = {
        "evaluation": {"clean_accuracy": 0.5, "robust_accuracy": 0.25},
        "plugins": [
            entry("activation", "mish", FAKE, FAKE_VERSION),
            entry("objective", "alp", "sat-alp", "0.3"),
        ],
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    result = CliRunner().invoke(cli, ["recipe", "validate", str(run_dir / "recipe.toml")])
    assert result.exit_code == 2
    assert "unknown activation 'mish'" in result.output and "unknown objective 'alp'" in result.output
    needs = (
        f"the run in {run_dir} needs activation 'mish' from the package {FAKE} {FAKE_VERSION} and "
        "objective 'alp' from the package sat-alp 0.3, which are not installed: "
        f"pip install '{FAKE}>={FAKE_VERSION}' 'sat-alp>=0.3'"
    )
    assert result.output.strip().splitlines()[-1].endswith(needs)
