"""The ``sat-toolkit`` command line.

Each sub-command lives in its own module under ``sat_toolkit.commands``; this module
only assembles the group and turns user mistakes into one-line errors with exit code 2.
"""

from __future__ import annotations

import os
import sys
import warnings

import click

from sat_toolkit import __version__
from sat_toolkit.commands.activations import activations_command
from sat_toolkit.commands.eval import eval_command
from sat_toolkit.commands.plugins import plugins_command
from sat_toolkit.commands.recipe import recipe_command
from sat_toolkit.commands.run import run_command
from sat_toolkit.commands.study import study_command
from sat_toolkit.plugins import PluginWarning
from sat_toolkit.recipe.errors import RecipeError


def _show_plugin_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Plugin problems are one readable line on stderr, not a warnings-module dump."""
    if issubclass(category, PluginWarning):
        if os.environ.get("RANK", "0") not in ("", "0"):
            return  # under accelerate launch every process meets it: the main one says it
        click.echo(f"{category.label}: {message}", err=True)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


class _OneLineGroup(click.Group):
    """Usage mistakes (a bad option value, a missing argument) as one line, like every other error.

    click would print the usage and a help hint first; the hint goes into the one line.
    """

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            if exc.ctx is not None:
                exc.message = f"{exc.message} (see '{exc.ctx.command_path} --help')"
                exc.ctx = None
            raise _said_once(exc) from None
        except click.ClickException as exc:
            raise _said_once(exc) from None


def _said_once(exc: click.ClickException) -> click.ClickException | click.exceptions.Exit:
    """Under ``accelerate launch`` every process meets the same recipe or usage mistake: the
    main one says it, the others exit with its code. An error only some process may meet (its
    share of the data, its device) is said by each, with its rank."""
    rank = os.environ.get("RANK", "0")
    if rank in ("", "0"):
        return exc
    if isinstance(exc, (click.UsageError, RecipeError)):
        return click.exceptions.Exit(exc.exit_code)
    exc.message = f"[rank {rank}] {exc.message}"
    return exc


@click.group(cls=_OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sat-toolkit")
def cli() -> None:
    """Smooth adversarial training: train, attack and evaluate robust classifiers."""


cli.add_command(plugins_command)
cli.add_command(activations_command)
cli.add_command(recipe_command)
cli.add_command(run_command)
cli.add_command(eval_command)
cli.add_command(study_command)


def main() -> None:
    warnings.showwarning = _show_plugin_warning
    sys.exit(cli.main(prog_name="sat-toolkit", standalone_mode=True))
