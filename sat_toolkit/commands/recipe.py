"""``sat-toolkit recipe``: print a recipe fully resolved, or just check it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from sat_toolkit.recipe import Recipe, load_recipe

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
    into floats: exactly what a run of RECIPE would use. What a run derives and TOML
    cannot hold (an unset step size, the default validation attack) is said in comments.
    """
    recipe = load_recipe(recipe_path, overrides)
    click.echo(with_resolved_notes(recipe.to_toml(), recipe), nl=False)


def with_resolved_notes(text: str, recipe: Recipe) -> str:
    """``text`` (the recipe's TOML) with comments for what a run resolves but TOML cannot hold.

    An unset step size is None, which TOML has no word for, so PGD-20's table showed no
    step at all; the validation attack is left out of the file while it is the default
    (runs saved before ``[attack.validate]`` existed must read back unchanged). Both are
    what a run uses, so ``show`` says them, as comments a copy of the output keeps inert.
    """
    tables = {"[attack.train]": recipe.attack.train.to_dict()}
    for label, spec in recipe.attack.eval.attacks.items():
        tables[f"[attack.eval.{label}]"] = spec.to_dict()
    if recipe.attack.validate is not None:
        tables["[attack.validate]"] = recipe.attack.validate.to_dict()
    lines = text.splitlines()
    out: list[str] = []
    notes: list[str] = []
    last_attack_table = max((i for i, line in enumerate(lines) if line.startswith("[attack.")), default=-1)
    for index, line in enumerate(lines):
        if line.startswith("["):
            _end_table(out, notes)
            notes = [f"# {note}" for note in _step_notes(tables.get(line), recipe)]
        if line.startswith("[") and index > last_attack_table >= 0 and recipe.attack.validate is None:
            out.extend(_default_validation_block(recipe))
            last_attack_table = -1  # once
        out.append(line)
    _end_table(out, notes)
    return "\n".join(out) + "\n"


def _end_table(out: list[str], notes: list[str]) -> None:
    """Put ``notes`` at the end of the table ``out`` ends with, before its blank lines."""
    end = len(out)
    while end and out[end - 1] == "":
        end -= 1
    out[end:end] = notes


def _step_notes(spec: dict[str, Any] | None, recipe: Recipe) -> list[str]:
    """The resolved step size of a step-based attack table that sets none."""
    if spec is None or "step_size" in spec or "rel_step_size" in spec:
        return []
    from sat_toolkit.errors import SatError
    from sat_toolkit.evaluation.suites import build_attacks

    try:
        built = build_attacks({"attack": spec}, eps=recipe.attack.eps, seed=recipe.attack.eval.seed)
    except (SatError, TypeError, ValueError):  # a plugin that builds only later: no note, no failure
        return []
    attack = built["attack"]
    eps = getattr(attack, "eps", None)
    if not hasattr(attack, "resolved_step_size") or not isinstance(eps, (int, float)):
        return []
    rule = "eps" if attack.steps == 1 else f"2.5 / steps x eps = 2.5 / {attack.steps} x {eps:g}"
    return [f"step size {attack.resolved_step_size(eps):g} (unset: {rule}; set step_size or rel_step_size)"]


def _default_validation_block(recipe: Recipe) -> list[str]:
    """``[attack.validate]`` as the run will use it, commented out: it is not set."""
    from sat_toolkit.recipe.toml_io import dumps

    table = dumps({"attack": {"validate": recipe.attack.validation}})
    return [
        "# [attack.validate] is not set: each validation runs this, in the training attack's threat model",
        *(f"# {line}" for line in table.splitlines()),
        "",
    ]


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
