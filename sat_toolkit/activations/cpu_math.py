"""ELU, softplus and log1p on the CPU, computed through ``exp`` and ``log``.

Why this module exists: in the torch CPU builds this project runs (torch 2.14, AVX512),
``torch.expm1`` and ``torch.log1p``, and with them ``F.elu``, ``F.celu`` and ``F.softplus``,
take about 20 times as long as ``torch.exp``, ``torch.log`` or ``torch.sigmoid`` on the same
tensor. Five built-in activations need one of them (elu, celu, softplus, parametric
softplus, smoothrelu), and with torch's kernels a small CNN's training step took 1.5 to 1.9
times as long with them as with SiLU, against the paper's "smooth activations at no extra
compute" and at the cost of hours in our activation studies.

Each function here computes the same value from ``exp``, ``log`` and arithmetic, with the
classic cancellation-free formulas (Kahan's for expm1, Goldberg's for log1p; a few ulp in
float32), in float32 for bfloat16 and float16 inputs, and returns it in the input's dtype.
The backward pass is torch's own (``aten.elu_backward``, ``aten.softplus_backward``,
``grad / (1 + v)`` for log1p) on the same saved input, so gradients are bit for bit those of
``F.elu``, ``F.softplus`` and ``torch.log1p``; a double backward differentiates through
those ops. On other devices the functions call torch's own ops unchanged.

``benchmarks/bench_activation_kernels.py`` measures both paths on the machine at hand.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_LOW_PRECISION = (torch.bfloat16, torch.float16)
#: torch's default ``threshold`` of ``F.softplus`` (beta x above it: the identity), the one
#: value these formulas reproduce (above it they round to x anyway).
SOFTPLUS_THRESHOLD = 20.0


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for half-precision inputs (as torch's own kernels compute), else x's dtype."""
    return torch.float32 if x.dtype in _LOW_PRECISION else x.dtype


def _in_compute_dtype(x: torch.Tensor) -> torch.Tensor:
    """``x`` to read from in its compute dtype (``x`` itself where that is its dtype)."""
    return x.to(_compute_dtype(x))


def _expm1_nonpositive_(t: torch.Tensor) -> torch.Tensor:
    """e^t - 1 for -80 <= t <= 0, in place of ``t`` (a scratch tensor), without cancellation.

    Kahan's t (u - 1) / log u, u = e^t. Where u rounds to 1, (u - 1) / log u is 0 / 0 and
    its limit, 1, replaces the NaN, so the result is t itself. The caller clamps t at -80:
    e^t - 1 is -1 in float32 from -17 on, and e^-80 is still a normal number (no slow
    denormals, no log 0). No ``torch.where``: on these CPUs it costs as much as ``expm1``.
    In place, because each pass over a fresh tensor costs memory traffic.
    """
    u = torch.exp(t)
    ratio = u - 1
    ratio.div_(u.log_()).nan_to_num_(nan=1.0)
    return t.mul_(ratio)


def _log1p_nonnegative_(v: torch.Tensor) -> torch.Tensor:
    """log(1 + v) for v >= 0, in place of ``v`` (a scratch tensor), without cancellation.

    Goldberg's v log(w) / (w - 1), w = 1 + v. Where w rounds to 1 (or is inf), the ratio is
    0 / 0 (inf / inf) and its limit there, 1 (any would do: it multiplies 0 or inf),
    replaces the NaN.
    """
    w = v + 1
    ratio = torch.log(w)
    ratio.div_(w.sub_(1)).nan_to_num_(nan=1.0)
    return v.mul_(ratio)


def _elu_value(x: torch.Tensor, alpha: float, input_scale: float) -> torch.Tensor:
    x32 = _in_compute_dtype(x)
    # max(x, 0) + alpha (e^(s min(x, 0)) - 1): one term is 0 on each side, so no select.
    if input_scale == 1.0:
        scaled = x32.clamp(min=-80.0, max=0.0)
    else:
        scaled = x32.clamp(max=0.0).mul_(input_scale).clamp_(min=-80.0)
    negative = _expm1_nonpositive_(scaled)
    if alpha != 1.0:
        negative.mul_(alpha)
    return negative.add_(x32.clamp(min=0.0)).to(x.dtype)


def _softplus_value(x: torch.Tensor, beta: float) -> torch.Tensor:
    x32 = _in_compute_dtype(x)
    # log(1 + e^z) / beta = max(x, 0) + log(1 + e^-|z|) / beta, z = beta x: e^-|z| <= 1 never
    # overflows, and above z = 20 the second term is below half an ulp of x, so the result
    # is x, as torch's switch to the identity at threshold 20 makes it.
    correction = _log1p_nonnegative_(torch.exp(x32.abs().mul_(-beta)))
    return correction.div_(beta).add_(x32.clamp(min=0)).to(x.dtype)


class _ELU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float, input_scale: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.alpha, ctx.input_scale = alpha, input_scale
        return _elu_value(x, alpha, input_scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (x,) = ctx.saved_tensors
        grad_x = torch.ops.aten.elu_backward(grad, ctx.alpha, 1.0, ctx.input_scale, False, x)
        return grad_x, None, None


class _Softplus(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, beta: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.beta = beta
        return _softplus_value(x, beta)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        grad_x = torch.ops.aten.softplus_backward(grad, x, ctx.beta, SOFTPLUS_THRESHOLD)
        return grad_x, None


class _Log1p(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(v)
        scratch = v.to(_compute_dtype(v), copy=True)
        return _log1p_nonnegative_(scratch).to(v.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (v,) = ctx.saved_tensors
        return grad / (v + 1)  # torch's own derivative of log1p


def elu(x: torch.Tensor, alpha: float = 1.0, input_scale: float = 1.0) -> torch.Tensor:
    """``F.elu(x, alpha)``; ``input_scale = 1/alpha`` gives ``F.celu(x, alpha)``."""
    if x.device.type != "cpu":
        return torch.ops.aten.elu(x, alpha, 1.0, input_scale)
    return _ELU.apply(x, float(alpha), float(input_scale))


def softplus(x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """``F.softplus(x, beta, threshold=20)``: log(1 + e^(beta x)) / beta."""
    if x.device.type != "cpu":
        return F.softplus(x, beta=beta, threshold=SOFTPLUS_THRESHOLD)
    return _Softplus.apply(x, float(beta))


def log1p_nonnegative(v: torch.Tensor) -> torch.Tensor:
    """``torch.log1p(v)`` for v >= 0 (what SmoothReLU needs); differentiable in ``v``."""
    if v.device.type != "cpu":
        return torch.log1p(v)
    return _Log1p.apply(v)
