"""``sat-toolkit recipe``: print a recipe fully resolved, or just check it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from sat_toolkit.recipe import load_recipe

_recipe_argument = click.argument("recipe_path", metavar="RECIPE", type=click.Path(path_type=Path))


def _set_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override a recipe key, e.g. --set attack.train.eps=8/255 (repeatable).",
    )(func)


@click.group("recipe")
def recipe_command() -> None:
    """Check TOML recipes and show them with every default filled in."""


@recipe_command.command("show")
@_recipe_argument
@_set_option
def show_command(recipe_path: Path, overrides: tuple[str, ...]) -> None:
    """Print RECIPE resolved, as TOML.

    Every default is filled in, overrides applied and fractions such as "4/255" turned
    into floats: exactly what a run of RECIPE would use.
    """
    click.echo(load_recipe(recipe_path, overrides).to_toml(), nl=False)


@recipe_command.command("validate")
@_recipe_argument
@_set_option
def validate_command(recipe_path: Path, overrides: tuple[str, ...]) -> None:
    """Check RECIPE: print "ok", or every problem (exit code 2).

    Problems are listed one per line with their key path, e.g.
    "attack.train.eps: must be >= 0, got -0.1".
    """
    load_recipe(recipe_path, overrides)
    click.echo("ok")


@recipe_command.command("reference")
def reference_command() -> None:
    """Print the recipe reference (every key and built-in plugin parameter) as Markdown.

    docs/reference.md is this output: regenerate it with
    `sat-toolkit recipe reference > docs/reference.md`.
    """
    from sat_toolkit.commands.reference import recipe_reference

    click.echo(recipe_reference(), nl=False)
