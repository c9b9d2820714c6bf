"""docs/reference.md is generated from the code: it must equal what the code says now."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from sat_toolkit.cli import cli
from sat_toolkit.commands.reference import recipe_reference

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "reference.md"


def test_the_committed_reference_is_current() -> None:
    assert REFERENCE.read_text(encoding="utf-8") == recipe_reference(), (
        "docs/reference.md is stale: run `sat-toolkit recipe reference > docs/reference.md`"
    )


def test_the_reference_holds_every_key_and_plugin_parameter_from_their_declarations() -> None:
    from sat_toolkit.recipe.schema import TrainConfig

    text = recipe_reference()
    overfitting = next(f for f in TrainConfig.__dataclass_fields__.values() if f.name == "overfitting")
    assert (
        f'| `overfitting` | `"warn" \\| "stop" \\| "off"` | `\'warn\'` |  | {overfitting.metadata["doc"]} |'
        in text
    )
    assert "| `beta` | `float` | `6.0` | >= 0 | the weight of the robustness term" in text  # trades
    assert "| `steps` | `int` | `10` | >= 1, <= 100000 | number of gradient steps (>= 1) |" in text  # pgd
    for name in ("pgd_at", "trades", "mart", "standard", "small_cnn", "digits", "cosine", "silu"):
        assert f"#### `{name}`" in text


def test_the_cli_prints_it() -> None:
    result = CliRunner().invoke(cli, ["recipe", "reference"])
    assert result.exit_code == 0 and result.output == recipe_reference()


def test_every_built_in_parameter_says_what_it_does() -> None:
    """A stranger's walk: `plugins --show cosine` left the doc column of floor and the warm-up
    blank. Every built-in parameter is documented (its Args: entry or Param doc)."""
    undocumented = [
        line
        for line in recipe_reference().splitlines()
        if line.startswith("| `") and line.endswith("|  |") and not line.startswith("| `**")
    ]
    assert undocumented == []
