"""FAB-T against its formulas: the exact box-constrained projection and the robust radius of a linear model.

The projection is checked against closed forms (no box constraint active) and against an
independent solver (scipy's linear program for L-inf, SLSQP for L2) on random instances
whose box constraints do bind. For a linear classifier the decision regions are
polyhedra, so the smallest perturbation that changes the decision is known exactly: the
minimum over the other classes j of the distance to the half-space {f_j >= f_y} inside
the box. FAB-T must find an adversarial example for every image whose radius is well
within eps, never for one whose radius exceeds eps, and land close to the radius.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linprog, minimize
from torch import nn

from sat_toolkit.attacks import create_attack
from sat_toolkit.attacks.boundary import project_onto_hyperplane
from sat_toolkit.attacks.fab import FABT


def _instances(count: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    points = torch.rand(count, dim, generator=gen, dtype=torch.float64)
    w = torch.randn(count, dim, generator=gen, dtype=torch.float64)
    w[:, :2] = 0.0  # coordinates the hyperplane ignores must not move
    offset = torch.randn(count, generator=gen, dtype=torch.float64) * 0.6 * w.abs().sum(1) * 0.5
    return points, w, offset


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_closed_form_without_active_box(norm: str) -> None:
    points = torch.full((3, 50), 0.5, dtype=torch.float64)
    w = torch.randn(3, 50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    offset = torch.tensor([0.01, -0.02, 0.0], dtype=torch.float64)
    d = project_onto_hyperplane(points, w, offset, norm)
    if norm == "linf":  # every coordinate moves by the same t = |c| / ||w||_1 along -sign(c) sign(w)
        expected = -offset.sign().unsqueeze(1) * w.sign() * (offset.abs() / w.abs().sum(1)).unsqueeze(1)
    else:  # the textbook projection onto a hyperplane: -c w / ||w||^2
        expected = -(offset / (w * w).sum(1)).unsqueeze(1) * w
    torch.testing.assert_close(d, expected, rtol=1e-10, atol=1e-12)


def _reference_linf(p: np.ndarray, w: np.ndarray, c: float) -> float:
    """min t s.t. |d_i| <= t, 0 <= p + d <= 1, <w, d> = -c (variables d, t); inf if infeasible."""
    dim = len(p)
    cost = np.zeros(dim + 1)
    cost[-1] = 1.0
    eye = np.eye(dim)
    bounds_rows = np.hstack([np.vstack([eye, -eye]), -np.ones((2 * dim, 1))])
    result = linprog(
        cost,
        A_ub=bounds_rows,
        b_ub=np.zeros(2 * dim),
        A_eq=np.append(w, 0.0)[None],
        b_eq=[-c],
        bounds=[(-pi, 1 - pi) for pi in p] + [(0, None)],
        method="highs",
    )
    return float(result.fun) if result.status == 0 else float("inf")


def _reference_l2(p: np.ndarray, w: np.ndarray, c: float) -> float:
    result = minimize(
        lambda d: 0.5 * d @ d,
        np.zeros(len(p)),
        jac=lambda d: d,
        constraints=[{"type": "eq", "fun": lambda d: c + w @ d, "jac": lambda d: w}],
        bounds=[(-pi, 1 - pi) for pi in p],
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 500},
    )
    return float(np.linalg.norm(result.x)) if result.success else float("inf")


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_matches_an_independent_solver(norm: str) -> None:
    points, w, offset = _instances(40, 12, seed=1)
    d = project_onto_hyperplane(points, w, offset, norm)
    moved = points + d
    assert bool(((moved >= -1e-12) & (moved <= 1 + 1e-12)).all()), "left the box"
    assert bool((d[:, :2] == 0).all()), "moved a coordinate the hyperplane ignores"
    reached = offset + (w * d).sum(1)
    solved = 0
    for i in range(len(points)):
        p, wi, ci = points[i].numpy(), w[i].numpy(), float(offset[i])
        reference = (_reference_linf if norm == "linf" else _reference_l2)(p, wi, ci)
        size = float(d[i].abs().max() if norm == "linf" else d[i].norm())
        if np.isfinite(reference):
            solved += 1
            assert abs(float(reached[i])) < 1e-9, f"instance {i}: not on the hyperplane"
            assert size == pytest.approx(reference, rel=1e-6, abs=1e-9), f"instance {i}"
        else:  # unreachable inside the box: the corner that gets closest
            corner = torch.where(w[i] * -np.sign(ci) > 0, 1 - points[i], -points[i])
            corner = torch.where(w[i] == 0, torch.zeros_like(corner), corner)
            torch.testing.assert_close(d[i], corner)
    assert 10 < solved < len(points), "the instances should mix reachable and unreachable hyperplanes"


class _Linear(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.fc = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.fc.weight.copy_(weight)
            self.fc.bias.copy_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def _linear_problem(
    classes: int = 4, dim: int = 36, count: int = 120
) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    weight = torch.randn(classes, dim, generator=gen)
    model = _Linear(weight, torch.zeros(classes)).eval()
    x = torch.rand(count, 1, 6, 6, generator=gen)
    with torch.no_grad():
        y = model(x).argmax(1)  # every image correct: the radius is what matters
    return model, x, y


def _exact_radius(model: _Linear, x: torch.Tensor, y: torch.Tensor, norm: str) -> torch.Tensor:
    """min over j != y of the distance to {f_j >= f_y} inside the box (f linear: exact)."""
    weight, bias = model.fc.weight.detach().double(), model.fc.bias.detach().double()
    flat = x.flatten(1).double()
    radius = torch.full((len(x),), float("inf"), dtype=torch.float64)
    for j in range(weight.shape[0]):
        w = weight[j] - weight[y]
        gap = flat @ weight[j] + bias[j] - (flat * weight[y]).sum(1) - bias[y]
        d = project_onto_hyperplane(flat, w, gap, norm)
        reached = (gap + (w * d).sum(1)).abs() < 1e-9
        size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
        radius = torch.where((j != y) & reached, torch.minimum(radius, size), radius)
    return radius


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_t_finds_the_exact_radius_of_a_linear_model(norm: str) -> None:
    model, x, y = _linear_problem()
    radius = _exact_radius(model, x, y, norm)
    eps = float(radius.median())
    attack = FABT(norm=norm, eps=eps, n_target_classes=3, steps=100, seed=0)
    result = attack.perturb(model, x, y)
    found = result.info["norm"].double()
    # Nothing closer than the exact radius exists, so nothing beyond eps can be fooled.
    assert bool((found >= radius * (1 - 1e-5)).all())
    assert not bool(result.success[radius > eps].any())
    assert bool(result.success[radius < 0.97 * eps].all())
    # A sample fooled within eps leaves the batch; the others go on for every step, and
    # the backward steps bring them onto the boundary: within a few percent of the radius.
    beyond = radius > eps
    assert bool((found[result.success] <= eps).all())
    assert float((found[beyond] / radius[beyond]).max()) < 1.03
    delta = (result.x_adv - x).flatten(1)
    sizes = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert float(sizes.max()) <= eps and float(result.x_adv.min()) >= 0 and float(result.x_adv.max()) <= 1
    with torch.no_grad():
        assert bool((model(result.x_adv).argmax(1) != y).eq(result.success).all())


def test_fab_t_registered_with_autoattack_defaults() -> None:
    attack = create_attack({"name": "fab_t"}, defaults={"eps": 0.1})
    assert isinstance(attack, FABT)
    assert (attack.steps, attack.restarts, attack.n_target_classes) == (100, 1, 9)
    assert (attack.alpha_max, attack.eta, attack.beta) == (0.1, 1.05, 0.9)


def test_fab_t_restarts_start_inside_half_the_ball() -> None:
    model, x, y = _linear_problem(count=8)
    attack = FABT(eps=0.2, seed=5)
    best = torch.full((8,), float("inf"))
    best[0] = 0.1  # a sample with a closer adversarial already known starts nearer
    start = attack._start(x, best, 0.2, restart=1, generator=attack.generator(x.device))
    sizes = (start - x).flatten(1).abs().amax(1)
    assert float(sizes[0]) <= 0.05 + 1e-6 and float(sizes[1:].max()) <= 0.1 + 1e-6
    assert float(sizes[1:].min()) > 0.09  # clipping at the box only shrinks some coordinates
    assert torch.equal(attack._start(x, best, 0.2, restart=0, generator=None), x)
