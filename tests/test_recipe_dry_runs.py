"""Every shipped recipe builds and trains on synthetic data of its shape (``--dry-run``).

CI has neither ImageNet nor a GPU; a dry run still builds the real model at full width,
the activation, attacks, optimiser, schedules, checkpointing, logging and evaluation, so a
broken recipe fails here rather than hours into a cluster job.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from sat_toolkit.cli import cli
from sat_toolkit.engine import dry_run as dry_run_module
from sat_toolkit.engine.dry_run import dry_run_recipe
from sat_toolkit.export import load_model
from sat_toolkit.recipe import load_recipe
from sat_toolkit.recipe.toml_io import read_file

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.toml"))
# ImageNet-scale recipes run at 32 px with a tiny batch: the architecture is what matters.
# The CIFAR recipes keep 32 px and their full-width networks with a tiny batch (their
# PGD-10 training attack makes a step of 128 images cost minutes on a CPU).
SMALL = {
    "resnet50_relu", "resnet50_sat", "effnet_b0_sat", "effnet_l1",
    "cifar10_preact_resnet18", "cifar10_preact_resnet18_trades",
    "cifar10_wrn28_10", "cifar100_preact_resnet18",
}  # fmt: skip
# EfficientNet-L1 trains in bf16, which a CPU without AVX512-BF16 emulates: its dry run took
# 340 s there, 83 s in fp32, a third of the whole suite. Its architecture, accumulation and
# checkpoint size are what this test is for; effnet_b0_sat dry-runs the same bf16 path.
FP32 = {"effnet_l1"}


@pytest.fixture(autouse=True)
def dry_runs_write_under_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dry run deletes its temp directory (EfficientNet-L1's: 4 GB); should that ever fail,
    it is still in tmp_path, which pytest drops, and not in /tmp, where it would pile up.
    """
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_shipped_recipe_dry_run(recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    delete = dry_run_module._remove_run_dir

    def inspect_then_delete(run_dir: Path) -> None:
        """What the dry run wrote, read just before it deletes its directory."""
        seen["run_dir"] = run_dir
        seen["metrics"] = json.loads((run_dir / "metrics.json").read_text())
        seen["exported"] = (run_dir / "model.safetensors").is_file()
        seen["recipe"] = load_recipe(run_dir / "recipe.toml")
        seen["model"] = load_model(run_dir / "model.safetensors")
        delete(run_dir)

    monkeypatch.setattr(dry_run_module, "_remove_run_dir", inspect_then_delete)
    args = ["run", str(recipe), "--dry-run", "--no-progress"]
    if recipe.stem in SMALL:
        args += ["--dry-run-size", "32", "--set", "data.batch_size=4"]
    if recipe.stem in FP32:
        args += ["--set", "optimizer.mixed_precision=no"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert (
        result.output.strip().splitlines()[-1]
        == "dry run ok: 2 steps; its files were deleted (--keep keeps them)"
    )
    run_dir = seen["run_dir"]
    assert isinstance(run_dir, Path) and run_dir.parent == tmp_path and not run_dir.exists()
    assert list(tmp_path.glob("sat-dry-run-*")) == []
    assert seen["metrics"]["steps"] == 2
    assert seen["exported"]
    # The dry run kept the recipe's model, activation and attacks.
    saved = seen["recipe"]
    original = read_file(recipe)
    if recipe.stem in FP32:  # as the command line above set it (the training attack follows it)
        original["optimizer"]["mixed_precision"] = "no"
    assert saved.model.name == original["model"]["name"]
    assert saved.activation.to_dict()["name"] == (
        original["activation"] if isinstance(original["activation"], str) else original["activation"]["name"]
    )
    if recipe.stem == "effnet_b0_sat":  # the bf16 path the FP32 recipes skip here is run here
        assert saved.optimizer.mixed_precision == "bf16"
    rewritten = load_recipe(dry_run_recipe(original, output_dir=str(tmp_path / "unused")))
    assert saved.attack.train.to_dict() == rewritten.attack.train.to_dict()
    # A recipe that declares its class count and statistics gets the real head and
    # normalisation without its data (the CIFAR recipes: 10 or 100 classes, CIFAR's mean/std).
    declared, model = original["data"], seen["model"]
    if "num_classes" in declared:
        shape = tuple(saved.data.to_dict()[k] for k in ("channels", "image_size", "image_size"))
        assert model(torch.rand(1, *shape)).shape == (1, declared["num_classes"])
    if "mean" in declared:
        assert model.normalize.mean.flatten().tolist() == pytest.approx(declared["mean"])
        assert model.normalize.std.flatten().tolist() == pytest.approx(declared["std"])


def test_dry_run_keeps_shape_and_swaps_only_the_data() -> None:
    raw = read_file(RECIPES[0].parent / "resnet50_sat.toml")
    dry = dry_run_recipe(raw, image_size=64, output_dir="/tmp/x")
    assert dry["data"]["name"] == "synthetic"
    assert (dry["data"]["num_classes"], dry["data"]["image_size"], dry["data"]["channels"]) == (1000, 64, 3)
    assert dry["model"] == raw["model"] and dry["activation"] == raw["activation"]
    assert dry["optimizer"]["lr"] == raw["optimizer"]["lr"]
    assert dry["attack"]["eval"]["pgd200"]["steps"] == 2
    assert dry["train"]["steps"] == 2 and dry["run"]["output_dir"] == "/tmp/x"


def test_dry_run_looks_at_the_real_dataset_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its shape comes from one ``info()`` of the recipe's dataset (a plugin may read files for it)."""
    import sat_toolkit.data

    built = []
    real = sat_toolkit.data.create_dataset

    def counting(spec: Any) -> Any:
        built.append(spec["name"])
        return real(spec)

    monkeypatch.setattr(sat_toolkit.data, "create_dataset", counting)
    dry = dry_run_recipe(read_file(RECIPES[0].parent / "quickstart.toml"), output_dir="/tmp/x")
    assert built == ["digits"]
    assert (dry["data"]["num_classes"], dry["data"]["image_size"], dry["data"]["channels"]) == (10, 8, 1)


def test_missing_imagenet_path_is_named_with_the_fix() -> None:
    result = CliRunner().invoke(cli, ["recipe", "validate", str(RECIPES[0].parent / "resnet50_sat.toml")])
    assert result.exit_code == 2
    assert "data.path: no such file or directory: 'data/imagenet'" in result.output
    assert "--set data.path=DIR" in result.output
