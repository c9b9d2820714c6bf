"""``sat-toolkit run``: one TOML recipe in; a trained, evaluated, resumable run out."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from sat_toolkit.commands.recipe import _set_option
from sat_toolkit.errors import SatError

#: What shells report for a process ended by SIGINT (128 + 2).
INTERRUPTED_EXIT_CODE = 130


def resume_command(
    recipe_path: Path, overrides: tuple[str, ...], *, no_progress: bool = False, processes: int = 1
) -> str:
    """The command line that continues this run: the same recipe, overrides and output
    options, plus --resume; under ``accelerate launch``, as many processes again (a plain
    ``sat-toolkit run`` is one process, whose epochs have N times the steps)."""
    launch = ["accelerate", "launch", "--multi_gpu", "--num_processes", str(processes), "-m", "sat_toolkit"]
    args = [*(launch if processes > 1 else ["sat-toolkit"]), "run", str(recipe_path)]
    for item in overrides:
        args += ["--set", item]
    return shlex.join([*args, *(["--no-progress"] if no_progress else []), "--resume"])


def _with_recipe_key_hint(exc: SatError) -> SatError:
    """A dataset's "set image_column" with where a recipe takes it: ``data.image_column``."""
    from sat_toolkit.data.hints import asked_dataset_key

    asked = asked_dataset_key(exc.message)
    if asked is None:
        return exc
    key = asked[1]
    hint = f"(data.{key} in the recipe, or --set data.{key}=...)"
    phrase = f"set {key}"
    if phrase in exc.message:  # right after the words it explains, not after the alternatives
        return SatError(exc.message.replace(phrase, f"{phrase} {hint}", 1))
    return SatError(f"{exc.message} {hint}")


@click.command("run")
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(path_type=Path))
@_set_option
@click.option("--resume", is_flag=True, help="Continue the run in run.output_dir from its latest checkpoint.")
@click.option("--no-progress", is_flag=True, help="No progress bar (logs and results are still printed).")
@click.option(
    "--dry-run", is_flag=True, help="Build everything, train 2 steps on synthetic data of the recipe's shape."
)
@click.option(
    "--dry-run-size", type=click.IntRange(min=8), help="Image size for --dry-run (default: the recipe's)."
)
@click.option(
    "--keep", is_flag=True, help="Keep the --dry-run directory (deleted by default: it can be gigabytes)."
)
def run_command(
    recipe_path: Path,
    overrides: tuple[str, ...],
    resume: bool,
    no_progress: bool,
    dry_run: bool,
    dry_run_size: int | None,
    keep: bool,
) -> None:
    """Train adversarially as RECIPE says, then evaluate.

    The run directory (run.output_dir, default runs/<run.name>) receives the resolved
    recipe, checkpoints, TensorBoard logs, model.safetensors and metrics.json. Works the
    same under 'accelerate launch -m sat_toolkit run RECIPE'.
    """
    from sat_toolkit.api import run

    if dry_run_size is not None and not dry_run:
        raise SatError("--dry-run-size only applies with --dry-run")
    if keep and not dry_run:
        raise SatError("--keep only applies with --dry-run (a real run keeps its directory)")
    try:
        summary = run(
            recipe_path,
            overrides=overrides,
            resume=resume,
            show_progress=not no_progress,
            dry_run=dry_run,
            dry_run_image_size=dry_run_size,
            keep=keep,
        )
    except SatError as exc:
        raise _with_recipe_key_hint(exc) from None
    except KeyboardInterrupt:
        # Checkpoints are written atomically, so an interrupt loses at most the steps since
        # the last one; say how to continue rather than click's bare "Aborted!" (exit 1).
        # Under `accelerate launch` every rank is interrupted; the main process says it once.
        from accelerate import PartialState

        if not PartialState().is_main_process:
            raise click.exceptions.Exit(INTERRUPTED_EXIT_CODE) from None
        if dry_run:
            click.echo("interrupted; a dry run has nothing to resume", err=True)
        else:
            processes = PartialState().num_processes
            command = resume_command(recipe_path, overrides, no_progress=no_progress, processes=processes)
            click.echo(f"interrupted; continue the run with: {command}", err=True)
        raise click.exceptions.Exit(INTERRUPTED_EXIT_CODE) from None
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return  # under `accelerate launch`, the main process speaks for the run
    if dry_run:
        files = (
            f"its files are kept in {summary.run_dir}"
            if keep
            else "its files were deleted (--keep keeps them)"
        )
        click.echo(f"dry run ok: {summary.metrics['steps']} steps; {files}")
    else:
        click.echo(f"run directory: {summary.run_dir}")
