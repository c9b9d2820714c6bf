"""A model file edited by hand (or damaged) is refused in one line, never measured wrongly.

A stranger's walk found two ways past ``load_model``: a config whose model cannot be built
for a reason other than a wrong key or type (a width of 2**62) ended in a traceback, and
stored normalisation tensors that disagree with the file's sat_config ran the model with
one normalisation while the report recorded the other.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import sat_toolkit
from sat_toolkit.data import create_dataset
from sat_toolkit.errors import SatError
from sat_toolkit.export import save_model
from sat_toolkit.models import create_model


@pytest.fixture()
def model_file(tmp_path: Path) -> Path:
    info = create_dataset({"name": "digits"}).info()
    model = create_model({"name": "small_cnn", "width": 4, "depth": 1}, info, "silu")
    path = tmp_path / "model.safetensors"
    save_model(model, model.sat_config, path)
    return path


def rewrite(path: Path, *, tensor_scale: dict[str, float] | None = None, config_edit=None) -> Path:
    """``path`` with some tensors scaled and/or its sat_config edited, written beside it."""
    with safe_open(str(path), "pt") as handle:
        metadata = dict(handle.metadata())
    weights = load_file(str(path))
    for suffix, factor in (tensor_scale or {}).items():
        key = next(k for k in weights if k.endswith(suffix))
        weights[key] = weights[key] * factor
    if config_edit is not None:
        (key,) = [k for k in metadata if "sat" in k]
        config = json.loads(metadata[key])
        config_edit(config)
        metadata[key] = json.dumps(config)
    edited = path.with_name("edited.safetensors")
    save_file(weights, str(edited), metadata=metadata)
    return edited


def test_the_file_as_saved_loads(model_file: Path) -> None:
    model = sat_toolkit.load_model(model_file)
    assert model(torch.rand(2, 1, 8, 8)).isfinite().all()


def test_stored_normalisation_that_is_not_the_configs_is_refused(model_file: Path) -> None:
    edited = rewrite(model_file, tensor_scale={"normalize.std": 0.0})
    with pytest.raises(SatError) as info:
        sat_toolkit.load_model(edited)
    assert info.value.message.startswith(
        f"{edited}: its weights normalise with std [0], its sat_config says ["
    )
    assert info.value.message.endswith("the file was edited or damaged: export it again")


def test_a_config_normalisation_that_is_not_the_stored_one_is_refused(model_file: Path) -> None:
    def tiny_std(config: dict) -> None:
        config["data_info"]["std"] = [1e-30]

    with pytest.raises(SatError, match=r"its sat_config says \[1e-30\]; the file was edited or damaged"):
        sat_toolkit.load_model(rewrite(model_file, config_edit=tiny_std))


def test_a_config_no_model_can_be_built_from_is_one_line(model_file: Path) -> None:
    def huge(config: dict) -> None:
        config["model"]["width"] = 2**62  # torch: "Storage size calculation overflowed" (RuntimeError)

    edited = rewrite(model_file, config_edit=huge)
    with pytest.raises(SatError) as info:
        sat_toolkit.load_model(edited)
    assert info.value.message.startswith(
        f"{edited}: its sat_config does not describe a model this toolkit can rebuild (RuntimeError: "
    )


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        (
            {"name": "pgd", "eps": -0.1, "norm": "linf"},
            "the model file records training eps -0.1, which is no budget to attack with; pass --eps",
        ),
        (
            {"name": "pgd", "eps": "NaN", "norm": "linf"},
            "the model file records training eps 'NaN', which is no budget to attack with; pass --eps",
        ),
        (
            {"name": "pgd", "eps": 0.1, "norm": "l7"},
            "the model file records training norm 'l7', which no attack here knows (l2, linf); "
            "pass --norm and --eps",
        ),
    ],
    ids=["negative", "text", "unknown-norm"],
)
def test_a_recorded_threat_model_that_is_no_budget_is_blamed_on_the_file(
    model_file: Path, attack: dict, message: str
) -> None:
    """It was blamed on the first attack ("attack 'apgd_ce': eps must be >= 0, got -0.1"),
    though the command line named no eps."""
    from click.testing import CliRunner

    from sat_toolkit.cli import cli

    recorded = {"train_attack": attack, "dataset": {"name": "digits"}}  # what a run's model file holds
    edited = rewrite(model_file, config_edit=lambda config: config.update(recorded))
    result = CliRunner().invoke(
        cli, ["eval", str(edited), "--suite", "quick", "--samples", "4", "--no-checks"]
    )
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1].startswith(f"Error: {message}")
    given = CliRunner().invoke(
        cli, ["eval", str(edited), "--eps", "0.1", "--norm", "linf", "--suite", "none", "--attack", "fgsm",
              "--samples", "4", "--no-checks", "--output", str(model_file.parent / "r.json")],
    )  # fmt: skip
    assert given.exit_code == 0, given.output  # the options replace what the file records
