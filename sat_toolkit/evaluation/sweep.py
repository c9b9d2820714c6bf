"""Robust accuracy as a function of eps: numbers and a plot."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sat_toolkit.errors import SatError
from sat_toolkit.evaluation.robust import RobustnessReport, evaluate_robustness

#: Appended to an attack's label for its run in the sweep at the evaluation's own eps.
SWEEP_SUFFIX = "/sweep"


def parse_eps_list(text: str) -> list[float]:
    """``"1/255, 2/255,0.03"`` -> sorted floats in [0, 1]... or any positive budget for L2."""
    from sat_toolkit.recipe import parse_number

    values = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            value = float(parse_number(item))
        except (TypeError, ValueError):
            raise SatError(f"--sweep: {item!r} is not a number or fraction such as 4/255") from None
        if value < 0:
            raise SatError(f"--sweep: eps must be >= 0, got {item}")
        values.append(value)
    if not values:
        raise SatError("--sweep: give a comma-separated list, e.g. --sweep 1/255,2/255,4/255,8/255")
    return sorted(set(values))


def eps_sweep(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attacks: Mapping[str, Any],
    eps_values: Sequence[float],
    *,
    batch_size: int,
    norm: str | None = None,
    main: RobustnessReport | None = None,
) -> dict[float, dict[str, Any]]:
    """Worst-case robust accuracy over ``attacks`` at each eps, on the same samples.

    ``main`` is the evaluation at its own eps: the sweep's run at that eps is a second,
    differently seeded try of the same attacks, and an image either run breaks is broken.
    Its attacks join ``main`` (labelled ``<attack>/sweep``), so the headline worst case is
    never above the curve's point at the same eps.
    """
    curve: dict[float, dict[str, Any]] = {}
    for eps in eps_values:
        report = evaluate_robustness(model, x, y, attacks, batch_size=batch_size, eps=eps, norm=norm)
        worst = report.robust_accuracy
        if main is not None and main.eps is not None and math.isclose(eps, main.eps, rel_tol=1e-9):
            for label, outcome in report.attacks.items():
                if main.cascade:  # there each member's number is the worst case up to it
                    outcome = dataclasses.replace(outcome, robust=outcome.robust & main.worst_case)
                main.attacks[f"{label}{SWEEP_SUFFIX}"] = outcome
            worst = main.robust_accuracy  # now over both runs: at most either
        curve[eps] = {
            "robust_accuracy": worst,
            "attacks": {k: o.robust_accuracy for k, o in report.attacks.items()},
        }
    return curve


def plot_sweep(
    curve: Mapping[float, Mapping[str, Any]], clean_accuracy: float, path: Path, title: str
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eps = sorted(curve)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(eps, [curve[e]["robust_accuracy"] for e in eps], marker="o", label="worst case", color="black")
    members = list(next(iter(curve.values()))["attacks"]) if curve else []
    for label in members if len(members) > 1 else []:
        ax.plot(eps, [curve[e]["attacks"][label] for e in eps], linestyle="--", marker=".", label=label)
    ax.axhline(clean_accuracy, color="tab:green", linewidth=0.8, label="clean")
    ax.set_xlabel("eps ([0, 1] pixel scale)")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
