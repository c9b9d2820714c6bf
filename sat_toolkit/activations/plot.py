"""Draw activations and their gradients so a user sees what they pick."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from sat_toolkit.activations.factory import create_activation
from sat_toolkit.errors import SatError
from sat_toolkit.phase import attack_phase


def activation_curves(name: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Value and autograd gradient of activation ``name`` on the points ``x``.

    The gradient is the one the attacker sees (computed inside ``attack_phase``), which is
    what differs for the gradient-surrogate activation.
    """
    module = create_activation(name)
    leaf = x.detach().clone().requires_grad_(True)
    with attack_phase():
        value = module(leaf)
        (grad,) = torch.autograd.grad(value.sum(), leaf)
    return value.detach(), grad.detach()


def plot_activations(names: Sequence[str], path: Path, lo: float = -3.0, hi: float = 3.0) -> Path:
    """One panel per activation: value (solid) and gradient (dashed). Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not names:
        raise SatError("nothing to plot: no activation names given")
    if path.suffix.lower() != ".png":
        raise SatError(f"--plot {path}: the file name must end in .png")
    path.parent.mkdir(parents=True, exist_ok=True)
    x = torch.linspace(lo, hi, 601, dtype=torch.float64)
    columns = min(4, len(names))
    rows = math.ceil(len(names) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        value, grad = activation_curves(name, x)
        ax.plot(x, value, label="value", color="tab:blue")
        ax.plot(x, grad, label="gradient", color="tab:orange", linestyle="--")
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.axvline(0, color="grey", linewidth=0.5)
        ax.set_title(name)
        ax.set_ylim(-1.5, 3.0)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    axes.flat[0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
