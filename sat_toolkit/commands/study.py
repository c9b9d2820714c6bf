"""``sat-toolkit study STUDY.toml``: a grid of runs over seeds, and the paper-style report."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from sat_toolkit.commands.recipe import _set_option
from sat_toolkit.commands.run import INTERRUPTED_EXIT_CODE
from sat_toolkit.errors import SatError


def _command_line(
    study_path: Path,
    overrides: tuple[str, ...],
    jobs: int,
    output_dir: Path | None,
    report_only: bool,
    only: tuple[str, ...] = (),
    reuse: tuple[Path, ...] = (),
) -> str:
    """This invocation as the report quotes it: the real argv when run as ``sat-toolkit``
    (or ``python -m sat_toolkit``), else rebuilt from the parsed options (e.g. in tests)."""
    if Path(sys.argv[0]).name in ("sat-toolkit", "__main__.py") and "study" in sys.argv[1:]:
        return shlex.join(["sat-toolkit", *sys.argv[1:]])
    args = ["sat-toolkit", "study", str(study_path)]
    for item in overrides:
        args += ["--set", item]
    for name in only:
        args += ["--only", name]
    for directory in reuse:
        args += ["--reuse", str(directory)]
    args += ["--jobs", str(jobs)] if jobs != 1 else []
    args += ["--output-dir", str(output_dir)] if output_dir is not None else []
    args += ["--report-only"] if report_only else []
    return shlex.join(args)


@click.command("study")
@click.argument("study_path", metavar="STUDY", type=click.Path(path_type=Path))
@_set_option
@click.option(
    "--jobs", "-j", default=1, show_default=True, type=click.IntRange(min=1),
    help="Cells run side by side in separate processes; each gets max(1, cores // jobs) torch threads "
    "(at most OMP_NUM_THREADS).",
)  # fmt: skip
@click.option("--output-dir", type=click.Path(path_type=Path), help="Use this instead of study.output_dir.")
@click.option(
    "--only", multiple=True, metavar="CELL",
    help="Run only these cells: a label (all its seeds) or LABEL/seedK (repeatable); the rest wait.",
)  # fmt: skip
@click.option(
    "--reuse", multiple=True, metavar="DIR", type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Take a finished run under DIR (searched recursively) whose recipe equals a new cell's in every "
    "key that can change a result, instead of training that cell (repeatable).",
)  # fmt: skip
@click.option("--report-only", is_flag=True, help="Rebuild the report from the finished runs; train nothing.")
@click.option("--dry-run", is_flag=True, help="Check the study and list every cell's status; train nothing.")
def study_command(
    study_path: Path,
    overrides: tuple[str, ...],
    jobs: int,
    output_dir: Path | None,
    report_only: bool,
    dry_run: bool,
    only: tuple[str, ...],
    reuse: tuple[Path, ...],
) -> None:
    """Run every cell of STUDY (axis values x seeds) and write the report.

    Each cell is an ordinary run in <output_dir>/<label>/seed<k>. Finished cells are
    skipped and interrupted ones resume from their last checkpoint, so running the same
    command again continues the study. --set applies to every cell (after the study's own
    set, before the axes' values, which it must not touch). The report (report.md,
    report.json, scatter.png, changes.png and, where runs validate, curves.png in the output
    directory) gives clean and robust accuracy per cell label, mean ± std over seeds, and
    the change against the study's baseline.
    --only runs some cells first (e.g. --only fc_head/seed1); the report still covers
    every finished cell. --reuse copies runs another study already made of the very same
    recipe (the report names where they were trained).
    """
    from sat_toolkit.study import load_study, plan, run_study, write_report

    if report_only and (dry_run or only or reuse):
        extra = "--dry-run" if dry_run else "--only" if only else "--reuse"
        raise SatError(
            f"--report-only rebuilds the report from every finished cell and runs nothing; drop {extra}"
        )
    spec = load_study(study_path, overrides, output_dir)
    command = _command_line(study_path, overrides, jobs, output_dir, report_only, only, reuse)
    if report_only:
        write_report(spec, echo=click.echo, command=command)
        return
    if dry_run:
        from sat_toolkit.recipe.finished import REDO, read_finished_metrics
        from sat_toolkit.study.reuse import matches

        planned = plan(spec, only)
        reusable = matches(planned, reuse)
        for p in planned:
            how = {"resume": f"resume from {p.resume_point}", "running": "running in another process"}.get(
                p.status, p.status
            )
            if p.cell.key in reusable:
                how = f"new, would reuse the run in {reusable[p.cell.key].origin}"
            if damaged := read_finished_metrics(p.cell.run_dir)[1]:  # the run would stop at it
                how = f"metrics.json is damaged ({damaged}); {REDO}"
            click.echo(f"{p.cell.label} seed {p.cell.seed}: {how} ({p.cell.run_dir})")
        finished = sum(p.status == "done" for p in planned)
        copied = f", {len(reusable)} to copy with --reuse" if reusable else ""
        click.echo(f"{len(planned)} cells; {finished} finished{copied}")
        return
    try:
        run_study(spec, jobs=jobs, command=command, echo=click.echo, only=only, reuse=reuse)
    except KeyboardInterrupt:
        # Each cell checkpoints as it trains: say that the same command continues the
        # study rather than click's bare "Aborted!" (exit 1), as `run` does.
        click.echo(
            "interrupted; finished cells are kept and the interrupted ones resume from their last "
            f"checkpoint: continue the study with: {command}",
            err=True,
        )
        raise click.exceptions.Exit(INTERRUPTED_EXIT_CODE) from None
