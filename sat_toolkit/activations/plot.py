"""Draw activations and their gradients so a user sees what they pick.

One plugin must not spoil the picture for everyone: an activation that cannot be built
from its name alone (a required constructor parameter) or that fails when drawn (it
raises, or its value or gradient is not finite) is skipped with the reason, and the
others are drawn.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from sat_toolkit.activations.factory import ActivationSpec, create_activation, resolve_activation, split_spec
from sat_toolkit.errors import SatError, first_line
from sat_toolkit.phase import attack_phase

Curves = tuple[torch.Tensor, torch.Tensor]


@dataclasses.dataclass
class ActivationPlot:
    """What :func:`plot_activations` drew: the file, the panels in order, and what it skipped."""

    path: Path
    drawn: list[str]
    #: activation -> why it could not be drawn (one line)
    skipped: dict[str, str]


def activation_curves(spec: ActivationSpec, x: torch.Tensor) -> Curves:
    """Value and autograd gradient of activation ``spec`` (a name or a table) on the points ``x``.

    The gradient is the one the attacker sees (computed inside ``attack_phase``), which is
    what differs for the gradient-surrogate activation.
    """
    module = create_activation(spec)
    leaf = x.detach().clone().requires_grad_(True)
    with attack_phase():
        value = module(leaf)
        (grad,) = torch.autograd.grad(value.sum(), leaf)
    return value.detach(), grad.detach()


def _required_parameter(name: str, params: Mapping[str, object]) -> str | None:
    """The first constructor parameter of ``name`` without a default that ``params`` leaves out."""
    try:
        signature = inspect.signature(resolve_activation(name))
    except (TypeError, ValueError):  # uninspectable: building it will tell
        return None
    for key, parameter in signature.parameters.items():
        variadic = parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
        if parameter.default is parameter.empty and not variadic and key not in params:
            return key
    return None


def _one_line(error: Exception) -> str:
    """An exception as one short line (a plugin's message may span many)."""
    if isinstance(error, SatError):
        return error.message
    return first_line(error, with_type=True)


def _with_parameter(name: str, params: Mapping[str, object], missing: str) -> str:
    """The Python call that plots ``name`` once the user fills in ``missing``."""
    fields = ", ".join([f'"name": "{name}"', *(f'"{k}": {v!r}' for k, v in params.items())])
    return f'sat_toolkit.activations.plot.plot_activations([{{{fields}, "{missing}": ...}}], path)'


def _title(spec: ActivationSpec) -> str:
    name, params = split_spec(spec)
    shown = ", ".join(f"{key}={value}" for key, value in params.items())
    return f"{name} ({shown})" if shown else name


def curves_or_reason(spec: ActivationSpec, x: torch.Tensor) -> Curves | str:
    """The activation's curves on ``x``, or one line saying why it cannot be drawn."""
    name, params = split_spec(spec)
    try:
        missing = _required_parameter(name, params)
        if missing is not None:
            return f"needs the parameter '{missing}' (plot it with {_with_parameter(name, params, missing)})"
        value, grad = activation_curves(spec, x)
    except Exception as error:  # a plugin's bug: skip it, say what it raised
        return _one_line(error)
    if not (torch.isfinite(value).all() and torch.isfinite(grad).all()):
        return f"its value or gradient is not finite (NaN or inf) on [{float(x[0]):g}, {float(x[-1]):g}]"
    return value, grad


def plot_activations(
    specs: Sequence[ActivationSpec], path: Path, lo: float = -3.0, hi: float = 3.0, *, strict: bool = False
) -> ActivationPlot:
    """One panel per drawable activation: value (solid) and gradient (dashed).

    Args:
        specs: activation names, or tables such as ``{"name": "smoothrelu", "alpha": 5}``
            for one that needs a parameter.
        path: the PNG to write.
        strict: every activation must be drawn (the user named them): the first that
            cannot is an error instead of a skip.

    Raises:
        SatError: nothing to draw, the path is no PNG, or (``strict``) one cannot be drawn.
    """
    if not specs:
        raise SatError("nothing to plot: no activation names given")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise SatError(f"--plot {path}: the file name must end in .png")
    x = torch.linspace(lo, hi, 601, dtype=torch.float64)
    curves: dict[str, Curves] = {}
    skipped: dict[str, str] = {}
    for spec in specs:
        outcome = curves_or_reason(spec, x)
        if isinstance(outcome, str):
            if strict:
                raise SatError(f"cannot plot '{_title(spec)}': {outcome}")
            skipped[_title(spec)] = outcome
        else:
            curves[_title(spec)] = outcome
    if not curves:
        reasons = "; ".join(f"'{name}': {why}" for name, why in skipped.items())
        raise SatError(f"nothing to plot: no activation could be drawn ({reasons})")
    path.parent.mkdir(parents=True, exist_ok=True)
    return ActivationPlot(path, _draw(curves, x, path), skipped)


def _draw(curves: Mapping[str, Curves], x: torch.Tensor, path: Path) -> list[str]:
    """Write the figure; returns the panel titles, read back from the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(4, len(curves))
    rows = math.ceil(len(curves) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), squeeze=False)
    for ax, (title, (value, grad)) in zip(axes.flat, curves.items(), strict=False):
        ax.plot(x, value, label="value", color="tab:blue")
        ax.plot(x, grad, label="gradient", color="tab:orange", linestyle="--")
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.axvline(0, color="grey", linewidth=0.5)
        ax.set_title(title)
        ax.set_ylim(-1.5, 3.0)
    for ax in list(axes.flat)[len(curves) :]:
        ax.axis("off")
    axes.flat[0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    titles = [ax.get_title() for ax in axes.flat if ax.get_title()]
    plt.close(fig)
    return titles
