"""ReLU forward with a smooth backward, switched per phase (PAPER.md, Result 1)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from sat_toolkit.activations import SmoothGradientReLU, create_activation
from sat_toolkit.errors import SatError
from sat_toolkit.phase import Phase, attack_phase, current_phase, train_phase, true_gradients

PHASES = [(True, True), (True, False), (False, True), (False, False)]


def _grad(module: nn.Module, x: torch.Tensor, in_attack: bool) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = x.detach().clone().requires_grad_(True)
    upstream = torch.linspace(0.5, 1.5, x.numel(), dtype=x.dtype).reshape(x.shape)
    if in_attack:
        with attack_phase():
            y = module(leaf)
            (g,) = torch.autograd.grad(y, leaf, upstream)
    else:
        y = module(leaf)
        (g,) = torch.autograd.grad(y, leaf, upstream)
    return y, g / upstream


@pytest.fixture
def x() -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    values = torch.randn(4, 257, generator=generator) * 3
    values[0, :5] = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 40.0])
    return values


@pytest.mark.parametrize(("attacker", "optimizer"), PHASES)
@pytest.mark.parametrize("in_attack", [True, False])
def test_forward_is_relu_bit_for_bit(x, attacker, optimizer, in_attack) -> None:
    module = SmoothGradientReLU(attacker=attacker, optimizer=optimizer)
    y, _ = _grad(module, x, in_attack)
    assert torch.equal(y, torch.relu(x))
    with torch.no_grad():
        assert torch.equal(module(x), torch.relu(x))


@pytest.mark.parametrize(("attacker", "optimizer"), PHASES)
@pytest.mark.parametrize("in_attack", [True, False])
def test_backward_uses_smooth_gradient_only_in_enabled_phase(x, attacker, optimizer, in_attack) -> None:
    module = SmoothGradientReLU(attacker=attacker, optimizer=optimizer)
    _, g = _grad(module, x, in_attack)
    smooth_enabled = attacker if in_attack else optimizer
    if smooth_enabled:
        expected = torch.sigmoid(10 * x)  # parametric softplus, alpha = 10
    else:
        expected = (x > 0).to(x.dtype)  # ReLU's own gradient, 0 at x = 0
    torch.testing.assert_close(g, expected, rtol=1e-6, atol=1e-7)


def test_any_registered_smooth_activation_can_supply_the_gradient(x) -> None:
    module = SmoothGradientReLU(smooth="silu")
    _, g = _grad(module, x.double(), in_attack=True)
    xd = x.double()
    expected = torch.sigmoid(xd) * (1 + xd * (1 - torch.sigmoid(xd)))
    torch.testing.assert_close(g, expected)
    assert torch.equal(module(xd), torch.relu(xd))


def test_custom_alpha_and_generic_path_agree(x) -> None:
    fast = SmoothGradientReLU(smooth_params={"alpha": 3.0})
    generic = SmoothGradientReLU(smooth="softplus")
    _, g_fast = _grad(fast, x, in_attack=False)
    _, g_generic = _grad(generic, x, in_attack=False)
    torch.testing.assert_close(g_fast, torch.sigmoid(3 * x))
    torch.testing.assert_close(g_generic, torch.sigmoid(x))


def test_non_smooth_gradient_source_is_rejected() -> None:
    with pytest.raises(SatError, match="not a smooth activation"):
        create_activation({"name": "relu_smooth_grad", "smooth": "relu"})


def test_phase_is_fixed_when_the_graph_is_built() -> None:
    """A graph built in the attack phase back-propagates the attacker's gradient even if
    backward is called after leaving the context, and vice versa."""
    module = SmoothGradientReLU(attacker=True, optimizer=False)
    x = torch.tensor([-0.1, 0.2], requires_grad=True)
    with attack_phase():
        y_attack = module(x)
    y_train = module(x)
    (g_attack,) = torch.autograd.grad(y_attack.sum(), x)
    with attack_phase():
        (g_train,) = torch.autograd.grad(y_train.sum(), x)
    torch.testing.assert_close(g_attack, torch.sigmoid(10 * x.detach()))
    torch.testing.assert_close(g_train, torch.tensor([0.0, 1.0]))


def test_attack_phase_is_restored_after_an_exception() -> None:
    assert current_phase() is Phase.TRAIN
    with pytest.raises(RuntimeError), attack_phase():
        assert current_phase() is Phase.ATTACK
        raise RuntimeError("attack failed")
    assert current_phase() is Phase.TRAIN
    with attack_phase():
        with train_phase():
            assert current_phase() is Phase.TRAIN
        assert current_phase() is Phase.ATTACK


def test_attack_phase_does_not_leak_across_threads() -> None:
    seen: dict[str, Phase] = {}
    inside = threading.Event()
    release = threading.Event()

    def attacker() -> None:
        with attack_phase():
            seen["attacker"] = current_phase()
            inside.set()
            release.wait(5)

    def trainer() -> None:
        inside.wait(5)
        seen["trainer"] = current_phase()
        release.set()

    threads = [threading.Thread(target=attacker), threading.Thread(target=trainer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen == {"attacker": Phase.ATTACK, "trainer": Phase.TRAIN}


def test_surrogate_inside_a_network_matches_a_hand_built_smooth_backward() -> None:
    """Whole-network check: the optimiser's parameter gradient through the surrogate equals
    the gradient computed with an explicit straight-through construction."""
    torch.manual_seed(0)
    linear1, linear2 = nn.Linear(6, 16).double(), nn.Linear(16, 3).double()
    x = torch.randn(8, 6, dtype=torch.float64)
    net = nn.Sequential(linear1, SmoothGradientReLU(attacker=False, optimizer=True), linear2)
    loss = net(x).pow(2).sum()
    grads = torch.autograd.grad(loss, list(net.parameters()))

    h = linear1(x)
    soft = nn.functional.softplus(h, beta=10)
    straight_through = torch.relu(h).detach() + soft - soft.detach()  # relu value, softplus grad
    reference = torch.autograd.grad(linear2(straight_through).pow(2).sum(), list(net.parameters()))
    for ours, theirs in zip(grads, reference, strict=True):
        torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("in_attack", [True, False])
def test_true_gradients_switches_every_surrogate_off_and_back(x, in_attack) -> None:
    module = SmoothGradientReLU(attacker=True, optimizer=True)
    with true_gradients():
        y, g = _grad(module, x, in_attack)
    assert torch.equal(y, torch.relu(x))
    torch.testing.assert_close(g, (x > 0).to(x.dtype), rtol=0, atol=0)
    _, g_after = _grad(module, x, in_attack)
    torch.testing.assert_close(g_after, torch.sigmoid(10 * x), rtol=1e-6, atol=1e-7)


def _dead_unit_model(attacker: bool) -> nn.Module:
    """1 input -> ReLU unit -> 2 logits. At x = 0.5 the unit is dead (pre-activation -0.05),
    so ReLU's gradient is exactly zero; the surrogate's is 10 * sigmoid(-0.5) > 0, and one
    FGSM step of 0.1 along it (to x = 0.6) makes logit 0 = 0.5 beat logit 1 = 0.2."""
    first, second = nn.Linear(1, 1), nn.Linear(1, 2)
    with torch.no_grad():
        first.weight.fill_(1.0)
        first.bias.fill_(-0.55)
        second.weight.copy_(torch.tensor([[10.0], [0.0]]))
        second.bias.copy_(torch.tensor([0.0, 0.2]))
    return nn.Sequential(first, SmoothGradientReLU(attacker=attacker, optimizer=False), second)


def test_evaluation_attacks_with_the_true_gradient_and_again_with_the_attackers_surrogate() -> None:
    from sat_toolkit.attacks import create_attack
    from sat_toolkit.evaluation import evaluate_robustness

    x, y = torch.tensor([[0.5]]), torch.tensor([1])
    attacks = {"fgsm": create_attack({"name": "fgsm", "eps": 0.1})}
    report = evaluate_robustness(_dead_unit_model(attacker=True), x, y, attacks)
    assert report.clean_accuracy == 1.0
    assert list(report.attacks) == ["fgsm", "fgsm/surrogate_grad"]
    # True gradient: exactly zero, so FGSM cannot move; the surrogate finds the flip.
    assert report.attacks["fgsm"].robust_accuracy == 1.0
    assert report.attacks["fgsm"].zero_grad_fraction == 1.0
    assert report.attacks["fgsm/surrogate_grad"].robust_accuracy == 0.0
    assert report.robust_accuracy == 0.0  # the worst case covers both

    # A surrogate for the optimiser only never reaches an attack: one run, true gradient.
    report = evaluate_robustness(_dead_unit_model(attacker=False), x, y, attacks)
    assert list(report.attacks) == ["fgsm"]
    assert report.robust_accuracy == 1.0


@pytest.mark.parametrize(
    ("nested", "problem"),
    [
        ('smooth = "nonexistent"', "activation.smooth: unknown activation 'nonexistent'"),
        ('smooth = "relu"', "activation.smooth: 'relu' is not a smooth activation"),
        (
            'smooth = "parametric_softplus", smooth_params = {beta = 2}',
            "activation.smooth_params: activation 'parametric_softplus' has no parameter 'beta'",
        ),
    ],
)
def test_the_nested_smooth_activation_is_checked_with_the_recipe(nested: str, problem: str) -> None:
    """A misspelt or uninstalled `smooth` passed `recipe validate` and stopped the run later."""
    from sat_toolkit.recipe import RecipeError, load_recipe

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml"
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe, [f'activation={{name = "relu_smooth_grad", {nested}}}'])
    assert str(caught.value.problems[0]).startswith(problem)
