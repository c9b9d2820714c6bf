"""Tests of the attack library: exact answers where they are known, real numbers elsewhere."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sat_toolkit.attacks import (
    APGD,
    APGDCE,
    APGDDLR,
    APGDT,
    FGSM,
    INITS,
    LOSSES,
    PGD,
    PROJECTIONS,
    STEP_RULES,
    TARGETS,
    Ensemble,
    Loss,
    Square,
    apgd_checkpoints,
    attack_names,
    create_attack,
    p_selection,
    parse_fraction,
    preserve_model_state,
)
from sat_toolkit.attacks.losses import dlr, dlr_targeted, margin
from sat_toolkit.attacks.projections import linf_bounds
from sat_toolkit.attacks.square import meta_pattern, pseudo_gaussian
from sat_toolkit.errors import SatError
from sat_toolkit.phase import Phase, current_phase
from sat_toolkit.plugins import get_plugin_host

BUILTIN_NAMES = ["apgd", "apgd_ce", "apgd_dlr", "apgd_t", "ensemble", "fab_t", "fgsm", "pgd", "square"]


# --------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """These tensors are tiny: intra-op threads only add synchronisation (badly so on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn's 8x8 digits as [N, 1, 8, 8] images in [0, 1] (pixel values are k/16)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return x, torch.tensor(data.target, dtype=torch.long)


@pytest.fixture(scope="session")
def digits_model(digits: tuple[torch.Tensor, torch.Tensor]) -> nn.Module:
    """A small MLP trained for well under a second on the first 1400 digits (~95% test accuracy)."""
    torch.manual_seed(0)
    x, y = digits
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.SiLU(), nn.Linear(48, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        F.cross_entropy(model(x[:1400]), y[:1400]).backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.grad = None
    return model


@pytest.fixture(scope="session")
def test_batch(digits: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = digits
    return x[1400:1656], y[1400:1656]


def fooled(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x_adv).argmax(1) != y


class BinaryLinear(nn.Module):
    """logits = [0, w.x + b]: the worst-case perturbation is known in closed form."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.linear = nn.Linear(w.numel(), 1)
        with torch.no_grad():
            self.linear.weight.copy_(w.view(1, -1))
            self.linear.bias.fill_(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = self.linear(x.flatten(1))
        return torch.cat([torch.zeros_like(score), score], dim=1)


# --------------------------------------------------------------------------------------
# parameters, registries, plugin host
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [("4/255", 4 / 255), (" 8 / 255 ", 8 / 255), (0.25, 0.25), (1, 1.0), ("0.5", 0.5), (0, 0.0)],
)
def test_parse_fraction_accepts(raw: object, expected: float) -> None:
    assert parse_fraction(raw, "eps") == pytest.approx(expected, rel=0, abs=1e-15)


@pytest.mark.parametrize(
    "raw", [-0.1, "-4/255", "abc", "1/0", "4//255", True, None, float("nan"), math.inf, [1]]
)
def test_parse_fraction_rejects_with_parameter_name(raw: object) -> None:
    with pytest.raises(SatError, match="'step_size'") as info:
        parse_fraction(raw, "step_size")
    assert info.value.exit_code == 2
    assert "\n" not in info.value.format_message()


@pytest.mark.parametrize(("name", "loss", "other"), [("apgd_ce", "ce", "dlr"), ("apgd_dlr", "dlr", "ce")])
def test_autoattack_members_keep_their_loss(name: str, loss: str, other: str) -> None:
    assert create_attack(name).loss == loss
    assert create_attack({"name": name, "loss": loss}).loss == loss
    with pytest.raises(SatError, match=f"attack '{name}' always uses loss '{loss}'.*'apgd'"):
        create_attack({"name": name, "loss": other})
    assert create_attack("apgd_t").loss == "dlr_targeted"
    assert create_attack({"name": "apgd", "loss": other}).loss == other


def test_registries_hold_the_documented_parts() -> None:
    assert {"ce", "ce_targeted", "dlr", "dlr_targeted", "margin", "margin_targeted"} <= set(LOSSES.names())
    assert {"sign", "l2"} <= set(STEP_RULES.names())
    assert {"zero", "uniform", "mixed"} <= set(INITS.names())
    assert {"linf", "l2"} <= set(PROJECTIONS.names())
    assert {"random", "least_likely"} <= set(TARGETS.names())
    with pytest.raises(SatError, match="Did you mean 'dlr'"):
        LOSSES.get("drl")


def test_plugin_host_finds_every_attack_by_name() -> None:
    host = get_plugin_host()
    for name in BUILTIN_NAMES:
        cls = host.get("attack", name)
        assert cls.name == name
        assert cls.description and "\n" not in cls.description
    assert set(BUILTIN_NAMES) <= set(attack_names())


def test_recipe_table_maps_onto_an_attack() -> None:
    attack = create_attack({"name": "pgd", "loss": "dlr", "eps": "4/255", "steps": 3})
    assert isinstance(attack, PGD) and attack.loss == "dlr" and attack.eps == 4 / 255 and attack.steps == 3
    with pytest.raises(SatError, match="no parameter 'epsilon'"):
        create_attack({"name": "pgd", "epsilon": 0.1})
    with pytest.raises(SatError, match=r"attack 'fgsm': eps must be >= 0, got -0\.0156"):
        create_attack({"name": "fgsm", "eps": "-4/255"})
    with pytest.raises(SatError, match="unknown attack 'pgdd'"):
        create_attack("pgdd")
    assert create_attack({"name": "square", "norm": "l2"}).norm == "l2"
    assert create_attack("apgd_t").hparams()["n_target_classes"] == 9


def test_a_plugin_loss_is_usable_by_name(digits_model: nn.Module, test_batch) -> None:
    """A new loss plugs into PGD without copying the attack."""
    calls = []

    def neg_true_logit(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        calls.append(logits.shape)
        return -logits.gather(1, y[:, None]).squeeze(1)

    LOSSES.register("test_neg_true_logit", Loss(neg_true_logit))
    try:
        x, y = test_batch
        attack = create_attack({"name": "pgd", "loss": "test_neg_true_logit", "eps": 0.1, "steps": 3})
        x_adv = attack(digits_model, x[:32], y[:32])
        assert len(calls) == 3
        with torch.no_grad():
            before = digits_model(x[:32]).gather(1, y[:32, None])
            after = digits_model(x_adv).gather(1, y[:32, None])
        assert (after < before).float().mean() > 0.9
    finally:
        LOSSES._items.pop("test_neg_true_logit")


def test_losses_on_hand_computed_logits() -> None:
    z = torch.tensor([[3.0, 1.0, 0.0, -1.0]])
    y, t = torch.tensor([0]), torch.tensor([2])
    assert margin(z, y) == pytest.approx(-2.0)
    assert dlr(z, y) == pytest.approx(-2.0 / 3.0)
    assert dlr_targeted(z, y, t) == pytest.approx(-3.0 / 3.5)
    # DLR is invariant to shifting and positive scaling of the logits.
    zz = torch.randn(5, 10)
    yy = torch.randint(0, 10, (5,))
    torch.testing.assert_close(dlr(zz * 7.0 + 3.0, yy), dlr(zz, yy))


def test_apgd_halves_its_step_at_every_checkpoint_when_the_loss_stalls(digits_model, test_batch) -> None:
    """With a piecewise-constant model the loss never increases: condition 1 fires each time."""
    x, y = test_batch
    masked = nn.Sequential(_Round(), digits_model)
    result = APGDCE(eps=0.1, steps=100, seed=0).perturb(masked, x[:32], y[:32])
    halvings = len([w for w in apgd_checkpoints(100) if w < 99])  # no decision after the last step
    assert halvings == 7
    torch.testing.assert_close(result.info["step_size"], torch.full((32,), 2 * 0.1 / 2**halvings))
    # On a linear model with a tiny first step the loss rises at every step (no pixel has
    # reached its bound yet), so neither condition fires and the step is never halved.
    model, x_lin, y_lin = _linear_problem(seed=0, low=0.0, high=1.0, n=64)
    result = APGDCE(eps=0.04, steps=50, initial_step=0.01, seed=0).perturb(model, x_lin, y_lin)
    torch.testing.assert_close(result.info["step_size"], torch.full((64,), 0.01 * 0.04))


def test_apgd_checkpoints_and_square_schedule() -> None:
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert apgd_checkpoints(10) == [3, 5, 6, 7, 8, 9, 10]
    assert p_selection(0.8, 0, 10000) == 0.8
    assert p_selection(0.8, 11, 10000) == 0.4
    assert p_selection(0.8, 1, 100) == 0.2  # rescaled to 10 000 queries: iteration 100
    assert p_selection(0.8, 9999, 10000) == 0.8 / 512


# --------------------------------------------------------------------------------------
# exactness on a linear classifier
# --------------------------------------------------------------------------------------
def _linear_problem(
    seed: int, low: float, high: float, n: int = 300
) -> tuple[BinaryLinear, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(64, generator=gen) / 4.0
    x = low + (high - low) * torch.rand(n, 1, 8, 8, generator=gen)
    if low == 0.0:  # put exact box edges in, so clipping matters
        edge = torch.rand(x.shape, generator=gen)
        x = torch.where(edge < 0.15, torch.zeros_like(x), torch.where(edge > 0.85, torch.ones_like(x), x))
    b = float(-(x.flatten(1) @ w).median())
    y = ((x.flatten(1) @ w + b) > 0).long()
    return BinaryLinear(w, b), x, y


def _linf_worst_case(w: torch.Tensor, b: float, x: torch.Tensor, y: torch.Tensor, eps: float):
    """Independent closed form: move every pixel against the class by eps, clipped to [0, 1]."""
    flat = x.flatten(1).double()
    down, up = (flat - eps).clamp(min=0), (flat + eps).clamp(max=1)
    toward_zero = torch.where(w.double() > 0, down, up)  # minimises w.x
    toward_one = torch.where(w.double() > 0, up, down)  # maximises w.x
    worst = torch.where(y[:, None] == 1, toward_zero, toward_one)
    score = worst @ w.double() + b
    robust_margin = torch.where(y == 1, score, -score)
    return worst.view_as(x), robust_margin


@pytest.mark.parametrize(
    "attack",
    [
        FGSM(eps=0.04),
        PGD(eps=0.04, steps=10, rel_step_size=0.25),
        PGD(eps=0.04, steps=10, rel_step_size=0.3, random_start_fraction=1.0, seed=3),
        PGD(eps=0.04, steps=10, loss="margin", restarts=2, random_start_fraction=0.5, seed=1),
        APGDCE(eps=0.04, steps=10, seed=0),
    ],
    ids=["fgsm", "pgd10", "pgd10-random-start", "pgd-margin-restarts", "apgd_ce"],
)
def test_linf_attacks_find_the_closed_form_worst_case(attack) -> None:
    eps = 0.04
    model, x, y = _linear_problem(seed=0, low=0.0, high=1.0)
    w, b = model.linear.weight.detach().view(-1), model.linear.bias.item()
    worst, robust_margin = _linf_worst_case(w, b, x, y, eps)
    keep = robust_margin.abs() > 1e-3  # no ties: the analytic answer must be unambiguous
    x, y, worst, robust_margin = x[keep], y[keep], worst[keep], robust_margin[keep]
    analytic_robust_acc = (robust_margin > 0).double().mean().item()
    assert 0.2 < analytic_robust_acc < 0.8  # a problem where the attack matters

    result = attack.perturb(model, x, y)
    robust = ~fooled(model, result.x_adv, y)
    assert robust.double().mean().item() == analytic_robust_acc
    # APGD returns the first iterate that fools the model, not the worst one; where nothing
    # fools it, it returns the highest-loss point found, which must be the closed form.
    compare = robust if isinstance(attack, APGDCE) else torch.ones_like(robust)
    torch.testing.assert_close(result.x_adv[compare].double(), worst[compare], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "attack",
    [
        FGSM(eps=0.1, norm="l2"),
        PGD(eps=0.1, norm="l2", steps=6, rel_step_size=0.5),
        PGD(eps=0.1, norm="l2", steps=20, rel_step_size=1.0, random_start_fraction=1.0, seed=0),
    ],
    ids=["fgm-l2", "pgd-l2", "pgd-l2-random-start"],
)
def test_l2_attacks_find_the_closed_form_worst_case(attack) -> None:
    eps = 0.1
    model, x, y = _linear_problem(seed=1, low=0.3, high=0.7)
    w, b = model.linear.weight.detach().view(-1).double(), model.linear.bias.item()
    sign = torch.where(y == 1, -1.0, 1.0).double()
    worst = x.flatten(1).double() + sign[:, None] * eps * w / w.norm()
    assert worst.min() > 0 and worst.max() < 1  # data far enough from the box edges
    robust_margin = torch.where(y == 1, 1.0, -1.0).double() * (x.flatten(1).double() @ w + b) - eps * w.norm()
    keep = robust_margin.abs() > 1e-3
    x, y, worst, robust_margin = x[keep], y[keep], worst[keep], robust_margin[keep]
    analytic_robust_acc = (robust_margin > 0).double().mean().item()
    assert 0.2 < analytic_robust_acc < 0.8

    result = attack.perturb(model, x, y)
    torch.testing.assert_close(result.x_adv.double().flatten(1), worst, rtol=0, atol=1e-5)
    robust_acc = (~fooled(model, result.x_adv, y)).double().mean().item()
    assert robust_acc == analytic_robust_acc


# --------------------------------------------------------------------------------------
# bounds, exactly
# --------------------------------------------------------------------------------------
def _all_attacks(eps: float, norm: str) -> list:
    attacks = [
        FGSM(eps=eps, norm=norm, random_start_fraction=0.5, step_size=2 * eps, seed=0),
        PGD(eps=eps, norm=norm, steps=5, rel_step_size=0.7, random_start_fraction=0.8, seed=0),
        PGD(eps=eps, norm=norm, steps=3, target="least_likely", loss="dlr", restarts=2, seed=0),
        APGDCE(eps=eps, norm=norm, steps=8, restarts=2, seed=0),
        APGDDLR(eps=eps, norm=norm, steps=8, seed=0),
        APGDT(eps=eps, norm=norm, steps=5, n_target_classes=2, seed=0),
    ]
    if norm == "linf":
        attacks += [
            Square(eps=eps, queries=60, seed=0),
            Ensemble(eps=eps, attacks=["fgsm", {"name": "square", "queries": 20}], seed=0),
        ]
    return attacks


@pytest.mark.parametrize("eps", [8 / 255, 0.3, 1.5])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_every_attack_stays_inside_the_ball_and_the_box_exactly(digits_model, test_batch, eps, norm) -> None:
    x, y = test_batch
    x, y = x[:64], y[:64]
    assert (x == 0).any() and (x == 1).any()  # digits touch both box edges
    for attack in _all_attacks(eps, norm):
        x_adv = attack(digits_model, x, y)
        assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
        assert bool((x_adv >= 0).all()) and bool((x_adv <= 1).all()), attack
        if norm == "linf":
            assert bool(((x_adv - x).abs() <= eps).all()), attack
            assert bool(((x_adv.double() - x.double()).abs() <= eps).all()), attack
        else:
            assert bool(((x_adv - x).flatten(1).norm(dim=1) <= eps).all()), attack
            assert bool(((x_adv.double() - x.double()).flatten(1).norm(dim=1) <= eps).all()), attack


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_linf_bounds_are_inside_the_exact_ball_and_tight(dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4096, generator=gen)
    x[:256] = torch.arange(256) / 255.0  # 8-bit pixel values
    x[256:300], x[300:344] = 0.0, 1.0
    x = x.to(dtype)
    xd = x.double()
    for eps in (0.0, 1e-9, 1 / 255, 4 / 255, 8 / 255, 1 / 3, 0.5, 2.0):
        lo, hi = linf_bounds(x, eps)
        assert lo.dtype == hi.dtype == dtype
        assert bool((lo <= x).all() and (x <= hi).all() and (lo >= 0).all() and (hi <= 1).all())
        assert bool((hi.double() - xd <= eps).all() and (xd - lo.double() <= eps).all()), eps
        slack = 3e-7 if dtype != torch.bfloat16 else 2 * 2.0**-8  # what inward rounding may cost
        assert bool((hi.double() >= (xd + eps).clamp(max=1) - slack).all()), eps
        assert bool((lo.double() <= (xd - eps).clamp(min=0) + slack).all()), eps
    # Why the care: the naive float32 bound leaves the ball for many pixels.
    naive = (x.float() + 4 / 255).clamp(max=1)
    assert bool((naive.double() - x.double() > 4 / 255).any())


def test_eps_override_per_call(digits_model, test_batch) -> None:
    x, y = test_batch
    attack = PGD(eps=8 / 255, steps=2)
    assert torch.equal(attack(digits_model, x, y, eps=0), x)
    x_adv = attack(digits_model, x, y, eps=2 / 255)
    delta = (x_adv.double() - x.double()).abs()
    assert bool((delta <= 2 / 255).all()) and delta.max() > 1 / 255
    assert attack.resolved_step_size(2 / 255) == pytest.approx(2.5 / 2 * 2 / 255)  # follows the schedule
    assert PGD(eps=0.1, steps=1).resolved_step_size(0.05) == 0.05  # PGD-1: step = eps


def test_inputs_outside_the_unit_box_are_refused(digits_model, test_batch) -> None:
    x, y = test_batch
    with pytest.raises(SatError, match="normalisation belongs inside the model"):
        FGSM(eps=0.1)(digits_model, (x - 0.5) / 0.25, y)


# --------------------------------------------------------------------------------------
# independent PGD
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_plugin_pgd_matches_a_hand_written_pgd(digits_model, test_batch, norm) -> None:
    x, y = test_batch
    eps, step, steps = (0.1, 0.02, 7) if norm == "linf" else (1.0, 0.25, 7)

    def project(z: torch.Tensor) -> torch.Tensor:
        if norm == "linf":
            return torch.min(torch.max(z, x - eps), x + eps).clamp(0, 1)
        d = z - x
        n = d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        return (x + d * torch.clamp(eps / n, max=1.0)).clamp(0, 1)

    torch.manual_seed(123)
    if norm == "linf":
        x_ref = project(x + torch.empty_like(x).uniform_(-eps, eps))
    else:
        direction = torch.randn(x.shape)
        direction = direction / direction.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        radius = torch.rand(x.shape[0]).pow(1.0 / 64) * eps
        x_ref = project(x + direction * radius.view(-1, 1, 1, 1))
    for _ in range(steps):
        x_ref.requires_grad_(True)
        loss = F.cross_entropy(digits_model(x_ref), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, x_ref)
        if norm == "linf":
            move = step * g.sign()
        else:
            move = step * g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        x_ref = project(x_ref.detach() + move)

    torch.manual_seed(123)
    attack = PGD(eps=eps, steps=steps, step_size=step, norm=norm, random_start_fraction=1.0)
    x_adv = attack(digits_model, x, y)
    torch.testing.assert_close(x_adv, x_ref, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------
# strength ordering on a trained model
# --------------------------------------------------------------------------------------
EPS = 0.08


def test_more_steps_and_apgd_are_at_least_as_strong(digits_model, test_batch) -> None:
    x, y = test_batch
    n_fgsm = fooled(digits_model, FGSM(eps=EPS)(digits_model, x, y), y).sum().item()
    n_pgd = fooled(digits_model, PGD(eps=EPS, steps=20)(digits_model, x, y), y).sum().item()
    assert n_pgd >= n_fgsm
    assert n_pgd > fooled(digits_model, x, y).sum().item()  # and the attack does something
    pgd_counts, apgd_counts = [], []
    for seed in range(3):
        pgd = PGD(eps=EPS, steps=20, random_start_fraction=1.0, seed=seed)
        apgd = APGDCE(eps=EPS, steps=20, seed=seed)
        pgd_counts.append(fooled(digits_model, pgd(digits_model, x, y), y).sum().item())
        result = apgd.perturb(digits_model, x, y)
        apgd_counts.append(fooled(digits_model, result.x_adv, y).sum().item())
        assert torch.equal(result.success, fooled(digits_model, result.x_adv, y))  # success is honest
    assert sum(apgd_counts) >= sum(pgd_counts)


def test_ensemble_is_at_least_as_strong_as_each_member(digits_model, test_batch) -> None:
    x, y = test_batch
    members = [
        {"name": "fgsm"},
        {"name": "pgd", "steps": 10},
        {"name": "apgd_dlr", "steps": 10},
        {"name": "square", "queries": 100},
    ]
    counts = [
        fooled(digits_model, create_attack(m, eps=EPS, seed=0)(digits_model, x, y), y).sum().item()
        for m in members
    ]
    for only_robust in (True, False):
        result = Ensemble(attacks=members, eps=EPS, seed=0, only_robust=only_robust).perturb(
            digits_model, x, y
        )
        ens_fooled = fooled(digits_model, result.x_adv, y)
        assert torch.equal(result.success, ens_fooled)
        assert ens_fooled.sum().item() >= max(counts)
        assert set(result.info["members"]) == {"0:fgsm", "1:pgd", "2:apgd_dlr", "3:square"}
    # Without subsetting the ensemble is the per-sample union of its members.
    union = torch.zeros_like(y, dtype=torch.bool)
    for m in members:
        union |= fooled(digits_model, create_attack(m, eps=EPS, seed=0)(digits_model, x, y), y)
    assert torch.equal(ens_fooled, union)


def test_robust_accuracy_falls_with_eps_and_reaches_zero(digits_model, test_batch) -> None:
    """The evaluator's gradient-masking sanity check holds for an honest model."""
    x, y = test_batch
    accs = [
        1 - fooled(digits_model, PGD(eps=eps, steps=10)(digits_model, x, y), y).float().mean().item()
        for eps in (0.0, 0.03, 0.08, 0.2, 0.5)
    ]
    assert all(a >= b for a, b in zip(accs[:-1], accs[1:], strict=True)), accs
    assert accs[0] > 0.85 and accs[-1] == 0.0


def test_square_fools_without_gradients(digits_model, test_batch) -> None:
    x, y = test_batch
    result = Square(eps=EPS, queries=200, seed=0).perturb(digits_model, x, y)
    assert math.isnan(result.zero_grad_fraction)
    assert torch.equal(result.success, fooled(digits_model, result.x_adv, y))
    assert result.success.sum() > fooled(digits_model, x, y).sum() + 20
    assert int(result.info["queries"].max()) <= 200


def test_square_pseudo_gaussian_and_meta_pattern_follow_the_paper() -> None:
    # n = 2 rings around the centre of a 5 x 5 window: 1/9 outside, + 1/4, + 1 at the centre.
    bump = pseudo_gaussian(5, 5)
    assert bump[2, 2].item() == pytest.approx(1 / 9 + 1 / 4 + 1)
    assert bump[1, 2].item() == bump[2, 3].item() == pytest.approx(1 / 9 + 1 / 4)
    assert bump[0, 0].item() == bump[4, 2].item() == pytest.approx(1 / 9)
    pattern = meta_pattern(6, transpose=False)
    assert pattern.norm().item() == pytest.approx(1.0)
    assert torch.equal(pattern[:, :3], -pattern[:, 3:])  # two halves of opposite sign
    assert (pattern[:, :3] > 0).all() and torch.equal(meta_pattern(6, transpose=True), pattern.t())


def test_square_l2_fools_without_gradients_inside_the_ball(digits_model, test_batch) -> None:
    x, y = test_batch
    eps = 1.0
    result = Square(eps=eps, norm="l2", queries=200, seed=0).perturb(digits_model, x, y)
    norms = (result.x_adv - x).flatten(1).norm(dim=1)
    assert float(norms.max()) <= eps and 0.0 <= float(result.x_adv.min()) <= float(result.x_adv.max()) <= 1.0
    assert torch.equal(result.success, fooled(digits_model, result.x_adv, y))
    clean_fooled = int(fooled(digits_model, x, y).sum())
    assert int(result.success.sum()) > clean_fooled + 20
    # The search spends its budget: every perturbation uses most of the ball (clipping aside).
    assert float(norms.median()) > 0.8 * eps
    # Random search cannot beat a strong gradient attack of the same budget on a smooth model.
    apgd = APGD(eps=eps, norm="l2", steps=50, seed=0).perturb(digits_model, x, y)
    assert int(apgd.success.sum()) >= int(result.success.sum())


def test_targeted_attacks_hit_their_targets(digits_model, test_batch) -> None:
    x, y = test_batch
    with torch.no_grad():
        least_likely = digits_model(x).scatter(1, y[:, None], math.inf).argmin(1)
    result = PGD(eps=0.3, steps=20, target="least_likely", evaluate=True).perturb(digits_model, x, y)
    assert torch.equal(result.target, least_likely)
    with torch.no_grad():
        pred = digits_model(result.x_adv).argmax(1)
    assert torch.equal(result.success, pred == least_likely)
    assert result.success.float().mean() > 0.5
    random_target = PGD(eps=0.3, steps=5, target="random", seed=0).perturb(digits_model, x, y).target
    assert bool((random_target != y).all()) and random_target.unique().numel() > 5


def test_mixed_start_uses_the_requested_fraction(test_batch) -> None:
    x, _ = test_batch
    proj = PROJECTIONS.get("linf")(x, 0.1)
    start = INITS.get("mixed")(x, proj, 0.8, torch.Generator().manual_seed(0))
    moved = (start != x).flatten(1).any(1)
    assert moved.sum().item() == round(0.8 * x.shape[0])


# --------------------------------------------------------------------------------------
# zero gradients, precision, phase
# --------------------------------------------------------------------------------------
def test_zero_gradient_fraction_detects_masking(digits_model, test_batch) -> None:
    x, y = test_batch
    masked = nn.Sequential(_Round(), digits_model)  # piecewise constant input: gradient exactly zero
    assert PGD(eps=0.1, steps=3).perturb(masked, x, y).zero_grad_fraction == 1.0
    assert APGDCE(eps=0.1, steps=3).perturb(masked, x, y).zero_grad_fraction == 1.0
    assert PGD(eps=0.1, steps=3).perturb(digits_model, x, y).zero_grad_fraction == 0.0


class _Round(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 4) / 4


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_attacks(digits_model, test_batch, precision) -> None:
    x, y = test_batch
    eps = 0.08
    ref = fooled(digits_model, PGD(eps=eps, steps=10)(digits_model, x, y), y).float().mean().item()
    result = PGD(eps=eps, steps=10, precision=precision, evaluate=True).perturb(digits_model, x, y)
    assert bool(((result.x_adv.double() - x.double()).abs() <= eps).all())
    assert result.x_adv.dtype == torch.float32 and result.zero_grad_fraction == 0.0
    assert abs(fooled(digits_model, result.x_adv, y).float().mean().item() - ref) < 0.05


def test_fp32_attack_ignores_an_outer_autocast(digits_model, test_batch) -> None:
    x, y = test_batch
    attack = PGD(eps=0.08, steps=3)
    plain = attack(digits_model, x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = attack(digits_model, x, y)
    assert torch.equal(plain, inside)


def test_every_forward_runs_in_the_attack_phase(digits_model, test_batch) -> None:
    x, y = test_batch
    phases: list[Phase] = []
    hook = digits_model.register_forward_hook(lambda *_: phases.append(current_phase()))
    try:
        for attack in _all_attacks(0.1, "linf"):
            attack(digits_model, x[:16], y[:16])
    finally:
        hook.remove()
    assert len(phases) > 50 and set(phases) == {Phase.ATTACK}
    assert current_phase() is Phase.TRAIN


def test_attack_works_under_the_callers_no_grad_and_inference_mode(digits_model, test_batch) -> None:
    x, y = test_batch
    expected = PGD(eps=0.08, steps=3)(digits_model, x, y)
    with torch.no_grad():
        assert torch.equal(PGD(eps=0.08, steps=3)(digits_model, x, y), expected)
    with torch.inference_mode():
        x_inf, y_inf = x.clone(), y.clone()
        assert torch.equal(PGD(eps=0.08, steps=3)(digits_model, x_inf, y_inf), expected)


def test_hparams_rebuild_the_attack() -> None:
    ens = Ensemble(attacks=["fgsm", {"name": "pgd", "steps": 2, "loss": "dlr"}], eps=8 / 255)
    rebuilt = Ensemble(**ens.hparams())
    assert [m.hparams() for m in rebuilt.members] == [m.hparams() for m in ens.members]
    assert rebuilt.members[1].loss == "dlr" and rebuilt.members[1].eps == 8 / 255
    pgd = PGD(eps=4 / 255, steps=1, random_start_fraction=0.8, seed=3)
    assert PGD(**pgd.hparams()).hparams() == pgd.hparams()


# --------------------------------------------------------------------------------------
# model state
# --------------------------------------------------------------------------------------
class _StatefulNet(nn.Module):
    """BatchNorm (2d and 1d), dropout, a frozen layer, mixed train flags, stale .grad."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.drop = nn.Dropout(0.3)
        self.fc1 = nn.Linear(6 * 64, 16)
        self.bn1 = nn.BatchNorm1d(16, momentum=None)  # cumulative average: uses num_batches_tracked
        self.fc2 = nn.Linear(16, 10)
        self.calls = 0
        self.fail_at: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        h = F.silu(self.bn(self.conv(x)))
        if self.fail_at is not None and self.calls == self.fail_at:
            raise RuntimeError("boom")  # after BatchNorm has seen the batch
        h = self.drop(h.flatten(1))
        return self.fc2(F.silu(self.bn1(self.fc1(h))))


def _stateful_net(x: torch.Tensor) -> _StatefulNet:
    torch.manual_seed(0)
    net = _StatefulNet()
    net.train()
    for _ in range(3):  # non-trivial running statistics
        net(x).sum().backward()
    net.bn1.eval()  # mixed flags
    net.fc1.weight.requires_grad_(False)
    net.fc1.weight.grad = None
    net.conv.bias.grad = None  # a trainable parameter without .grad
    return net


def _snapshot(net: nn.Module) -> dict:
    return {
        "flags": [(n, m.training) for n, m in net.named_modules()],
        "requires_grad": [(n, p.requires_grad) for n, p in net.named_parameters()],
        "grad_ids": [(n, id(p.grad) if p.grad is not None else None) for n, p in net.named_parameters()],
        "grads": {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None},
        "buffers": {n: b.clone() for n, b in net.named_buffers()},
        "buffer_ids": [(n, id(b)) for n, b in net.named_buffers()],
        "params": {n: p.detach().clone() for n, p in net.named_parameters()},
        "tracking": [
            m.track_running_stats for m in net.modules() if isinstance(m, nn.modules.batchnorm._NormBase)
        ],
    }


def _assert_same(net: nn.Module, before: dict) -> None:
    after = _snapshot(net)
    for key in ("flags", "requires_grad", "grad_ids", "buffer_ids", "tracking"):
        assert after[key] == before[key], key
    for key in ("grads", "buffers", "params"):
        assert after[key].keys() == before[key].keys()
        for name, value in before[key].items():
            assert torch.equal(after[key][name], value), (key, name)


def _state_attacks(bn_mode: str) -> list:
    common = {"eps": 0.1, "bn_mode": bn_mode, "seed": 0}
    return [
        FGSM(evaluate=True, **common),
        PGD(steps=3, random_start_fraction=0.8, restarts=2, **common),
        APGDCE(steps=4, restarts=2, **common),
        APGDDLR(steps=4, **common),
        APGDT(steps=3, n_target_classes=2, **common),
        Square(queries=10, **common),
        Ensemble(attacks=["fgsm", {"name": "apgd_ce", "steps": 3}], **common),
    ]


@pytest.mark.parametrize("bn_mode", ["eval", "train", "train_frozen"])
def test_attacks_leave_the_model_untouched(test_batch, bn_mode) -> None:
    x, y = test_batch
    x, y = x[:32], y[:32]
    net = _stateful_net(x)
    before = _snapshot(net)
    modes_seen: list[tuple[bool, bool, bool]] = []
    hook = net.bn.register_forward_pre_hook(
        lambda m, _: modes_seen.append((m.training, m.track_running_stats, net.drop.training))
    )
    try:
        for attack in _state_attacks(bn_mode):
            attack(net, x, y)
            _assert_same(net, before)
    finally:
        hook.remove()
    expected = {
        "eval": (False, True, False),
        "train": (True, True, False),
        "train_frozen": (True, False, False),
    }
    assert set(modes_seen) == {expected[bn_mode]}


@pytest.mark.parametrize("bn_mode", ["eval", "train", "train_frozen"])
def test_model_restored_when_the_attack_raises(test_batch, bn_mode) -> None:
    x, y = test_batch
    x, y = x[:32], y[:32]
    net = _stateful_net(x)
    before = _snapshot(net)
    for attack in _state_attacks(bn_mode):
        net.calls, net.fail_at = 0, 2 if isinstance(attack, FGSM) else 3  # FGSM: forward, then evaluate
        with pytest.raises(RuntimeError, match="boom"):
            attack.perturb(net, x, y)
        net.fail_at = None
        _assert_same(net, before)
    net.calls, net.fail_at = 0, 1
    with pytest.raises(RuntimeError), preserve_model_state(net, bn_mode):
        net(x)
    net.fail_at = None
    _assert_same(net, before)


def test_batch_statistics_modes_agree_and_differ_from_eval(test_batch) -> None:
    x, y = test_batch
    x, y = x[:32], y[:32]
    net = _stateful_net(x)
    adv = {mode: PGD(eps=0.1, steps=3, bn_mode=mode)(net, x, y) for mode in ("eval", "train", "train_frozen")}
    assert torch.equal(adv["train"], adv["train_frozen"])
    assert not torch.equal(adv["train"], adv["eval"])
