"""Each kind's contract is checked when the plugin is found, and every hint printed works.

A wrong-shaped plugin used to register as ``ok``, pass recipe validation and fail hours
later with a raw traceback; a typo in a hook name added nothing and said nothing; a
package registering ``silu`` broke the shipped recipes. These tests install real (fake)
distributions and walk the paths a plugin author and a user walk.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from torch import nn

from sat_toolkit.cli import cli
from sat_toolkit.errors import PluginLoadError, UnknownPluginError
from sat_toolkit.plugins import PluginWarning, get_plugin_host
from sat_toolkit.plugins.contracts import contract_problems

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "recipes" / "quickstart.toml"


def _plugin(hook: str, body: str) -> str:
    """A plugin module: ``body`` defines the classes, the hook registers ``[Plugin]``."""
    return textwrap.dedent(body) + textwrap.dedent(
        f"""
        from sat_toolkit.plugins import hookimpl

        @hookimpl
        def {hook}():
            return [Plugin]
        """
    )


# kind -> (hook, a class body that breaks the contract, the reason discovery must give)
BROKEN: dict[str, tuple[str, str, str]] = {
    "attack_without_perturb": (
        "sat_register_attacks",
        """
        class Plugin:
            name = "noperturb"
            def __init__(self, eps=0.1):
                self.eps = eps
            def attack(self, model, x, y):
                return x
        """,
        "attack class Plugin breaks the attack contract: has no method perturb(model, x, y, *, eps=None)",
    ),
    "attack_perturb_without_eps": (
        "sat_register_attacks",
        """
        class Plugin:
            name = "noeps"
            def perturb(self, model, x, y):
                return x
        """,
        "attack class Plugin breaks the attack contract: "
        "'perturb' must accept perturb(model, x, y, *, eps=None)",
    ),
    "attack_required_parameter": (
        "sat_register_attacks",
        """
        class Plugin:
            name = "needy"
            def __init__(self, decay, eps=0.1):
                self.decay = decay
            def perturb(self, model, x, y, *, eps=None):
                return x
        """,
        "attack class Plugin breaks the attack contract: constructor parameter 'decay' has no default; "
        "an attack is built from its name alone in evaluation suites, so give every parameter a default",
    ),
    "activation_positional_only": (
        "sat_register_activations",
        """
        from torch import nn

        class Plugin(nn.Module):
            name = "posonly"
            smooth = True
            def __init__(self, k=1.0, /):
                super().__init__()
                self.k = k
            def forward(self, x):
                return x * self.k
        """,
        "activation class Plugin breaks the activation contract: constructor parameter 'k' is "
        "positional-only; recipes pass keywords, so drop the '/'",
    ),
    "activation_not_a_module": (
        "sat_register_activations",
        """
        class Plugin:
            name = "plain"
            smooth = True
            def __call__(self, x):
                return x
        """,
        "activation class Plugin breaks the activation contract: must be a torch.nn.Module subclass",
    ),
    "activation_without_smooth": (
        "sat_register_activations",
        """
        from torch import nn

        class Plugin(nn.Module):
            name = "unsure"
            def forward(self, x):
                return x
        """,
        "activation class Plugin breaks the activation contract: needs a class attribute 'smooth' = "
        "True or False (True when its gradient is continuous)",
    ),
    "schedule_base_without_value": (
        "sat_register_schedules",
        """
        from sat_toolkit.schedules import Schedule

        class Plugin(Schedule):
            name = "novalue"
            targets = ("lr",)
        """,
        "schedule class Plugin breaks the schedule contract: "
        "does not implement _value(step, total_steps, base)",
    ),
    "schedule_bad_targets": (
        "sat_register_schedules",
        """
        class Plugin:
            name = "wrongslot"
            targets = ("momentum",)
            def value(self, step, total_steps, base):
                return base
        """,
        "schedule class Plugin breaks the schedule contract: 'targets' must be a non-empty tuple of "
        "'lr' and/or 'eps', got ('momentum',)",
    ),
    "alias_as_a_string": (
        "sat_register_activations",
        """
        import torch

        class Plugin(torch.nn.Module):
            name = "swishy"
            also_known_as = "swish"  # a string, whose letters would each be an alias
            smooth = True
            def forward(self, x):
                return x * torch.sigmoid(x)
        """,
        "activation class Plugin breaks the activation contract: 'also_known_as' must be a tuple "
        "of names, e.g. ('swish',) (got 'swish')",
    ),
    "model_without_build": (
        "sat_register_models",
        """
        class Plugin:
            name = "nobuild"
            def make(self, info, activation):
                return None
        """,
        "model class Plugin breaks the model contract: has no method build(info, activation)",
    ),
    "dataset_without_load": (
        "sat_register_datasets",
        """
        class Plugin:
            name = "noload"
            def info(self):
                return None
        """,
        "dataset class Plugin breaks the dataset contract: has no method load(split)",
    ),
    "default_out_of_bounds": (
        "sat_register_objectives",
        """
        from typing import Annotated
        from sat_toolkit.objectives import PGDAT
        from sat_toolkit.params import Param

        class Plugin(PGDAT):
            name = "weighted"
            def __init__(self, weight: Annotated[float, Param(ge=0, le=1)] = -1.0):
                self.weight = weight
        """,
        "objective class Plugin breaks the objective contract: the default weight = -1.0 breaks its "
        "declaration (must be >= 0, got -1.0)",
    ),
    "default_of_the_wrong_type": (
        "sat_register_schedules",
        """
        class Plugin:
            name = "halved"
            def __init__(self, factor: float = "half"):
                self.factor = factor
            def value(self, step, total_steps, base):
                return base
        """,
        "schedule class Plugin breaks the schedule contract: the default factor = 'half' breaks its "
        "declaration (expected a number or a fraction like '4/255', got 'half')",
    ),
    "abstract_builder": (
        "sat_register_models",
        """
        from sat_toolkit.models.base import ModelBuilder

        class Plugin(ModelBuilder):
            name = "half_done"
            def params(self):
                return {}
        """,
        "model class Plugin breaks the model contract: "
        "does not implement build_body (abstract in its base class)",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_class_breaking_its_contract_is_listed_failed_with_the_reason(fake_distribution, case) -> None:
    hook, body, reason = BROKEN[case]
    fake_distribution("broken-kind", _plugin(hook, body))
    with pytest.warns(PluginWarning) as caught:
        host = get_plugin_host()
    assert [str(w.message) for w in caught] == [f"plugin 'broken-kind' from 'broken-kind': {reason}"]
    (row,) = [r for r in host.records() if r.distribution == "broken-kind"]
    assert (row.status, row.error, row.obj) == ("failed", reason, None)
    kind = hook.removeprefix("sat_register_").removesuffix("s")
    with pytest.raises(PluginLoadError) as info:
        host.get(kind, row.name)
    assert str(info.value) == f"{kind} '{row.name}' cannot be used: {reason}"
    # Refused under its own name, it cannot be what another unknown name meant: not listed.
    with pytest.raises(UnknownPluginError) as other:
        host.get(kind, "something_else")
    assert "broken-kind" not in str(other.value)


def test_every_builtin_fulfils_its_contract(fresh_plugin_host: None) -> None:
    rows = [r for r in get_plugin_host().records() if r.builtin and r.kind != "*"]
    assert len(rows) >= 30
    assert {r.name: contract_problems(r.kind, r.obj) for r in rows if contract_problems(r.kind, r.obj)} == {}
    assert all(r.status == "ok" for r in rows)


def test_contract_accepts_static_and_keyword_variants() -> None:
    class Static:
        name = "static_attack"

        @staticmethod
        def perturb(model, x, y, *, eps=None):
            return x

    class Kwargs:
        name = "kwargs_attack"

        def perturb(self, model, x, y, **options):
            return x

    class Linear(nn.Module):
        name = "identity_act"
        smooth = True

        def forward(self, x):
            return x

    assert contract_problems("attack", Static) == []
    assert contract_problems("attack", Kwargs) == []
    assert contract_problems("activation", Linear) == []
    assert contract_problems("activation", Linear()) == [
        "is Linear Linear(), not a class (register the class itself)"
    ]


def test_the_attack_contract_asks_for_the_defaults_recipe_validation_asks_for() -> None:
    """An eps without a default used to pass discovery and then fail validation of the recipe."""

    class NoDefaultEps:
        name = "no_default_eps"

        def __init__(self, *, eps: float, steps: int = 1) -> None:
            self.eps, self.steps = eps, steps

        def perturb(self, model, x, y, *, eps=None):
            return x

    assert contract_problems("attack", NoDefaultEps) == [
        "constructor parameter 'eps' has no default; an attack is built from its name alone in "
        "evaluation suites, so give every parameter a default"
    ]


def test_a_recipe_naming_a_broken_attack_is_refused_before_anything_runs(
    fake_distribution, tmp_path: Path
) -> None:
    hook, body, reason = BROKEN["attack_without_perturb"]
    fake_distribution("broken-kind", _plugin(hook, body))
    recipe = tmp_path / "recipe.toml"
    text = QUICKSTART.read_text(encoding="utf-8").replace(
        '[attack.eval.apgd_ce]\nname = "apgd_ce"', '[attack.eval.mine]\nname = "noperturb"'
    )
    recipe.write_text(text, encoding="utf-8")
    runs = tmp_path / "runs"
    result = CliRunner().invoke(cli, ["run", str(recipe), "--set", f"run.output_dir={runs}"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert errors == [f"Error: {recipe}: attack.eval.mine.name: attack 'noperturb' cannot be used: {reason}"]
    assert not runs.exists()


SILU_CLAIMER = """
from torch import nn
from sat_toolkit.plugins import hookimpl

class MySiLU(nn.Module):
    name = "silu"
    description = "identity pretending to be silu"
    smooth = True
    def forward(self, x):
        return x

@hookimpl
def sat_register_activations():
    return [MySiLU]
"""


def test_a_package_claiming_silu_cannot_break_the_shipped_quickstart(fake_distribution) -> None:
    fake_distribution("silu-one", SILU_CLAIMER)
    result = CliRunner().invoke(cli, ["recipe", "validate", str(QUICKSTART)])
    assert result.exit_code == 0, result.output
    # Its own hint works: the qualified name picks the third-party class.
    shown = CliRunner().invoke(
        cli, ["recipe", "show", str(QUICKSTART), "--set", "activation.name=silu-one:silu"]
    )
    assert shown.exit_code == 0, shown.output
    assert 'name = "silu-one:silu"' in shown.output


def test_plugins_table_says_shadowed_and_how_to_use_it(fake_distribution) -> None:
    fake_distribution("silu-one", SILU_CLAIMER)
    result = CliRunner().invoke(cli, ["plugins", "--kind", "activation"])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "silu-one" in line and " silu " in line)
    assert "shadowed" in row and "'silu-one:silu'" in row


def test_each_plugin_warning_prints_once_per_command(fake_distribution, tmp_path: Path) -> None:
    """The conflict warning used to print twice in one command."""
    import subprocess
    import sys

    fake_distribution("silu-one", SILU_CLAIMER)
    site = next(p for p in sys.path if Path(p, "silu_one_plugin.py").is_file())
    env = {**__import__("os").environ, "PYTHONPATH": site}
    run = subprocess.run(
        [sys.executable, "-m", "sat_toolkit", "recipe", "validate", str(QUICKSTART)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    warnings = [line for line in run.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: activation 'silu' from 'silu-one' has the name of a built-in, which keeps it; "
        "use this one as 'silu-one:silu'"
    ]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            """
            from sat_toolkit.plugins import hookimpl

            @hookimpl
            def sat_register_activation():
                return []
            """,
            "plugin 'typo' from 'typo': sat_register_activation() is not a sat-toolkit hook; "
            "did you mean 'sat_register_activations'?",
        ),
        (
            """
            def sat_register_attacks():
                return []
            """,
            "plugin 'typo' from 'typo': sat_register_attacks() is not decorated with @hookimpl "
            "(from sat_toolkit.plugins import hookimpl), so it is never called",
        ),
        (
            """
            def register():
                return []
            """,
            "plugin 'typo' from 'typo' implements no sat-toolkit hook, so it adds nothing; define one of "
            "sat_register_activations(), sat_register_attacks(), sat_register_models(), "
            "sat_register_schedules(), sat_register_datasets(), sat_register_objectives() with @hookimpl",
        ),
    ],
    ids=["misspelt", "no-hookimpl", "no-hook"],
)
def test_a_module_implementing_no_known_hook_is_warned_about(fake_distribution, source, expected) -> None:
    fake_distribution("typo", source)
    with pytest.warns(PluginWarning) as caught:
        get_plugin_host()
    assert [str(w.message) for w in caught] == [expected]


def test_the_closest_match_survives_a_failed_plugin(fake_distribution) -> None:
    fake_distribution("broken-acts", "raise RuntimeError('numpy ABI mismatch')\n")
    with pytest.warns(PluginWarning):
        host = get_plugin_host()
    with pytest.raises(PluginLoadError) as info:
        host.get("activation", "siluu")
    message = str(info.value)
    assert message.startswith("unknown activation 'siluu'. Did you mean 'silu'? Known activations: ")
    assert "gelu" in message and "smoothrelu" in message
    assert message.endswith(
        "It may come from a plugin that failed to load: plugin 'broken-acts' from 'broken-acts' failed "
        "(RuntimeError: numpy ABI mismatch)"
    )


@pytest.mark.parametrize("value", ["sat-toolkit", "smooth-adversarial-training"])
def test_blocking_the_builtins_says_it_cannot_and_what_to_do_instead(fresh_plugin_host, monkeypatch, value):
    monkeypatch.setenv("SAT_TOOLKIT_DISABLE_PLUGINS", value)
    with pytest.warns(PluginWarning) as caught:
        host = get_plugin_host()
    assert [str(w.message) for w in caught] == [
        f"SAT_TOOLKIT_DISABLE_PLUGINS: '{value}' matches no external plugin, so it blocks nothing; "
        "built-in plugins cannot be blocked; a third-party plugin sharing a built-in's name is used "
        "only by its qualified name <distribution>:<name>"
    ]
    assert host.get("activation", "silu").name == "silu"


def test_a_model_chosen_by_qualified_name_is_rebuilt_as_that_plugin(fake_distribution) -> None:
    """The sat_config of a shadowing model names it qualified, so loading does not swap in the built-in."""
    fake_distribution(
        "my-models",
        """
        from sat_toolkit.models.small_cnn import SmallCNN
        from sat_toolkit.plugins import hookimpl

        class WideCNN(SmallCNN):
            name = "small_cnn"

            def build(self, info, activation):
                model = super().build(info, activation)
                model.made_by = "my-models"
                return model

        @hookimpl
        def sat_register_models():
            return [WideCNN]
        """,
    )
    from sat_toolkit.data.info import DatasetInfo
    from sat_toolkit.models.config import rebuild_model
    from sat_toolkit.models.factory import create_model

    with pytest.warns(PluginWarning, match="use this one as 'my-models:small_cnn'"):
        get_plugin_host()
    info = DatasetInfo(num_classes=10, channels=1, image_size=(8, 8), mean=(0.5,), std=(0.5,))
    model = create_model({"name": "my-models:small_cnn", "width": 8}, info, "silu")
    assert model.sat_config["model"]["name"] == "my-models:small_cnn"
    assert create_model({"name": "small_cnn", "width": 8}, info, "silu").sat_config["model"]["name"] == (
        "small_cnn"
    )
    assert getattr(rebuild_model(model.sat_config), "made_by", None) == "my-models"
