"""The smooth activation family: gradients, closed forms and numerical safety."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sat_toolkit.activations import SmoothReLU, create_activation
from sat_toolkit.errors import SatError
from sat_toolkit.plugins import get_plugin_host

SMOOTH_SPECS = [
    {"name": "softplus"},
    {"name": "parametric_softplus", "alpha": 10.0},
    {"name": "parametric_softplus", "alpha": 2.5},
    {"name": "silu"},
    {"name": "gelu", "approximate": "none"},
    {"name": "gelu", "approximate": "tanh"},
    {"name": "elu", "alpha": 1.0},
    {"name": "celu", "alpha": 0.7},
    {"name": "smoothrelu", "alpha": 20.0},
    {"name": "smoothrelu", "alpha": 5.0, "learnable": True},
]


def _points() -> torch.Tensor:
    # Avoid x == 0 exactly: ELU-family one-sided formulas switch there, and finite
    # differences straddling a switch compare two branches.
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, dtype=torch.float64, generator=generator) * 2
    return x[x.abs() > 1e-3]


def test_every_registered_smooth_activation_is_covered() -> None:
    host = get_plugin_host()
    smooth = {
        r.name
        for r in host.records("activation")
        if r.obj is not None
        and getattr(r.obj, "smooth", False)
        and r.distribution == "smooth-adversarial-training"
    }
    assert smooth == {spec["name"] for spec in SMOOTH_SPECS}


@pytest.mark.parametrize("spec", SMOOTH_SPECS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_gradcheck_float64(spec: dict) -> None:
    module = create_activation(spec).double()
    x = _points().requires_grad_(True)
    assert torch.autograd.gradcheck(module, (x,), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradgradcheck(module, (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize(
    ("spec", "reference"),
    [
        ({"name": "relu"}, lambda x: torch.clamp(x, min=0)),
        ({"name": "softplus"}, lambda x: torch.log1p(torch.exp(x))),
        ({"name": "parametric_softplus", "alpha": 10.0}, lambda x: torch.log1p(torch.exp(10 * x)) / 10),
        ({"name": "silu"}, lambda x: x / (1 + torch.exp(-x))),
        ({"name": "gelu"}, lambda x: x * 0.5 * (1 + torch.erf(x / math.sqrt(2)))),
        (
            {"name": "gelu", "approximate": "tanh"},
            lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
        ),
        ({"name": "elu", "alpha": 1.5}, lambda x: torch.where(x >= 0, x, 1.5 * (torch.exp(x) - 1))),
        ({"name": "celu", "alpha": 0.5}, lambda x: torch.where(x >= 0, x, 0.5 * (torch.exp(x / 0.5) - 1))),
    ],
)
def test_values_match_paper_formulas(spec: dict, reference) -> None:
    # atol 1e-9: softplus switches to the identity where a x > 20 (error e^-20 / a).
    x = torch.linspace(-4, 4, 101, dtype=torch.float64)
    torch.testing.assert_close(create_activation(spec).double()(x), reference(x), rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    ("x", "alpha"),
    [(0.5, 20.0), (2.0, 20.0), (0.01, 400.0), (3.0, 1.0), (-1.0, 20.0), (0.0, 20.0)],
)
def test_smoothrelu_value_and_gradient_closed_form(x: float, alpha: float) -> None:
    module = SmoothReLU(alpha=alpha).double()
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = module(t)
    (g,) = torch.autograd.grad(y, t)
    if x >= 0:
        expected_y = x - math.log(1 + alpha * x) / alpha
        expected_g = alpha * x / (1 + alpha * x)  # = 1 - 1/(1 + a x)
    else:
        expected_y, expected_g = 0.0, 0.0
    assert y.item() == pytest.approx(expected_y, rel=1e-12, abs=1e-15)
    assert g.item() == pytest.approx(expected_g, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_smoothrelu_is_finite_for_huge_inputs(dtype: torch.dtype) -> None:
    x = torch.tensor([-1e30, -1e4, -1.0, 0.0, 1e-8, 1e4, 1e30], dtype=dtype, requires_grad=True)
    module = SmoothReLU(alpha=400.0)
    y = module(x)
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.isfinite(y).all() and torch.isfinite(g).all()
    assert y[0] == 0 and g[0] == 0
    # Far right of the kink it behaves like the identity.
    assert g[-2].item() == pytest.approx(1.0, abs=1e-2)


def test_smoothrelu_learnable_alpha_follows_the_official_parametrisation() -> None:
    module = SmoothReLU(alpha=400.0, learnable=True)
    (b,) = list(module.parameters())
    assert b.item() == pytest.approx(20.0)  # official code: b initialised to 20, a = b^2
    x = torch.tensor([0.3, 1.0])
    y = module(x).sum()
    y.backward()
    # d/da [x - log(1 + a x)/a] = log(1 + a x)/a^2 - x/(a (1 + a x)); da/db = 2b.
    a = 400.0
    expected = sum(math.log1p(a * v) / a**2 - v / (a * (1 + a * v)) for v in (0.3, 1.0)) * 2 * 20.0
    assert b.grad.item() == pytest.approx(expected, rel=1e-4)


def test_parametric_softplus_gradient_is_sigmoid_of_alpha_x() -> None:
    x = torch.linspace(-2, 2, 41, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(create_activation({"name": "parametric_softplus", "alpha": 10})(x).sum(), x)
    torch.testing.assert_close(g, torch.sigmoid(10 * x.detach()))


def test_parametric_softplus_is_finite_and_relu_like_for_large_inputs() -> None:
    x = torch.tensor([-1e6, 1e6, 50.0])
    y = create_activation({"name": "parametric_softplus", "alpha": 10})(x)
    torch.testing.assert_close(y, F.relu(x))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "smoothrelu", "alpha": -1}, "alpha must be > 0"),
        ({"name": "gelu", "approximate": "fast"}, "approximate must be one of 'none', 'tanh', got string"),
        ({"name": "silu", "alpha": 1}, "activation 'silu' has no parameter 'alpha'"),
        ({"name": "elu", "alpah": 1}, "no parameter 'alpah'; valid parameters: alpha"),
        ({"alpha": 1}, "needs a 'name' key"),
    ],
)
def test_bad_parameters_are_one_line_errors(spec: dict, message: str) -> None:
    with pytest.raises(SatError, match=message) as info:
        create_activation(spec)
    assert "\n" not in str(info.value)
