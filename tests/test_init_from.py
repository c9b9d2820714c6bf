"""Fine-tuning: ``model.init_from`` starts a timm model from a local safetensors file.

Walked as a user would: weights saved from timm (``save_file(model.state_dict())``), a
sat-toolkit run's own ``model.safetensors``, a classifier for other classes, and the
files a user might point at by mistake (missing, pickled, truncated, another model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from sat_toolkit.cli import cli
from sat_toolkit.data import create_dataset
from sat_toolkit.errors import SatError
from sat_toolkit.models import create_model
from sat_toolkit.recipe import load_recipe

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "recipes" / "quickstart.toml"
ARCH = "resnet10t"


def timm_weights(
    path: Path, *, num_classes: int = 10, arch: str = ARCH, seed: int = 7
) -> dict[str, torch.Tensor]:
    """What a user has: a timm model's state_dict saved with safetensors."""
    torch.manual_seed(seed)
    state = timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=1).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return state


def build(init_from: Path | str, **extra: Any) -> torch.nn.Module:
    """The model a run of the quickstart with ``model = timm resnet10t`` and ``init_from`` starts with."""
    model = {"name": "timm", "architecture": ARCH, "init_from": str(init_from), **extra}
    recipe = load_recipe(QUICKSTART, [f"model={_inline(model)}"])
    return create_model(
        recipe.model.to_dict(), create_dataset({"name": "digits"}).info(), recipe.activation.to_dict()
    )


def _inline(table: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in table.items()) + "}"


def test_timm_weights_are_the_models_starting_point(tmp_path: Path) -> None:
    state = timm_weights(tmp_path / "w.safetensors")
    body = build(tmp_path / "w.safetensors").body.state_dict()
    assert set(body) == set(state)
    assert all(torch.equal(body[k], state[k]) for k in state)


def test_a_new_head_for_other_classes(tmp_path: Path) -> None:
    state = timm_weights(tmp_path / "w5.safetensors", num_classes=5)
    with pytest.raises(SatError) as info:
        build(tmp_path / "w5.safetensors")
    message = info.value.message
    assert "'fc.weight' has shape (5, 512), the model needs (10, 512)" in message  # the model's order
    assert "model.init_head = false" in message and "\n" not in message
    body = build(tmp_path / "w5.safetensors", init_head=False).body.state_dict()
    assert body["fc.weight"].shape == (10, 512)
    assert all(torch.equal(body[k], state[k]) for k in state if not k.startswith("fc."))


def test_a_sat_toolkit_runs_export_starts_a_new_run(tmp_path: Path) -> None:
    """Train briefly with `sat-toolkit run`, then start another run from its model.safetensors."""
    first = tmp_path / "first"
    args = [
        "run", str(QUICKSTART), "--no-progress",
        "--set", f"model={_inline({'name': 'timm', 'architecture': ARCH})}",
        "--set", "data.limit_train=128", "--set", "train.epochs=1", "--set", "train.validate_every_epochs=0",
        "--set", "logging.tensorboard=false",
        "--set", 'attack.eval={samples = 16, seed = 0, pgd2 = {name = "pgd", steps = 2}}',
    ]  # fmt: skip
    result = CliRunner().invoke(cli, [*args, "--set", f"run.output_dir={json.dumps(str(first))}"])
    assert result.exit_code == 0, result.output
    from safetensors.torch import load_file

    exported = load_file(str(first / "model.safetensors"))
    body = build(first / "model.safetensors").body.state_dict()
    assert all(torch.equal(body[k], exported[f"body.{k}"]) for k in body)
    # And through the command line, into a second run that trains on from there.
    second = tmp_path / "second"
    result = CliRunner().invoke(
        cli,
        [
            *args,
            "--set", f"model.init_from={json.dumps(str(first / 'model.safetensors'))}",
            "--set", f"run.output_dir={json.dumps(str(second))}",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "init_from" in (second / "recipe.toml").read_text()
    # The exported model rebuilds without the file: init_from is not part of its config.
    assert "init_from" not in json.dumps(json.loads((second / "metrics.json").read_text())["plugins"])
    from sat_toolkit.export import read_sat_config

    assert "init_from" not in read_sat_config(second / "model.safetensors")["model"]


def test_a_missing_file_is_refused_at_validation(tmp_path: Path) -> None:
    model = _inline({"name": "timm", "architecture": ARCH, "init_from": str(tmp_path / "nope.safetensors")})
    result = CliRunner().invoke(cli, ["recipe", "validate", str(QUICKSTART), "--set", f"model={model}"])
    assert result.exit_code == 2
    assert "model.init_from: no such file or directory" in result.output
    assert "--set model.init_from=FILE" in result.output


def test_a_pickled_torch_file_is_never_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    torch.save({"fc.weight": torch.zeros(2)}, path)
    with pytest.raises(
        SatError, match=r"pickled torch file, which could run code.*safetensors.torch.save_file"
    ):
        build(path)


def test_a_truncated_file_is_one_line(tmp_path: Path) -> None:
    timm_weights(tmp_path / "w.safetensors")
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(
        SatError, match=r"model.init_from: '.*cut.safetensors' is not a readable safetensors file"
    ):
        build(tmp_path / "cut.safetensors")


def test_weights_of_another_architecture_name_the_first_tensor_that_differs(tmp_path: Path) -> None:
    timm_weights(tmp_path / "r18.safetensors", arch="resnet18")
    with pytest.raises(
        SatError, match=r"'.*' has shape .* the model needs .*; is it the same architecture\?"
    ):
        build(tmp_path / "r18.safetensors")


def test_a_file_lacking_tensors_says_which(tmp_path: Path) -> None:
    state = timm_weights(tmp_path / "w.safetensors")
    del state["layer4.0.conv1.weight"]
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "part.safetensors"))
    with pytest.raises(
        SatError, match=r"it lacks 'layer4.0.conv1.weight' \(1 of the model's \d+ tensors missing\)"
    ):
        build(tmp_path / "part.safetensors")


def test_weights_holding_nan_are_refused_before_training_starts(tmp_path: Path) -> None:
    state = timm_weights(tmp_path / "w.safetensors")
    state["layer1.0.conv1.weight"][0, 0, 0, 0] = float("inf")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "inf.safetensors"))
    with pytest.raises(
        SatError, match=r"'layer1.0.conv1.weight' holds NaN or inf; training from it would start"
    ):
        build(tmp_path / "inf.safetensors")


@pytest.mark.parametrize("low_bytes", [b"\x80", b"PK"])
def test_a_safetensors_header_that_looks_like_a_pickle_still_loads(tmp_path: Path, low_bytes: bytes) -> None:
    """A safetensors file opens with its header's length: its low byte may be 0x80 or spell "PK"."""
    state = timm_weights(tmp_path / "w.safetensors")
    data = (tmp_path / "w.safetensors").read_bytes()
    length = int.from_bytes(data[:8], "little")
    target = int.from_bytes(low_bytes.ljust(2, b"\0")[:2], "little") if low_bytes == b"PK" else 0x80
    step = 0x10000 if low_bytes == b"PK" else 0x100  # keep the low byte(s), grow the header
    new = target + step * ((length - target) // step + 1)
    header = data[8 : 8 + length] + b" " * (new - length)  # safetensors allows trailing spaces
    (tmp_path / "odd.safetensors").write_bytes(new.to_bytes(8, "little") + header + data[8 + length :])
    assert (tmp_path / "odd.safetensors").read_bytes()[: len(low_bytes)] == low_bytes
    body = build(tmp_path / "odd.safetensors").body.state_dict()
    assert all(torch.equal(body[k], state[k]) for k in state)
