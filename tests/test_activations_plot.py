"""``activations --plot`` draws every activation it can and names those it skipped, and why."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sat_toolkit.activations.plot import plot_activations
from sat_toolkit.cli import cli
from sat_toolkit.errors import SatError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

ACTIVATIONS = """
import torch
from torch import nn
from sat_toolkit.plugins import hookimpl

class Wobble(nn.Module):
    name = "wobble"
    smooth = True
    def forward(self, x):
        return x * 2

class NeedsK(nn.Module):
    name = "needs_k"
    smooth = True
    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = k
    def forward(self, x):
        return torch.tanh(self.k * x)

class Raises(nn.Module):
    name = "raises"
    smooth = True
    def forward(self, x):
        raise RuntimeError("boom in forward\\nsecond line of the traceback text")

class NanAct(nn.Module):
    name = "nan_act"
    smooth = True
    def forward(self, x):
        return torch.log(x)  # NaN for x < 0

@hookimpl
def sat_register_activations():
    return [Wobble, NeedsK, Raises, NanAct]
"""

NEEDS_K = (
    "needs the parameter 'k' (plot it with "
    'sat_toolkit.activations.plot.plot_activations([{"name": "needs_k", "k": ...}], path))'
)
RAISES = "RuntimeError: boom in forward"
NAN = "its value or gradient is not finite (NaN or inf) on [-3, 3]"


@pytest.fixture
def odd_activations(fake_distribution, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    fake_distribution("odd-acts", ACTIVATIONS)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_plot_all_draws_the_rest_and_names_each_skipped_one(odd_activations: Path) -> None:
    result = CliRunner().invoke(cli, ["activations", "--plot", "all.png"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert (odd_activations / "all.png").read_bytes()[:8] == PNG_MAGIC
    assert result.stderr.splitlines() == [
        f"skipped 'nan_act': {NAN}",
        f"skipped 'needs_k': {NEEDS_K}",
        f"skipped 'raises': {RAISES}",
    ]
    assert "wobble" in result.stdout  # still listed in the table
    assert result.stdout.rstrip().endswith("wrote all.png (10 activations)")  # 9 built-ins + wobble


def test_the_figure_holds_every_drawable_activation(odd_activations: Path) -> None:
    names = ["silu", "needs_k", "wobble", "raises", "relu", "nan_act"]
    plot = plot_activations(names, odd_activations / "some.png")
    assert plot.drawn == ["silu", "wobble", "relu"]
    assert plot.skipped == {"needs_k": NEEDS_K, "raises": RAISES, "nan_act": NAN}
    assert plot.path.read_bytes()[:8] == PNG_MAGIC


def test_the_hint_works_a_table_with_the_parameter_is_drawn(odd_activations: Path) -> None:
    plot = plot_activations([{"name": "needs_k", "k": 2.0}], odd_activations / "k.png")
    assert plot.drawn == ["needs_k (k=2.0)"] and plot.skipped == {}


def test_nothing_drawable_is_one_error(odd_activations: Path) -> None:
    with pytest.raises(SatError) as caught:
        plot_activations(["needs_k", "raises"], odd_activations / "none.png")
    assert (
        caught.value.message
        == f"nothing to plot: no activation could be drawn ('needs_k': {NEEDS_K}; 'raises': {RAISES})"
    )
    assert not (odd_activations / "none.png").exists()


@pytest.mark.parametrize(("name", "why"), [("needs_k", NEEDS_K), ("raises", RAISES), ("nan_act", NAN)])
def test_only_an_undrawable_activation_is_one_line_exit_2(odd_activations: Path, name: str, why: str) -> None:
    result = CliRunner().invoke(cli, ["activations", "--only", "wobble", "--only", name, "--plot", "x.png"])
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output
    assert result.stderr.splitlines() == [f"Error: cannot plot '{name}': {why}"]
    assert not (odd_activations / "x.png").exists()
