"""Training objectives: each loss against its paper's formula, the phases, the plumbing.

The formula tests compute the expected value with plain Python floats from the logits,
term by term as the papers write them, so they share no code with the implementation.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sat_toolkit.attacks import PGD
from sat_toolkit.export import read_sat_config
from sat_toolkit.objectives import BUILTIN_OBJECTIVES, MART, PGDAT, TRADES, Objective, ObjectiveLoss, Standard
from sat_toolkit.phase import current_phase
from sat_toolkit.plugins.contracts import contract_problems
from sat_toolkit.recipe import RecipeError, load_recipe
from sat_toolkit.testing import check_objective, conformance_problems

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "recipes" / "quickstart.toml"

# Two samples, three classes: "images" that the identity model reads as logits.
CLEAN = [[0.9, 0.2, 0.1], [0.3, 0.6, 0.4]]
ADV = [[0.5, 0.45, 0.3], [0.35, 0.2, 0.8]]
LABELS = [0, 1]


def softmax(row: list[float]) -> list[float]:
    peak = max(row)
    exps = [math.exp(v - peak) for v in row]
    return [e / sum(exps) for e in exps]


def cross_entropy(row: list[float], label: int) -> float:
    return -math.log(softmax(row)[label])


def kl(p_row: list[float], q_row: list[float]) -> float:
    p, q = softmax(p_row), softmax(q_row)
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True))


def tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.tensor(CLEAN), torch.tensor(ADV), torch.tensor(LABELS)


# -- the formulas -----------------------------------------------------------------------------
def test_pgd_at_is_cross_entropy_on_the_adversarial_examples() -> None:
    x, x_adv, y = tensors()
    out = PGDAT().loss(nn.Identity(), x, x_adv, y)
    expected = sum(cross_entropy(a, t) for a, t in zip(ADV, LABELS, strict=True)) / 2
    assert float(out.loss) == pytest.approx(expected, rel=1e-6)
    assert torch.equal(out.logits, x_adv)


def test_label_smoothing_reaches_the_cross_entropy() -> None:
    x, x_adv, y = tensors()
    eps = 0.1
    # Smoothed CE = (1 - eps) CE(y) + eps * mean_j CE(j).
    expected = (
        sum(
            (1 - eps) * cross_entropy(a, t) + eps * sum(cross_entropy(a, j) for j in range(3)) / 3
            for a, t in zip(ADV, LABELS, strict=True)
        )
        / 2
    )
    assert float(PGDAT().loss(nn.Identity(), x, x_adv, y, label_smoothing=eps).loss) == pytest.approx(
        expected
    )


def test_trades_loss_matches_its_formula() -> None:
    x, x_adv, y = tensors()
    beta = 6.0
    natural = sum(cross_entropy(c, t) for c, t in zip(CLEAN, LABELS, strict=True)) / 2
    robust = sum(kl(c, a) for c, a in zip(CLEAN, ADV, strict=True)) / 2
    out = TRADES(beta=beta).loss(nn.Identity(), x, x_adv, y)
    assert float(out.loss) == pytest.approx(natural + beta * robust, rel=1e-6)
    assert torch.equal(out.logits, x_adv)  # the window reports accuracy on the adversarial batch


def test_trades_with_beta_zero_is_clean_training() -> None:
    x, x_adv, y = tensors()
    assert float(TRADES(beta=0.0).loss(nn.Identity(), x, x_adv, y).loss) == pytest.approx(
        float(Standard().loss(nn.Identity(), x, None, y).loss)
    )


def test_mart_loss_matches_its_formula() -> None:
    x, x_adv, y = tensors()
    beta = 6.0
    total = 0.0
    for clean, adv, label in zip(CLEAN, ADV, LABELS, strict=True):
        q = softmax(adv)
        strongest_wrong = max(v for j, v in enumerate(q) if j != label)
        boosted = -math.log(q[label]) - math.log(1 - strongest_wrong)
        total += boosted + beta * kl(clean, adv) * (1 - softmax(clean)[label])
    out = MART(beta=beta).loss(nn.Identity(), x, x_adv, y)
    assert float(out.loss) == pytest.approx(total / 2, rel=1e-6)


def test_mart_weights_confidently_right_examples_less() -> None:
    """The KL term of a sample vanishes as its clean prediction becomes certain (1 - p_y -> 0)."""
    y = torch.tensor([0])
    x_adv = torch.tensor([[0.0, 2.0, 0.0]])
    unsure, sure = torch.tensor([[0.1, 0.0, 0.0]]), torch.tensor([[30.0, 0.0, 0.0]])

    # With beta = 0 only the boosted CE on x_adv is left, the same for both.
    def robust_term(x: torch.Tensor) -> float:
        return float(MART(beta=1.0).loss(nn.Identity(), x, x_adv, y).loss) - float(
            MART(beta=0.0).loss(nn.Identity(), x, x_adv, y).loss
        )

    assert robust_term(sure) < 1e-6 < robust_term(unsure)


def test_standard_training_never_calls_the_attack() -> None:
    class Exploding:
        def perturb(self, *args: Any, **kwargs: Any) -> None:
            raise AssertionError("standard training called the attack")

    x, _, y = tensors()
    objective = Standard()
    assert objective.adversarial_examples(nn.Identity(), x, y, Exploding(), 0.1) is None
    expected = sum(cross_entropy(c, t) for c, t in zip(CLEAN, LABELS, strict=True)) / 2
    assert float(objective.loss(nn.Identity(), x, None, y).loss) == pytest.approx(expected, rel=1e-6)


# -- TRADES' inner maximisation ------------------------------------------------------------------
def tiny_classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.SiLU(), nn.Flatten(), nn.Linear(64, 5)
    ).eval()


def reference_trades_attack(
    model: nn.Module, x: torch.Tensor, eps: float, step: float, steps: int, seed: int
) -> torch.Tensor:
    """The TRADES authors' loop, written out: x + 0.001 N(0, 1), then signed KL ascent, projected."""
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    x_adv = (x + 0.001 * noise).detach()
    with torch.no_grad():
        clean_probs = F.softmax(model(x), dim=1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.kl_div(F.log_softmax(model(x_adv), dim=1), clean_probs, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + step * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)
    return x_adv


def test_trades_inner_maximisation_matches_the_reference_loop() -> None:
    model = tiny_classifier()
    x = 0.2 + 0.6 * torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(1))  # no clamping at 0/1
    y = torch.randint(5, (6,), generator=torch.Generator().manual_seed(2))
    attack = PGD(eps=0.1, steps=5, rel_step_size=0.25, seed=3)
    ours = TRADES().adversarial_examples(model, x, y, attack, None).x_adv
    reference = reference_trades_attack(model, x, eps=0.1, step=0.025, steps=5, seed=3)
    # The projection rounds the ball's bounds inward by two float32 ulps of 1.0.
    assert (ours - reference).abs().max() < 1e-6
    assert (ours - x).abs().max() <= 0.1
    with torch.no_grad():
        start_kl = F.kl_div(F.log_softmax(model(x + 1e-3), 1), F.softmax(model(x), 1), reduction="sum")
        end_kl = F.kl_div(F.log_softmax(model(ours), 1), F.softmax(model(x), 1), reduction="sum")
    assert end_kl > 100 * start_kl  # the ascent found a point where the prediction moves


def test_trades_follows_the_scheduled_eps() -> None:
    model = tiny_classifier()
    x = 0.2 + 0.6 * torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y = torch.zeros(4, dtype=torch.long)
    result = TRADES().adversarial_examples(model, x, y, PGD(eps=0.2, steps=3, seed=0), 0.05)
    assert result.eps == 0.05 and (result.x_adv - x).abs().max() <= 0.05


class PhaseRecorder(nn.Module):
    """Identity that records the phase of each forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(current_phase().value)
        return x


@pytest.mark.parametrize("cls", BUILTIN_OBJECTIVES, ids=lambda c: c.name)
def test_the_inner_maximisation_is_the_attackers_and_the_loss_the_optimisers(cls: type[Objective]) -> None:
    """What keeps ``relu_smooth_grad``'s attacker/optimiser switch meaningful under every objective."""
    torch.manual_seed(0)
    recorder = PhaseRecorder()
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 16), recorder, nn.SiLU(), nn.Linear(16, 3))
    x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    result = cls().adversarial_examples(model, x, y, PGD(eps=0.1, steps=2), 0.1)
    attacker = list(recorder.seen)
    recorder.seen.clear()
    cls().loss(model, x, None if result is None else result.x_adv, y)
    assert set(attacker) <= {"attack"} and (attacker or not cls.uses_attack)
    assert recorder.seen and set(recorder.seen) == {"train"}


# -- the plugin contract ---------------------------------------------------------------------------
@pytest.mark.parametrize("cls", BUILTIN_OBJECTIVES, ids=lambda c: c.name)
def test_builtin_objectives_pass_the_conformance_check(cls: type[Objective]) -> None:
    check_objective(cls)


def test_the_conformance_check_catches_a_loss_computed_as_the_attacker() -> None:
    from sat_toolkit.phase import attack_phase

    class Sneaky(PGDAT):
        name = "sneaky"

        def loss(
            self, model: nn.Module, x: torch.Tensor, x_adv: Any, y: torch.Tensor, **kw: Any
        ) -> ObjectiveLoss:
            with attack_phase():
                return super().loss(model, x, x_adv, y, **kw)

    problems = conformance_problems("objective", Sneaky)
    assert any("inside attack_phase()" in p for p in problems), problems


def test_the_conformance_check_catches_a_bare_tensor_loss() -> None:
    class Bare(PGDAT):
        name = "bare"

        def loss(self, model: nn.Module, x: torch.Tensor, x_adv: Any, y: torch.Tensor, **kw: Any) -> Any:
            return F.cross_entropy(model(x_adv), y)

    problems = conformance_problems("objective", Bare)
    assert len(problems) == 1 and "ObjectiveLoss" in problems[0], problems


def test_the_conformance_check_names_what_a_wrong_loss_returned() -> None:
    class Pair(PGDAT):
        name = "pair"

        def loss(self, model: nn.Module, x: torch.Tensor, x_adv: Any, y: torch.Tensor, **kw: Any) -> Any:
            logits = model(x_adv)
            return F.cross_entropy(logits, y), logits  # a tuple, not an ObjectiveLoss

    problems = conformance_problems("objective", Pair)
    assert problems == [
        "loss(...) returned tuple; it must return sat_toolkit.objectives.ObjectiveLoss(loss=<scalar tensor>, "
        "logits=<[batch, classes] tensor>)"
    ]


def test_the_contract_needs_both_methods_and_defaults() -> None:
    class NoLoss:
        name = "no_loss"

        def adversarial_examples(self, model: Any, x: Any, y: Any, attack: Any, eps: Any) -> None:
            return None

    class Required(PGDAT):
        name = "required"

        def __init__(self, *, weight: float) -> None:
            self.weight = weight

    assert any("loss(model, x, x_adv, y" in p for p in contract_problems("objective", NoLoss))
    assert any("'weight' has no default" in p for p in contract_problems("objective", Required))
    assert contract_problems("objective", TRADES) == []


# -- the recipe ---------------------------------------------------------------------------------------
def test_the_default_objective_is_pgd_at_and_is_written_into_the_resolved_recipe() -> None:
    recipe = load_recipe(QUICKSTART)
    assert recipe.objective.to_dict() == {"name": "pgd_at"}
    assert "[objective]" in recipe.to_toml()


def test_set_objective_switches_it_and_its_parameters_are_validated() -> None:
    assert load_recipe(QUICKSTART, ["objective=trades"]).objective.to_dict() == {
        "name": "trades",
        "beta": 6.0,
    }
    assert load_recipe(QUICKSTART, ["objective.name=mart", "objective.beta=2"]).objective.params == {
        "beta": 2.0
    }
    with pytest.raises(
        RecipeError, match=r"objective.bta: unknown parameter of objective 'trades'; did you mean 'beta'"
    ):
        load_recipe(QUICKSTART, ["objective=trades", "objective.bta=1"])
    with pytest.raises(RecipeError, match=r"objective.beta: must be >= 0, got -1.0"):
        load_recipe(QUICKSTART, ["objective=mart", "objective.beta=-1"])
    with pytest.raises(
        RecipeError, match=r"objective.name: unknown objective 'trade'. Did you mean 'trades'"
    ):
        load_recipe(QUICKSTART, ["objective=trade"])
    # a parameter without a name: the message names the parameter the user wrote
    with pytest.raises(RecipeError) as caught:
        load_recipe(QUICKSTART, ["objective.beta=1"])
    message = str(caught.value)
    assert "objective.name: required: which objective to use (installed: mart, pgd_at" in message
    assert message.endswith(
        "; the table sets beta but names no objective (a recipe without the objective table uses 'pgd_at')"
    )


def test_trades_refuses_a_training_attack_without_steps() -> None:
    with pytest.raises(
        RecipeError, match=r"objective.name: objective 'trades' runs PGD on its KL loss.*'square'"
    ):
        load_recipe(QUICKSTART, ["objective=trades", 'attack.train={name = "square", eps = 0.1}'])
    assert load_recipe(QUICKSTART, ["objective=mart", 'attack.train={name = "square", eps = 0.1}'])


@pytest.mark.parametrize("name", ["trades", "mart"])
def test_the_shipped_fashion_mnist_recipes_use_their_objective(name: str) -> None:
    recipe = load_recipe(REPO / "recipes" / f"fashion_mnist_{name}.toml")
    assert recipe.objective.name == name and recipe.objective.params["beta"] == 6.0
    assert recipe.attack.train.params["steps"] == 10  # the papers' inner budget
    silu = load_recipe(REPO / "recipes" / "fashion_mnist_silu.toml")
    assert recipe.data == silu.data and recipe.model == silu.model and recipe.attack.eval == silu.attack.eval


def test_plugins_lists_the_four_objectives_from_the_packages_own_entry_point() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sat_toolkit", "plugins", "--kind", "objective", "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    rows = json.loads(out.stdout)
    assert sorted(r["name"] for r in rows) == ["mart", "pgd_at", "standard", "trades"]
    assert {r["distribution"] for r in rows} == {"smooth-adversarial-training"}
    assert {r["status"] for r in rows} == {"ok"}


def test_a_study_can_cross_activations_with_objectives(tmp_path: Path) -> None:
    from sat_toolkit.study import load_study, plan

    base = REPO / "recipes" / "studies" / "fashion_mnist_activations.toml"
    text = base.read_text(encoding="utf-8").replace('base = "../', f'base = "{REPO / "recipes"}/')
    text += '\n[[study.axis]]\nname = "objective"\n[study.axis.values]\n'
    text += 'pgd_at = ["objective=pgd_at"]\ntrades = ["objective=trades"]\nmart = ["objective=mart"]\n'
    path = tmp_path / "study.toml"
    path.write_text(text, encoding="utf-8")
    planned = plan(load_study(path, output_dir=tmp_path / "out"))
    pairs = {(p.recipe.activation.name, p.recipe.objective.name) for p in planned}
    assert {("relu", "trades"), ("silu", "mart"), ("silu", "pgd_at")} <= pairs


# -- a run with each ----------------------------------------------------------------------------------
TINY = [
    "data.limit_train=256",
    "train.epochs=1",
    "train.validate_every_epochs=0",
    "logging.tensorboard=false",
    'model={name = "small_cnn", width = 8, depth = 2, convs_per_stage = 1}',
    'attack.eval={samples = 64, seed = 0, pgd5 = {name = "pgd", steps = 5}}',
]


@pytest.mark.parametrize("name", ["pgd_at", "trades", "mart", "standard"])
def test_a_digits_run_finishes_with_each_objective(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sat_toolkit.engine.trainer import train

    calls = {"train_attack": 0}
    original = PGD.perturb

    def counting(self: PGD, *args: Any, **kwargs: Any) -> Any:
        if self.steps == 1:  # the quickstart's training attack is PGD-1; the evaluation's is PGD-5
            calls["train_attack"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PGD, "perturb", counting)
    recipe = load_recipe(
        QUICKSTART, [*TINY, f"objective={name}", f"run.output_dir={json.dumps(str(tmp_path))}"]
    )
    summary = train(recipe, show_progress=False)
    metrics = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert math.isfinite(metrics["final_train_loss"]) and metrics["steps"] == 4
    assert 0.0 <= metrics["evaluation"]["robust_accuracy"] <= metrics["evaluation"]["clean_accuracy"]
    assert {"kind": "objective", "name": name} in [
        {k: e[k] for k in ("kind", "name")} for e in metrics["plugins"]
    ]
    assert f'name = "{name}"' in (tmp_path / "recipe.toml").read_text(encoding="utf-8")
    assert read_sat_config(tmp_path / "model.safetensors")["objective"]["name"] == name
    # PGD-AT and MART ask the training attack every step; TRADES runs its own KL ascent;
    # standard training attacks nothing.
    assert calls["train_attack"] == {"pgd_at": 4, "mart": 4, "trades": 0, "standard": 0}[name]
    assert summary.metrics["steps"] == 4


PAIR_OBJECTIVE = """
import torch.nn.functional as F
from sat_toolkit.objectives import PGDAT
from sat_toolkit.plugins import hookimpl


class Pair(PGDAT):
    name = "pair"
    description = "returns (loss, logits) instead of an ObjectiveLoss"

    def loss(self, model, x, x_adv, y, *, label_smoothing=0.0):
        logits = model(x_adv)
        return F.cross_entropy(logits, y), logits


@hookimpl
def sat_register_objectives():
    return [Pair]
"""


def test_a_plugin_objective_returning_the_wrong_thing_stops_the_run_in_one_line(
    tmp_path: Path, fake_distribution: Any
) -> None:
    """Before: AttributeError: 'tuple' object has no attribute 'loss', a traceback from the trainer."""
    from click.testing import CliRunner

    from sat_toolkit.cli import cli

    fake_distribution("pair-objective", PAIR_OBJECTIVE)
    out = tmp_path / "run"
    args = ["run", str(QUICKSTART), *(f"--set={o}" for o in TINY), "--set=objective=pair"]
    result = CliRunner().invoke(cli, [*args, f"--set=run.output_dir={json.dumps(str(out))}"])
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.output.strip().splitlines()[-1] == (
        "Error: objective 'pair': loss(...) returned tuple; it must return "
        "sat_toolkit.objectives.ObjectiveLoss(loss=<scalar tensor>, logits=<[batch, classes] tensor>)"
    )
    assert "Traceback" not in result.output and not (out / "model.safetensors").exists()
