"""``sat-toolkit run``: one TOML recipe in; a trained, evaluated, resumable run out."""

from __future__ import annotations

from pathlib import Path

import click

from sat_toolkit.commands.recipe import _set_option


@click.command("run")
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(path_type=Path))
@_set_option
@click.option("--resume", is_flag=True, help="Continue the run in run.output_dir from its latest checkpoint.")
@click.option("--no-progress", is_flag=True, help="No progress bar (logs and results are still printed).")
def run_command(recipe_path: Path, overrides: tuple[str, ...], resume: bool, no_progress: bool) -> None:
    """Train adversarially as RECIPE says, then evaluate.

    The run directory (run.output_dir, default runs/<run.name>) receives the resolved
    recipe, checkpoints, TensorBoard logs, model.safetensors and metrics.json. Works the
    same under 'accelerate launch -m sat_toolkit run RECIPE'.
    """
    from sat_toolkit.api import run

    summary = run(recipe_path, overrides=overrides, resume=resume, show_progress=not no_progress)
    click.echo(f"run directory: {summary.run_dir}")
