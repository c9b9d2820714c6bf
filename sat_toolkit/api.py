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
    dry_run: bool = False,
    dry_run_image_size: int | None = None,
    keep: bool = False,
) -> Any:
    """Train and evaluate a recipe (a TOML path or a dict), like ``sat-toolkit run``.

    ``overrides`` are ``"key.path=value"`` strings, as ``--set`` takes them. Returns a
    ``RunSummary`` with ``run_dir`` and ``metrics`` (also written to ``metrics.json``).
    ``dry_run`` builds everything and trains two steps on synthetic data of the recipe's
    shape (``dry_run_image_size`` lowers the resolution) in a temporary directory, which
    is deleted when the dry run ends or fails (a large model's checkpoint is gigabytes);
    ``keep=True`` keeps it at ``run_dir``.
    """
    from sat_toolkit.engine.trainer import train
    from sat_toolkit.errors import SatError
    from sat_toolkit.recipe import load_recipe

    if keep and not dry_run:
        raise SatError("keep=True only applies with dry_run=True (a real run keeps its directory)")
    if dry_run:
        from sat_toolkit.engine.dry_run import dry_run as run_dry

        return run_dry(
            recipe, overrides, image_size=dry_run_image_size, keep=keep, show_progress=show_progress
        )
    overrides = tuple(overrides)  # read twice below
    loaded = load_recipe(recipe, overrides)
    if resume and not isinstance(recipe, Mapping) and not _sets_output_dir(overrides):
        from sat_toolkit.recipe.rundir import refuse_resume_elsewhere

        refuse_resume_elsewhere(recipe, loaded)
    return train(loaded, resume=resume, show_progress=show_progress)


def _sets_output_dir(overrides: Iterable[str]) -> bool:
    from sat_toolkit.recipe import parse_override

    return any(parse_override(item)[0] == ("run", "output_dir") for item in overrides)


def load_model(run_dir_or_checkpoint: str | Path, device: str | None = None) -> nn.Module:
    """The trained model of a run directory or ``.safetensors`` export, in eval mode.

    Inputs are images in [0, 1] (normalisation is inside the model); the architecture is
    rebuilt from the config saved with the weights.
    """
    from sat_toolkit.export import load_model as _load

    return _load(run_dir_or_checkpoint, device=device)
