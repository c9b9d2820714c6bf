"""The CPU formulas of ELU, CELU, softplus and log1p against torch's own ops and float64.

sat_toolkit.activations.cpu_math computes these through exp and log because torch's expm1
and log1p are several times slower on the CPUs we run; these tests hold it to torch's
values (a few float32 ulp, bit for bit in bfloat16 on the same samples), its gradients
(bit for bit: they are torch's own backward kernels) and double backward.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sat_toolkit.activations import cpu_math

EPS32 = torch.finfo(torch.float32).eps

# name, fast function, torch's own function
CASES = [
    ("elu", lambda x: cpu_math.elu(x), lambda x: F.elu(x)),
    ("elu alpha 1.5", lambda x: cpu_math.elu(x, 1.5), lambda x: F.elu(x, 1.5)),
    ("celu alpha 0.7", lambda x: cpu_math.elu(x, 0.7, 1 / 0.7), lambda x: F.celu(x, 0.7)),
    ("softplus", lambda x: cpu_math.softplus(x), lambda x: F.softplus(x)),
    ("softplus beta 10", lambda x: cpu_math.softplus(x, 10.0), lambda x: F.softplus(x, 10.0)),
    ("log1p", lambda x: cpu_math.log1p_nonnegative(x.abs()), lambda x: torch.log1p(x.abs())),
]
IDS = [name for name, _, _ in CASES]


def wide_inputs() -> torch.Tensor:
    """Ordinary values, tiny and huge magnitudes of both signs, zeros and the clamp's edge."""
    generator = torch.Generator().manual_seed(0)
    return torch.cat(
        [
            torch.randn(100_000, generator=generator) * 4,
            torch.logspace(-40, 3, 5_000),
            -torch.logspace(-40, 3, 5_000),
            torch.tensor([0.0, -0.0, -17.0, -79.9, -80.0, -80.1, -104.0, 20.0, 20.1, 1e30, -1e30]),
        ]
    )


def relative_error_in_eps(value: torch.Tensor, reference: torch.Tensor) -> float:
    """The largest |value - reference| / |reference| in units of float32's epsilon."""
    error = (value.double() - reference).abs() / reference.abs().clamp(min=1e-30)
    return error.max().item() / EPS32


@pytest.mark.parametrize(("name", "fast", "native"), CASES, ids=IDS)
def test_float32_values_are_within_a_few_ulp_of_float64(name, fast, native) -> None:
    x = wide_inputs()
    reference = native(x.double())
    # torch's own float32 kernels are within 1 eps here (softplus beta 10 excepted: the
    # float32 product beta x already rounds, which costs both the same 33 eps far out).
    bound = relative_error_in_eps(native(x), reference) + 3.0
    assert relative_error_in_eps(fast(x), reference) <= bound


@pytest.mark.parametrize(("name", "fast", "native"), CASES, ids=IDS)
def test_bfloat16_values_are_torchs_own(name, fast, native) -> None:
    x = wide_inputs().bfloat16()
    out = fast(x)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, native(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("name", "fast", "native"), CASES, ids=IDS)
def test_gradients_are_torchs_own_bit_for_bit(name, fast, native, dtype) -> None:
    x = wide_inputs().to(dtype)
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    grads = []
    for function in (fast, native):
        leaf = x.clone().requires_grad_()
        (grad,) = torch.autograd.grad(function(leaf), leaf, upstream)
        grads.append(grad)
    assert torch.equal(grads[0], grads[1])


@pytest.mark.parametrize(("name", "fast", "native"), CASES, ids=IDS)
def test_first_and_second_derivatives_pass_gradcheck(name, fast, native) -> None:
    generator = torch.Generator().manual_seed(2)
    x = (torch.randn(40, dtype=torch.float64, generator=generator) * 3).requires_grad_()
    assert torch.autograd.gradcheck(fast, (x,))
    assert torch.autograd.gradgradcheck(fast, (x,))


def test_the_input_is_never_written_to() -> None:
    x = wide_inputs()
    before = x.clone()
    for _, fast, _ in CASES:
        fast(x)
    assert torch.equal(x, before)


def test_other_devices_call_torchs_own_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args):
        raise AssertionError("the CPU formula ran on a non-CPU tensor")

    for function in ("_ELU", "_Softplus", "_Log1p"):
        monkeypatch.setattr(getattr(cpu_math, function), "apply", refuse)
    x = torch.empty(3, 5, device="meta")
    for _, fast, _ in CASES:
        assert fast(x).device.type == "meta"
