"""An attack's result is checked on first use: a tensor is accepted, anything wrong is one line.

Unit level on :func:`checked_result`, then through ``sat-toolkit run`` with a fake plugin
distribution: a training attack returning a tensor trains and evaluates; a broken training
attack stops in its first step; a broken evaluation attack is found before training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from sat_toolkit.attacks import Attack, AttackResult, Ensemble, checked_result
from sat_toolkit.cli import cli
from sat_toolkit.errors import SatError
from sat_toolkit.evaluation import evaluate_robustness

ATTACKS = """
import torch
from sat_toolkit.attacks import Attack
from sat_toolkit.plugins import hookimpl

class AsTensor(Attack):
    name = "as_tensor"
    description = "FGSM-like random signs, returned as a bare tensor"
    def _perturb(self, model, x, y, eps):
        return (x + eps * torch.sign(torch.randn_like(x))).clamp(0, 1)

class AsDict(Attack):
    name = "as_dict"
    def _perturb(self, model, x, y, eps):
        return {"x_adv": x.clone()}

class OffBall(Attack):
    name = "off_ball"
    def _perturb(self, model, x, y, eps):
        return (x + 3 * eps).clamp(0, 1)

class NanOut(Attack):
    name = "nan_out"
    def _perturb(self, model, x, y, eps):
        out = x.clone()
        out.view(-1)[:3] = float("nan")
        return out

@hookimpl
def sat_register_attacks():
    return [AsTensor, AsDict, OffBall, NanOut]
"""

RECIPE = """\
[run]
name = "checked"
seed = 0
output_dir = "{out}"

[data]
name = "digits"
batch_size = 32
eval_batch_size = 64
limit_train = 128

[model]
name = "small_cnn"
width = 8
depth = 2
convs_per_stage = 1

[activation]
name = "silu"

[attack.train]
name = "{train}"
eps = 0.1

[attack.eval]
samples = 20

[attack.eval.probe]
name = "{evaluate}"

[optimizer]
name = "sgd"
lr = 0.05

[train]
epochs = 1
validate_every_epochs = 0

[checkpoint]
every_steps = 0

[logging]
tensorboard = false
"""

DICT_MESSAGE = (
    "attack 'as_dict': perturb() returned dict; "
    "return sat_toolkit.attacks.AttackResult(x_adv=...) or the adversarial tensor"
)


# -- unit level ------------------------------------------------------------------------------
X = torch.full((2, 1, 2, 2), 0.5)


def test_a_tensor_becomes_an_attack_result_with_the_budget() -> None:
    x_adv = X + 0.05
    result = checked_result("mine", x_adv, X, 0.1, "linf")
    assert isinstance(result, AttackResult)
    assert result.x_adv is x_adv and result.eps == 0.1


def test_an_attack_result_passes_through_unchanged() -> None:
    given = AttackResult(x_adv=X + 0.1, eps=0.1)
    assert checked_result("mine", given, X, 0.1, "linf") is given  # on the ball's edge: fine


@pytest.mark.parametrize(
    ("returned", "eps", "norm", "message"),
    [
        ({"x_adv": X}, 0.1, "linf", DICT_MESSAGE.replace("as_dict", "mifgsm")),
        (
            [X],
            0.1,
            "linf",
            "attack 'mifgsm': perturb() returned list; "
            "return sat_toolkit.attacks.AttackResult(x_adv=...) or the adversarial tensor",
        ),
        (
            AttackResult(x_adv=[1.0]),  # type: ignore[arg-type]
            0.1,
            "linf",
            "attack 'mifgsm': perturb() returned x_adv of type list; x_adv must be a tensor of images",
        ),
        (
            torch.ones(2, 1, 2, 2, dtype=torch.long),
            0.1,
            "linf",
            "attack 'mifgsm': perturb() returned x_adv of dtype torch.int64; "
            "return floating-point images in [0, 1]",
        ),
        (
            X.flatten(1),
            0.1,
            "linf",
            "attack 'mifgsm': perturb() returned x_adv of shape (2, 4) for inputs of shape (2, 1, 2, 2); "
            "return one example per input, shaped like the input",
        ),
        (
            X.clone().index_put_((torch.tensor([0]),), torch.tensor(float("nan"))),
            0.1,
            "linf",
            "attack 'mifgsm': perturb() returned 4 non-finite values (NaN or inf) in x_adv; "
            "its results are not trustworthy",
        ),
        (
            X + 0.75,
            1.0,
            "linf",
            "attack 'mifgsm': perturb() returned examples outside [0, 1] "
            "(by up to 0.25: min 1.25, max 1.25); clamp x_adv to [0, 1]",
        ),
        (
            X + 0.25,
            0.125,
            "linf",
            "attack 'mifgsm': perturb() returned examples that left the linf eps-ball (by 0.125: largest "
            "perturbation 0.25, eps 0.125); project x_adv onto the ball, its results are not trustworthy",
        ),
        (
            X + 0.25,  # per sample: four pixels of 0.25 -> L2 0.5
            0.25,
            "l2",
            "attack 'mifgsm': perturb() returned examples that left the l2 eps-ball (by 0.25: largest "
            "perturbation 0.5, eps 0.25); project x_adv onto the ball, its results are not trustworthy",
        ),
    ],
    ids=["dict", "list", "x_adv list", "integer", "shape", "nan", "outside box", "linf ball", "l2 ball"],
)
def test_a_wrong_result_is_one_exact_line(returned: object, eps: float, norm: str, message: str) -> None:
    with pytest.raises(SatError) as caught:
        checked_result("mifgsm", returned, X, eps, norm)
    assert caught.value.message == message


def test_round_off_inside_the_slack_passes() -> None:
    x = torch.rand(4, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    x_adv = (x + 8 / 255).clamp(0, 1)
    assert checked_result("pgd", x_adv, x, 8 / 255, "linf").x_adv is x_adv


class _Member(Attack):
    """A plugin-style attack: returns a bare tensor, ``push`` away from the inputs."""

    name = "member"

    def __init__(self, push: float, **shared: Any) -> None:
        super().__init__(**shared)
        self.push = push

    def _perturb(self, model, x, y, eps):
        return (x + self.push).clamp(0, 1)


def _zero_model() -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    nn.init.zeros_(model[1].weight)
    nn.init.zeros_(model[1].bias)  # ties go to class 0: every sample is clean-correct
    return model


def test_an_ensemble_takes_a_members_tensor_and_refuses_it_off_the_ball() -> None:
    model, y = _zero_model(), torch.zeros(2, dtype=torch.long)
    good = Ensemble(attacks=[_Member(0.05)], eps=0.1)
    assert torch.equal(good.perturb(model, X, y).x_adv, X)  # the zero model is never fooled
    bad = Ensemble(attacks=[_Member(0.3)], eps=0.1)
    with pytest.raises(SatError, match=r"^attack 'member': perturb\(\) returned examples that left the linf"):
        bad.perturb(model, X, y)


def test_the_evaluator_takes_a_tensor_and_refuses_a_wrong_shape() -> None:
    class Flat(_Member):
        def _perturb(self, model, x, y, eps):
            return x.flatten(1)

    model, y = _zero_model(), torch.zeros(2, dtype=torch.long)
    report = evaluate_robustness(model, X, y, {"fine": _Member(0.05)}, eps=0.1)
    assert report.robust_accuracy == 1.0
    with pytest.raises(SatError) as caught:
        evaluate_robustness(model, X, y, {"flat": Flat(0.0)}, eps=0.1)
    assert caught.value.message == (  # the recipe's label, and the plugin whose author must fix it
        "attack 'flat' (plugin 'member'): perturb() returned x_adv of shape (2, 4) for inputs of shape "
        "(2, 1, 2, 2); "
        "return one example per input, shaped like the input"
    )


# -- through the command line ------------------------------------------------------------------
def _run(tmp_path: Path, train: str, evaluate: str) -> tuple[object, Path]:
    out = tmp_path / "run"
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE.format(out=out.as_posix(), train=train, evaluate=evaluate), encoding="utf-8")
    result = CliRunner().invoke(cli, ["run", str(recipe), "--no-progress"])
    return result, out


def _one_line(result) -> str:
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_an_attack_returning_a_tensor_trains_and_evaluates(
    fake_distribution, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    fake_distribution("odd-attacks", ATTACKS)
    monkeypatch.chdir(tmp_path)
    result, out = _run(tmp_path, "as_tensor", "as_tensor")
    assert result.exit_code == 0, (result.output, result.exception)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["steps"] == 4  # 128 images / 32 per batch, one epoch: every step took a tensor
    probe = metrics["evaluation"]["attacks"]["probe"]
    assert 0.0 <= probe["robust_accuracy"] <= 1.0
    assert probe["settings"]["name"] == "as_tensor"


def test_a_training_attack_returning_a_dict_is_one_line(
    fake_distribution, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    fake_distribution("odd-attacks", ATTACKS)
    monkeypatch.chdir(tmp_path)
    result, out = _run(tmp_path, "as_dict", "pgd")
    assert _one_line(result) == f"Error: {DICT_MESSAGE}"
    # Nothing left behind: the directory (recipe.toml, tensorboard/) refused the fixed recipe.
    assert not out.exists()
    result, out = _run(tmp_path, "pgd", "pgd")  # the user's fix: another training attack
    assert result.exit_code == 0, result.output
    assert (out / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        (
            "off_ball",
            "attack 'probe' (plugin 'off_ball'): perturb() returned examples that left the linf eps-ball "
            "(by 0.2: largest "
            "perturbation 0.3, eps 0.1); project x_adv onto the ball, its results are not trustworthy",
        ),
        (
            "nan_out",
            "attack 'probe' (plugin 'nan_out'): perturb() returned 3 non-finite values (NaN or inf) "
            "in x_adv; "
            "its results are not trustworthy",
        ),
    ],
)
def test_a_broken_evaluation_attack_is_found_before_training(
    fake_distribution,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    one_thread: None,
    attack: str,
    message: str,
) -> None:
    fake_distribution("odd-attacks", ATTACKS)
    monkeypatch.chdir(tmp_path)
    result, out = _run(tmp_path, "pgd", attack)
    assert _one_line(result) == f"Error: {message}"
    assert not (out / "model.safetensors").exists()
    assert not (out / "recipe.toml").exists()  # nothing of the run was written


def test_the_preflight_runs_only_the_external_attacks(
    fake_distribution, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sat_toolkit.data import create_dataset
    from sat_toolkit.engine import evaluation
    from sat_toolkit.evaluation import robust
    from sat_toolkit.models import create_model
    from sat_toolkit.recipe import recipe_from_toml

    fake_distribution("odd-attacks", ATTACKS)
    text = RECIPE.format(out="unused", train="pgd", evaluate="as_tensor")
    text = text.replace("[optimizer]", '[attack.eval.pgd3]\nname = "pgd"\nsteps = 3\n\n[optimizer]')
    text = text.replace(
        "[optimizer]", '[attack.eval.both]\nname = "ensemble"\nattacks = ["fgsm", "as_tensor"]\n\n[optimizer]'
    )
    recipe = recipe_from_toml(text)
    source = create_dataset(recipe.data.plugin.to_dict())
    model = create_model(recipe.model.to_dict(), source.info(), recipe.activation.to_dict())
    seen: list[tuple[str, int]] = []
    real = robust.run_checked

    def spy(label, attack, model, x, y, **kw):
        seen.append((label, len(x)))
        return real(label, attack, model, x, y, **kw)

    monkeypatch.setattr(robust, "run_checked", spy)
    before = torch.get_rng_state()
    evaluation.preflight_evaluation(recipe, model, source.load("train"), torch.device("cpu"))
    assert sorted(seen) == [("both", 2), ("probe", 2)]  # not pgd3: built-in through and through
    assert torch.equal(torch.get_rng_state(), before)  # training draws the same numbers
