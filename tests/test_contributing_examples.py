"""The plugin examples in CONTRIBUTING.md are real plugins: found ``ok``, conforming, usable in a run.

Each kind's minimal example is the ```python block right after an ``<!-- example: KIND -->``
comment. It is installed as a package of its own (``sat_toolkit.testing.install_fake_distribution``)
and must be discovered ``ok``, pass its kind's conformance check, and (all six together)
validate and train in a recipe. So the documentation cannot drift from the toolkit.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from safetensors.torch import load_file

import sat_toolkit
from sat_toolkit.cli import cli
from sat_toolkit.parsing import tomllib
from sat_toolkit.plugins import PluginKind, get_plugin_host
from sat_toolkit.testing import check_conformance

pytestmark = pytest.mark.usefixtures("one_thread")

CONTRIBUTING = Path(__file__).resolve().parents[1] / "CONTRIBUTING.md"
_EXAMPLE = re.compile(r"<!-- example: (\w+) -->\n```python\n(.*?)\n```", re.DOTALL)
#: The registry name each example defines (the recipe below uses them).
NAMES = {
    "activation": "swish_beta",
    "attack": "noise_fgsm",
    "schedule": "exponential",
    "model": "tiny_mlp",
    "dataset": "stripes",
    "objective": "mixed_ce",
}


def examples() -> dict[str, str]:
    """kind -> the source of its example module, in the order CONTRIBUTING.md gives them."""
    found = _EXAMPLE.findall(CONTRIBUTING.read_text(encoding="utf-8"))
    kinds = [kind for kind, _ in found]
    assert len(set(kinds)) == len(kinds), f"an example kind is marked twice: {kinds}"
    return dict(found)


def install(fake_distribution: Any, kind: str) -> None:
    fake_distribution(f"contributing-{kind}", examples()[kind] + "\n", version="0.1")


def test_contributing_has_one_example_per_kind() -> None:
    assert list(examples()) == ["activation", "attack", "schedule", "model", "dataset", "objective"]
    assert set(examples()) == {kind.value for kind in PluginKind}


@pytest.mark.parametrize("kind", list(NAMES))
def test_example_is_found_ok_and_conforms(fake_distribution: Any, kind: str) -> None:
    install(fake_distribution, kind)
    (record,) = [r for r in get_plugin_host().records(kind) if r.distribution == f"contributing-{kind}"]
    assert (record.kind, record.name, record.version, record.status) == (kind, NAMES[kind], "0.1", "ok")
    assert record.error is None
    check_conformance(kind, record.obj)


def test_example_activation_conforms_when_learnable(fake_distribution: Any) -> None:
    install(fake_distribution, "activation")
    check_conformance(
        "activation", get_plugin_host().get("activation", "swish_beta"), beta=2.0, learnable=True
    )


RECIPE = """
[run]
name = "contributing"
seed = 0
output_dir = "{output_dir}"

[data]
name = "stripes"
size = 128
batch_size = 32

[model]
name = "tiny_mlp"
hidden = 16

[activation]
name = "swish_beta"
learnable = true

[attack.train]
name = "noise_fgsm"
eps = 0.1

[attack.eval]
samples = 64

[attack.eval.noise]
name = "noise_fgsm"

[objective]
name = "mixed_ce"
clean_weight = 0.3

[optimizer]
name = "sgd"
lr = 0.1

[schedule.lr]
name = "exponential"
final = 0.1

[train]
epochs = 2
validate_every_epochs = 0
log_every_steps = 4

[checkpoint]
every_steps = 0
keep_last = 1

[logging]
tensorboard = false
"""


def test_examples_validate_and_train_together_in_a_recipe(fake_distribution: Any, tmp_path: Path) -> None:
    for kind in NAMES:
        install(fake_distribution, kind)
    run_dir = tmp_path / "run"
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE.format(output_dir=run_dir))
    validated = CliRunner().invoke(cli, ["recipe", "validate", str(recipe)])
    assert (validated.exit_code, validated.output) == (0, "ok\n")

    sat_toolkit.run(recipe, show_progress=False)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    used = {(e["kind"], e["name"]): e["distribution"] for e in metrics["plugins"]}
    assert all(used[(kind, name)] == f"contributing-{kind}" for kind, name in NAMES.items())
    assert (metrics["steps"], metrics["epochs"]) == (8, 2)  # 128 stripes / 32 per batch, 2 epochs
    attack = metrics["evaluation"]["attacks"]["noise"]
    assert {k: attack["settings"][k] for k in ("name", "eps", "step", "seed")} == {
        "name": "noise_fgsm",
        "eps": 0.1,
        "step": 1.25,
        "seed": 0,
    }
    assert metrics["evaluation"]["samples"] == 64
    # Every plugin of the run is recorded with the example package that provided it.
    provided = {(e["kind"], e["name"]): (e["distribution"], e["version"]) for e in metrics["plugins"]}
    assert {key: provided[key] for key in NAMES.items()} == {
        (kind, name): (f"contributing-{kind}", "0.1") for kind, name in NAMES.items()
    }
    resolved = tomllib.loads((run_dir / "recipe.toml").read_text())
    assert resolved["schedule"]["lr"] == {"name": "exponential", "final": 0.1}
    assert resolved["data"]["noise"] == 0.2  # the dataset's default, written out
    # The learnable beta of each of the two activations is trained and saved with the weights.
    weights = load_file(str(run_dir / "model.safetensors"))
    betas = sorted(k for k in weights if k.endswith(".beta"))
    assert len(betas) == 2 and all(float(weights[k]) != 1.0 for k in betas)
