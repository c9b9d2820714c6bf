"""Which device a command computes on: the accelerator when there is one, else the CPU.

``sat-toolkit eval --device`` and :func:`sat_toolkit.evaluate` share this, so a mistyped or
absent device is one line naming the fix, never a CUDA traceback halfway through a suite.
"""

from __future__ import annotations

import torch
from torch import nn

from sat_toolkit.errors import SatError, first_line


def default_device() -> torch.device:
    """The machine's accelerator (CUDA, XPU, MPS, ...) when one is usable, else the CPU."""
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and accelerator.is_available():
        return torch.device(accelerator.current_accelerator().type)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def native_bf16(device: torch.device | None = None) -> bool:
    """Whether ``device`` (default: the one a run trains on) computes bf16 in hardware.

    A CUDA GPU with bf16 support, or a CPU with AVX512-BF16 or AMX. Elsewhere bf16 is
    emulated and slower than fp32, not faster: on an AVX2-only AMD EPYC a bf16 training
    step of the Fashion-MNIST small_cnn took about 7x its fp32 time.
    """
    device = device or default_device()
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        cpu = torch.cpu
        return any(bool(getattr(cpu, probe, lambda: False)()) for probe in _CPU_BF16_PROBES)
    return False  # other accelerators: not assumed


_CPU_BF16_PROBES = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")


def emulated_bf16_warning(mixed_precision: str, device: torch.device | None = None) -> str | None:
    """The warning for a recipe that asks for bf16 where it is emulated, or None.

    Why warn: studies and benchmarks pin ``"bf16"`` so that every machine computes the
    same thing, and on a CPU without AVX512-BF16 or AMX that choice turns a 40-minute cell
    into a day-long one; the probe's estimate shows it, but not why. Only CPUs and CUDA
    GPUs are judged (elsewhere :func:`native_bf16` does not know).
    """
    device = device or default_device()
    if mixed_precision != "bf16" or device.type not in ("cpu", "cuda") or native_bf16(device):
        return None
    where = "this CPU (it has neither AVX512-BF16 nor AMX)" if device.type == "cpu" else "this GPU"
    return (
        f'optimizer.mixed_precision = "bf16" on {where}: bf16 is emulated, several times slower '
        'than fp32 (about 7x for a small CNN on an AVX2-only CPU); "auto" uses bf16 only where it is native'
    )


def resolve_device(name: str | torch.device | None, *, option: str = "--device") -> torch.device:
    """``name`` as a usable device (None: :func:`default_device`), or a one-line error that
    names it as the caller took it (``option``: ``"--device"`` on the command line,
    ``"device"`` for a Python argument)."""
    if name is None:
        return default_device()

    def given(value: str, quoted: bool = True) -> str:
        if not option.startswith("-"):
            return f"{option}={value!r}"
        return f"{option} {value!r}" if quoted else f"{option} {value}"

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise SatError(f"{given(str(name))}: not a device name; use cpu, cuda, cuda:1, mps, ...") from None
    if device.type == "cpu":
        return device
    try:
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError, AttributeError) as exc:
        raise SatError(
            f"{given(str(name))} is not usable on this machine ({first_line(exc)}); "
            f"use {given(default_device().type, quoted=False)} or leave {option} out"
        ) from None
    return device


def model_device(model: nn.Module) -> torch.device:
    """Where ``model`` keeps its parameters (or buffers); the CPU for a stateless module."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def describe(device: torch.device) -> str:
    """``"cuda:0 (NVIDIA H200)"``, ``"cpu"``: what a report records as the device used."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)
