"""A bf16 run's evaluation is fp32, as its recipe says, and ``sat-toolkit eval`` reproduces it.

accelerate's mixed precision patches the prepared model's forward to autocast; attacks
and evaluations used to run through that patch, so a bf16 run validated and evaluated in
bf16 and the exported model, evaluated in fp32, scored other numbers.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from click.testing import CliRunner
from test_engine import tiny_recipe
from torch import nn

import sat_toolkit
from sat_toolkit.cli import cli
from sat_toolkit.engine.evaluation import final_evaluation, validate
from sat_toolkit.engine.precision import ClassForward, unpatched
from sat_toolkit.engine.trainer import make_accelerator
from sat_toolkit.recipe import Recipe, load_recipe


@pytest.fixture
def bf16_run(tmp_path: Path) -> Iterator[tuple[Recipe, Accelerator]]:
    recipe = load_recipe(tiny_recipe(tmp_path, optimizer={"mixed_precision": "bf16"}))
    yield recipe, make_accelerator(recipe, tmp_path)
    AcceleratorState._reset_state(reset_partial_state=True)


def _near_tie() -> nn.Module:
    """Class 1 beats class 0 by a relative 2**-10 on every image with positive pixels: in fp32
    every image is class 1; bf16 (8 significant bits) rounds the two logits to a tie, which
    argmax gives to class 0. The attack cannot undo it: both logits scale with the same sum."""
    linear = nn.Linear(64, 10, bias=False)
    with torch.no_grad():
        linear.weight.fill_(0.0)
        linear.weight[0].fill_(1.0)
        linear.weight[1].fill_(1.0 + 2**-10)
    return nn.Sequential(nn.Flatten(), linear)


def _images_of_class_1(count: int = 20) -> list[tuple[torch.Tensor, int]]:
    torch.manual_seed(0)
    return [(0.2 + 0.8 * torch.rand(1, 8, 8), 1) for _ in range(count)]


@pytest.mark.parametrize("evaluation", ["validation", "final evaluation"])
def test_a_bf16_run_validates_and_evaluates_in_fp32(
    bf16_run: tuple[Recipe, Accelerator], evaluation: str
) -> None:
    recipe, accelerator = bf16_run
    model = accelerator.prepare(_near_tie())
    test_set = _images_of_class_1()
    with torch.no_grad():  # through accelerate's patched forward: bf16, a tie, class 0
        assert model(torch.stack([x for x, _ in test_set])).argmax(1).eq(0).all()
    if evaluation == "validation":
        result = validate(recipe, model, test_set, accelerator)
        assert (result["clean_accuracy"], result["robust_accuracy"], result["fgsm_accuracy"]) == (
            1.0,
            1.0,
            1.0,
        )
    else:
        result = final_evaluation(recipe, model, test_set, accelerator, show_progress=False)
        assert (result["clean_accuracy"], result["robust_accuracy"]) == (1.0, 1.0)


def test_the_view_shares_the_models_weights_and_modes(bf16_run: tuple[Recipe, Accelerator]) -> None:
    _, accelerator = bf16_run
    plain = _near_tie().eval()
    prepared = accelerator.prepare(copy.deepcopy(plain)).eval()
    view = unpatched(prepared)
    assert isinstance(view, ClassForward) and view.training is False  # the flag, copied
    assert [id(p) for p in view.parameters()] == [id(p) for p in prepared.parameters()]
    view.train()
    assert prepared.training and prepared[1].training
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # a bf16 attack still gets bf16
        assert view(x).dtype == torch.bfloat16
    assert unpatched(plain) is plain  # nothing patched: the model itself


def test_a_bf16_runs_metrics_are_what_eval_of_its_exported_model_measures(tmp_path: Path) -> None:
    """The user's path: train in bf16 (with an EMA, whose copy carried the patch too), then
    ``sat-toolkit eval`` the run with the recipe's attack: the same clean, per-attack and
    worst-case accuracy."""
    run_dir = tmp_path / "bf16"
    sat_toolkit.run(
        tiny_recipe(
            run_dir,
            optimizer={"mixed_precision": "bf16"},
            train={"epochs": 2},
            checkpoint={"every_steps": 0},
            logging={"tensorboard": False},
        ),
        show_progress=False,
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())["evaluation"]
    report_path = tmp_path / "eval.json"
    result = CliRunner().invoke(cli, [
        "eval", str(run_dir), "--suite", "none", "--attack", "pgd:steps=5", "--samples", "100",
        "--seed", "0", "--batch-size", "128", "--no-checks", "--output", str(report_path),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["clean_acc"] == metrics["clean_accuracy"]
    assert report["attacks"]["pgd_steps5"]["robust_accuracy"] == metrics["attacks"]["pgd5"]["robust_accuracy"]
    assert report["robust_acc"] == metrics["robust_accuracy"]
