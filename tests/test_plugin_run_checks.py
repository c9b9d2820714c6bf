"""A plugin that breaks its contract stops a run in one line that names it, not a traceback.

Walked as a plugin author would (a stranger's walk found each): an objective whose logits
have the wrong width or whose loss is detached, a schedule that goes negative, a dataset
with off-by-one labels or float64 images. ``sat_toolkit.testing`` finds each of these in
the author's tests; these tests hold the run itself to the same contract.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from torch.utils.data import TensorDataset

from sat_toolkit.cli import cli
from sat_toolkit.data.checks import split_problems
from sat_toolkit.data.info import DatasetInfo

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "recipes" / "quickstart.toml"
TINY = [
    "train.steps=3",
    "train.validate_every_epochs=0",
    "logging.tensorboard=false",
    'model={name = "small_cnn", width = 8, depth = 2, convs_per_stage = 1}',
    'attack.eval={samples = 16, seed = 0, pgd2 = {name = "pgd", steps = 2}}',
]

PLUGINS = """
from typing import Literal

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from sat_toolkit.data import Digits
from sat_toolkit.objectives import PGDAT, ObjectiveLoss
from sat_toolkit.plugins import hookimpl
from sat_toolkit.schedules import Schedule


class Narrow(PGDAT):
    name = "narrow"
    description = "logits of three classes"

    def loss(self, model, x, x_adv, y, *, label_smoothing=0.0):
        logits = model(x_adv)
        return ObjectiveLoss(loss=F.cross_entropy(logits, y), logits=logits[:, :3])


class Detached(PGDAT):
    name = "detached"
    description = "a loss cut off from the model"

    def loss(self, model, x, x_adv, y, *, label_smoothing=0.0):
        logits = model(x_adv)
        return ObjectiveLoss(loss=F.cross_entropy(logits, y).detach(), logits=logits)


class NaNLoss(PGDAT):
    name = "nan_loss"
    description = "a loss that is NaN from its first call"

    def loss(self, model, x, x_adv, y, *, label_smoothing=0.0):
        logits = model(x_adv)
        return ObjectiveLoss(loss=F.cross_entropy(logits, y) * float("nan"), logits=logits)


class Negative(Schedule):
    name = "negative"
    description = "minus the base"

    def _value(self, step, total_steps, base):
        return -base


class _Broken(Dataset):
    def __init__(self, split, mode):
        self.base, self.mode = Digits().load(split), mode

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        image, label = self.base[index]
        if self.mode == "labels_from_one":
            return image, int(label) + 1
        return image.double(), int(label)


class BrokenDigits:
    name = "broken_digits"
    description = "digits with 1-based labels or float64 images"

    def __init__(self, mode: Literal["labels_from_one", "float64"] = "labels_from_one"):
        self.mode = mode

    def info(self):
        return Digits().info()

    def load(self, split):
        return _Broken(split, self.mode)


@hookimpl
def sat_register_objectives():
    return [Narrow, Detached, NaNLoss]


@hookimpl
def sat_register_schedules():
    return [Negative]


@hookimpl
def sat_register_datasets():
    return [BrokenDigits]
"""


def _run(tmp_path: Path, *overrides: str) -> tuple[Any, Path]:
    out = tmp_path / "run"
    args = ["run", str(QUICKSTART), *(f"--set={o}" for o in (*TINY, *overrides))]
    result = CliRunner().invoke(cli, [*args, f"--set=run.output_dir={json.dumps(str(out))}"])
    return result, out


@pytest.mark.parametrize(
    ("overrides", "message", "before_writing"),
    [
        (
            ["objective=narrow"],
            "Error: objective 'narrow': loss(...).logits must be the model's logits [64, 10], "
            "got a tensor of shape (64, 3)",
            False,
        ),
        (
            ["objective=detached"],
            "Error: objective 'detached': loss(...).loss does not depend on the model's weights",
            False,
        ),
        (
            ["schedule.lr.name=negative"],
            "Error: schedule.lr 'negative': value(0, 3, 0.05) returned -0.05; a schedule returns a finite "
            "number >= 0",
            True,
        ),
        (
            ["schedule.eps.name=negative"],
            "Error: schedule.eps 'negative': value(0, 3, 0.1) returned -0.1",
            True,
        ),
        (
            ["data.name=broken_digits"],
            "Error: dataset 'broken_digits': load('train')[",
            True,
        ),
        (
            ["data.name=broken_digits", "data.mode=float64"],
            "Error: dataset 'broken_digits': load('train')[0]: the image is torch.float64; yield a float32 "
            "tensor C x H x W",
            True,
        ),
    ],
    ids=["narrow-logits", "detached-loss", "negative-lr", "negative-eps", "labels-from-one", "float64"],
)
def test_a_plugin_breaking_its_contract_stops_the_run_in_one_line(
    tmp_path: Path, fake_distribution: Any, overrides: list[str], message: str, before_writing: bool
) -> None:
    fake_distribution("broken-plugins", PLUGINS)
    result, out = _run(tmp_path, *overrides)
    assert result.exit_code == 2, (result.output, result.exception)
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(message), last
    assert "Traceback" not in result.output
    if before_writing:  # found before the run writes anything, so the same command can run again
        assert not out.exists()


def test_an_objective_whose_first_loss_is_nan_is_named_and_leaves_nothing_behind(
    tmp_path: Path, fake_distribution: Any
) -> None:
    """The first loss is computed on the initial weights, so the lr the message used to blame
    had no hand in it; the directory it left refused the corrected recipe."""
    fake_distribution("broken-plugins", PLUGINS)
    result, out = _run(tmp_path, "objective=nan_loss")
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: training stopped at step "), last
    assert last.endswith(
        "the loss is nan since step 1 (no checkpoint); the first loss, before any update (so not the lr): "
        "check the objective 'nan_loss' from broken-plugins, the data and the attack's eps"
    ), last
    assert not out.exists()
    fixed, out = _run(tmp_path, "objective=narrow")  # the same directory takes the next recipe
    assert "holds a different run" not in fixed.output


def test_labels_from_one_are_named_with_the_label_and_its_range(
    tmp_path: Path, fake_distribution: Any
) -> None:
    fake_distribution("broken-plugins", PLUGINS)
    result, _ = _run(tmp_path, "data.name=broken_digits")
    assert "label 10 is outside 0 .. 9 (info().num_classes)" in result.output


def test_a_rare_bad_label_is_found_in_the_split_s_labels() -> None:
    """One label in 5000 out of range: sampling 64 items would miss it, the label tensor does not."""
    info = DatasetInfo(num_classes=2, channels=1, image_size=(4, 4), mean=(0.5,), std=(0.5,))
    labels = torch.zeros(5000, dtype=torch.int64)
    labels[3001] = 2
    split = TensorDataset(torch.rand(5000, 1, 4, 4), labels)
    assert split_problems(split, info, "load('train')") == [
        "load('train')[3001]: label 2 is outside 0 .. 1 (info().num_classes; load('train').tensors[1] "
        "ranges over 0 .. 2)"
    ]
    labels[3001] = 1
    assert split_problems(split, info, "load('train')") == []
