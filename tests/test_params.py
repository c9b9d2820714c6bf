"""One schema per plugin (``sat_toolkit.params``), checked once, with nothing built to check it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import pytest

from sat_toolkit.errors import SatError
from sat_toolkit.params import Param, check, declared
from sat_toolkit.recipe import RecipeError, load_recipe

QUICKSTART = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml"


class Knobs:
    """A plugin-shaped class declaring one of each kind of parameter."""

    name = "knobs"

    def __init__(
        self,
        *,
        rate: Annotated[float, Param(gt=0, le=1, doc="how fast")] = 0.5,
        count: Annotated[int, Param(ge=1)] = 3,
        marks: Annotated[list[float], Param(ge=0, lt=1)] = (0.2, 0.4),  # type: ignore[assignment]
        mode: Literal["a", "b"] = "a",
        loss: Annotated[str, Param(one_of=("ce", "dlr", "margin"))] = "ce",
        tag: str | None = None,
    ) -> None:
        self.values = dict(rate=rate, count=count, marks=marks, mode=mode, loss=loss, tag=tag)

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        marks = list(params.get("marks", (0.2, 0.4)))
        if marks != sorted(marks):
            raise ValueError(f"marks must be increasing, got {marks}")


def test_the_schema_is_read_from_the_annotations() -> None:
    schema = declared(Knobs)
    assert schema is not None and list(schema) == ["rate", "count", "marks", "mode", "loss", "tag"]
    rate = schema.params["rate"]
    assert (rate.hint, rate.default, rate.param.doc) == (float, 0.5, "how fast")
    assert rate.param.bounds() == {"gt": 0, "le": 1}
    assert schema.params["mode"].param.bounds() == {} and not schema.takes_kwargs


def test_values_are_typed_and_every_declaration_is_enforced() -> None:
    typed, problems = check(Knobs, {"rate": "1/4", "count": 2, "marks": [0, 0.5]})
    assert problems == [] and typed == {"rate": 0.25, "count": 2, "marks": [0.0, 0.5]}
    _, problems = check(Knobs, {"rate": 0, "count": 0, "marks": [0.5, 1.0], "mode": "c", "loss": "dl"})
    assert problems == [
        ("rate", "must be > 0, got 0.0"),
        ("count", "must be >= 1, got 0"),
        ("marks", "each item must be < 1, got 1.0"),
        ("mode", "must be one of 'a', 'b', got string 'c'"),
        ("loss", "must be one of ce, dlr, margin, got 'dl'; did you mean 'dlr'?"),
    ]
    _, problems = check(Knobs, {"count": True})
    assert problems == [("count", "expected an integer, got boolean true")]


def test_constraints_between_parameters_run_on_typed_values_and_are_filed_under_their_key() -> None:
    assert check(Knobs, {"marks": [0.4, 0.2]})[1] == [("marks", "must be increasing, got [0.4, 0.2]")]
    # Not reached while a value is still wrong: check_params always sees typed values.
    assert check(Knobs, {"marks": [0.4, "x"]})[1] == [
        ("marks", "item 1: expected a number or a fraction like '4/255', got 'x'")
    ]


PLUGINS = """
from typing import Annotated, Any

from torch import nn

from sat_toolkit.attacks import Attack, AttackResult
from sat_toolkit.objectives import Objective
from sat_toolkit.params import Param
from sat_toolkit.plugins import hookimpl
from sat_toolkit.schedules import Schedule

BUILT = []


class Counted(nn.Module):
    name = "counted_act"
    description = "identity"
    smooth = True

    def __init__(self, gain: Annotated[float, Param(gt=0)] = 1.0) -> None:
        super().__init__()
        BUILT.append(self.name)
        self.gain = gain

    def forward(self, x):
        return x * self.gain


class CountedAttack(Attack):
    name = "counted_attack"
    description = "the clean input"

    def __init__(self, *, tries: Annotated[int, Param(ge=1, le=5)] = 1, **threat: Any) -> None:
        super().__init__(**threat)
        BUILT.append(self.name)
        self.tries = tries

    def _perturb(self, model, x, y, eps):
        return AttackResult(x_adv=x.clone(), eps=eps)


class CountedSchedule(Schedule):
    name = "counted_schedule"
    description = "constant"

    def __init__(self, level: Annotated[float, Param(ge=0, le=1)] = 1.0) -> None:
        BUILT.append(self.name)
        self.level = level

    def _value(self, step, total_steps, base):
        return base * self.level


class CountedObjective(Objective):
    name = "counted_objective"
    description = "CE on the attack's examples"

    def __init__(self, weight: Annotated[float, Param(ge=0)] = 1.0) -> None:
        BUILT.append(self.name)
        self.weight = weight

    def loss(self, model, x, x_adv, y, *, label_smoothing=0.0):
        raise NotImplementedError


@hookimpl
def sat_register_activations():
    return [Counted]


@hookimpl
def sat_register_attacks():
    return [CountedAttack]


@hookimpl
def sat_register_schedules():
    return [CountedSchedule]


@hookimpl
def sat_register_objectives():
    return [CountedObjective]
"""

USE_THEM = [
    "activation=counted_act",
    "activation.gain=2",
    "attack.train.name=counted_attack",
    "attack.train.tries=3",
    "schedule.lr.name=counted_schedule",
    "schedule.lr.level=1/2",
    "objective=counted_objective",
]


def test_validating_a_recipe_builds_no_plugin_and_resolves_typed_values(fake_distribution) -> None:
    import importlib

    fake_distribution("counted-plugins", PLUGINS)
    recipe = load_recipe(QUICKSTART, USE_THEM)
    module = importlib.import_module("counted_plugins_plugin")
    assert module.BUILT == []  # nothing was built only to be validated
    assert recipe.activation.params == {"gain": 2.0}
    assert recipe.attack.train.params["tries"] == 3
    assert recipe.schedule.lr.params == {"level": 0.5}
    # The values the recipe resolved build the plugin as they are: the constructor checks nothing.
    assert recipe.schedule.lr.build().level == 0.5 and module.BUILT == ["counted_schedule"]


def test_a_plugin_declaration_is_enforced_by_the_recipe_with_its_key_path(fake_distribution) -> None:
    fake_distribution("counted-plugins", PLUGINS)
    with pytest.raises(RecipeError) as info:
        load_recipe(
            QUICKSTART,
            [
                *USE_THEM,
                "activation.gain=0",
                "attack.train.tries=9",
                "schedule.lr.level=2",
                "objective.weight=-1",
            ],
        )
    assert {p.path: p.message.removesuffix(" (from --set)") for p in info.value.problems} == {
        "activation.gain": "must be > 0, got 0.0",
        "attack.train.tries": "must be <= 5, got 9",
        "schedule.lr.level": "must be <= 1, got 2.0",
        "objective.weight": "must be >= 0, got -1.0",
    }


def test_building_from_python_runs_the_same_check() -> None:
    from sat_toolkit.activations import create_activation
    from sat_toolkit.attacks import create_attack

    with pytest.raises(SatError, match=r"^activation 'smoothrelu': alpha must be > 0, got -1\.0$"):
        create_activation({"name": "smoothrelu", "alpha": -1})
    with pytest.raises(SatError, match=r"^attack 'pgd': steps must be >= 1, got 0$"):
        create_attack({"name": "pgd", "steps": 0})
    with pytest.raises(SatError, match=r"^attack 'pgd': loss: 'ce_targeted' is targeted; set target"):
        create_attack({"name": "pgd", "loss": "ce_targeted"})
    assert create_attack({"name": "pgd", "eps": "8/255"}).eps == 8 / 255


def test_built_in_declarations_reach_the_recipe() -> None:
    with pytest.raises(RecipeError) as info:
        load_recipe(
            QUICKSTART,
            [
                "attack.train.steps=0",
                "attack.train.loss=dlx",
                "schedule.lr.name=multistep",
                "schedule.lr.milestones=[0.6, 0.3]",
                "activation=gelu",
                "activation.approximate=fast",
            ],
        )
    found = {p.path: p.message.removesuffix(" (from --set)") for p in info.value.problems}
    assert found["activation.approximate"] == "must be one of 'none', 'tanh', got string 'fast'"
    assert found["attack.train.steps"] == "must be >= 1, got 0"
    assert (
        found["attack.train.loss"].startswith("must be one of ")
        and "did you mean 'dlr'?" in found["attack.train.loss"]
    )
    # Constraints between parameters are checked only once each value is right on its own.
    with pytest.raises(RecipeError) as info:
        load_recipe(QUICKSTART, ["schedule.lr.name=multistep", "schedule.lr.milestones=[0.6, 0.3]"])
    assert [(p.path, p.message.removesuffix(" (from --set)")) for p in info.value.problems] == [
        ("schedule.lr.milestones", "must be strictly increasing, got [0.6, 0.3]")
    ]
