"""``sat-toolkit activations``: what each activation is, and a picture of it."""

from __future__ import annotations

from pathlib import Path

import click

from sat_toolkit.commands.table import format_table
from sat_toolkit.plugins import PluginKind, get_plugin_host


@click.command("activations")
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Draw value and gradient of each activation to this PNG.",
)
@click.option(
    "--only",
    multiple=True,
    metavar="NAME",
    help="Only this activation, in the table and in --plot (repeatable; default all).",
)
def activations_command(plot_path: Path | None, only: tuple[str, ...]) -> None:
    """List the installed activations; with --plot, draw their values and gradients.

    --only NAME keeps just the named activations, with or without --plot; a name that is
    not installed is an error (exit code 2), never an empty table. --plot draws every
    activation it can and names each one it skipped, and why (a required parameter, an
    error when drawn); with --only, one that cannot be drawn is an error.
    """
    host = get_plugin_host()
    records = [r for r in host.records(PluginKind.ACTIVATION) if r.kind == "activation"]
    if plot_path is not None:
        from sat_toolkit.commands.eval import check_writable

        check_writable(plot_path, "--plot", plot=True)  # before the table and the drawing, not after
    if only:
        for name in only:
            host.get(PluginKind.ACTIVATION, name)  # an unknown name: one line with the closest match
        records = [r for r in records if r.name in only]
    rows = []
    for r in records:
        obj = r.obj
        smooth = "-" if obj is None else ("yes" if getattr(obj, "smooth", False) else "no")
        about = getattr(obj, "description", "") if obj is not None else (r.error or r.status)
        rows.append((r.name, smooth, r.distribution, about))
    click.echo(format_table(("name", "smooth", "distribution", "formula / notes"), rows))
    if plot_path is not None:
        from sat_toolkit.activations.plot import plot_activations

        # Named with --only: each must be drawn. Otherwise one that cannot be is skipped, said why.
        names = list(only) or [r.name for r in records if r.status == "ok"]
        plot = plot_activations(names, plot_path, strict=bool(only))
        for name, why in plot.skipped.items():
            click.echo(f"skipped '{name}': {why}", err=True)
        click.echo(f"\nwrote {plot.path} ({len(plot.drawn)} activations)")
