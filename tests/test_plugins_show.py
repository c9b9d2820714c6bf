"""``sat-toolkit plugins --show NAME``: a plugin's parameters, from what the plugin declares."""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner

from sat_toolkit.cli import cli

COSINE_ACTIVATION = '''
import torch
from sat_toolkit.activations import Activation
from sat_toolkit.plugins import hookimpl


class Cosine(Activation):
    """x * cos(x), as a plugin author writes it.

    Args:
        scale: how fast the cosine turns. Longer explanations after the first sentence
            are not shown.
    """

    name = "cosine"
    description = "x times cos(scale x)"
    smooth = True

    def __init__(self, scale: float = 2.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.cos(self.scale * x)


@hookimpl
def sat_register_activations() -> list[type]:
    return [Cosine]
'''


def show(*args: str) -> Any:
    return CliRunner().invoke(cli, ["plugins", "--show", *args])


def test_an_objectives_parameters() -> None:
    result = show("trades")
    assert result.exit_code == 0
    assert result.output.startswith("objective 'trades' from smooth-adversarial-training")
    (row,) = [line for line in result.output.splitlines() if line.startswith("beta ")]
    assert row.split()[:3] == ["beta", "float", "6.0"] and "the weight of the robustness term" in row


def test_an_attacks_parameters_with_bounds_and_inherited_docs() -> None:
    result = show("pgd", "--json")
    assert result.exit_code == 0
    rows = {row["name"]: row for row in json.loads(result.output)["parameters"]}
    assert rows["steps"] == {
        "name": "steps", "type": "int", "default": "10", "bounds": ">= 1, <= 100000",
        "doc": "number of gradient steps (>= 1)",
    }  # fmt: skip
    assert rows["eps"]["default"] == "4/255" and rows["eps"]["bounds"] == ">= 0"
    # PGD's docstring says "see Attack" for the shared ones: the base class's entry is shown.
    assert rows["bn_mode"]["doc"].startswith("BatchNorm during the attack")
    assert rows["seed"]["bounds"] == ">= 0, <= 4294967295"


def test_a_required_parameter_and_kwargs() -> None:
    rows = {row["name"]: row for row in json.loads(show("timm", "--json").output)["parameters"]}
    assert rows["architecture"]["default"] == "(required)"
    assert rows["init_from"]["doc"].startswith("a local .safetensors file")
    assert "**timm_kwargs" in rows


def test_a_third_party_plugin_and_a_name_two_kinds_share(fake_distribution: Any) -> None:
    fake_distribution("cos-acts", COSINE_ACTIVATION, version="0.3")
    result = show("cosine")
    assert result.exit_code == 2
    assert "plugins of several kinds are called that (activation, schedule); add --kind" in result.output
    result = show("cosine", "--kind", "activation")
    assert result.exit_code == 0
    assert result.output.startswith("activation 'cosine' from cos-acts 0.3: x times cos(scale x)")
    (row,) = [line for line in result.output.splitlines() if line.startswith("scale ")]
    assert row.split()[:3] == ["scale", "float", "2.0"]
    assert row.rstrip().endswith("how fast the cosine turns")


def test_an_unknown_name_is_one_line_with_the_closest() -> None:
    result = show("tradez")
    assert result.exit_code == 2
    assert result.output == "Error: --show tradez: no plugin has that name; did you mean 'trades'?\n"


def test_a_name_two_packages_share_says_so_and_each_shows_by_its_qualified_name(
    fake_distribution: Any,
) -> None:
    """Before: ``--show wave`` said "no plugin has that name" although two packages register it."""
    wave = COSINE_ACTIVATION.replace('"cosine"', '"wave"')
    fake_distribution("wave-one", wave, version="1.0")
    fake_distribution("wave-two", wave, version="2.0")
    result = show("wave")
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "name the one you mean: 'wave-one:wave' or 'wave-two:wave'" in result.output
    result = show("wave-two:wave")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("activation 'wave-two:wave' from wave-two 2.0: x times cos(scale x)")


def test_a_name_whose_plugin_failed_to_load_says_why(fake_distribution: Any) -> None:
    broken = COSINE_ACTIVATION.replace('"cosine"', '"broken"').replace(
        "    smooth = True\n", "    smooth = 'yes'\n"
    )
    fake_distribution("broken-acts", broken)
    result = show("broken")
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert result.output.startswith("Error: activation 'broken' cannot be used:"), result.output
