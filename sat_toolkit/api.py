"""The public Python API: what the CLI does, callable from a notebook or a script."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from torch import nn


def run(
    recipe: str | Path | Mapping[str, Any],
    overrides: Iterable[str] = (),
    *,
    resume: bool = False,
    show_progress: bool = True,
) -> Any:
    """Train and evaluate a recipe (a TOML path or a dict), like ``sat-toolkit run``.

    ``overrides`` are ``"key.path=value"`` strings, as ``--set`` takes them. Returns a
    ``RunSummary`` with ``run_dir`` and ``metrics`` (also written to ``metrics.json``).
    """
    from sat_toolkit.engine.trainer import train
    from sat_toolkit.recipe import load_recipe

    return train(load_recipe(recipe, overrides), resume=resume, show_progress=show_progress)


def load_model(run_dir_or_checkpoint: str | Path, device: str | None = None) -> nn.Module:
    """The trained model of a run directory or ``.safetensors`` export, in eval mode.

    Inputs are images in [0, 1] (normalisation is inside the model); the architecture is
    rebuilt from the config saved with the weights.
    """
    from sat_toolkit.export import load_model as _load

    return _load(run_dir_or_checkpoint, device=device)
