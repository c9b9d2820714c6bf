"""``--set TABLE.name=other`` drops the old plugin's parameters the new one does not take, and says so."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

from sat_toolkit.cli import cli
from sat_toolkit.recipe import RecipeError, apply_overrides, load_recipe
from sat_toolkit.recipe.overrides import OverrideNote, plugin_table_kind

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "recipes" / "quickstart.toml"
ONE_CYCLE_NOTE = (
    "--set schedule.lr.name=one_cycle: dropped schedule.lr.warmup_fraction = 0.05 "
    "(schedule 'one_cycle' has no such parameter)"
)


def _notes(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, OverrideNote)]


def test_the_command_line_prints_one_note_line_and_validates() -> None:
    """The real entry point (its warning printer included): one line on stderr, then ok."""
    result = subprocess.run(
        [sys.executable, "-m", "sat_toolkit", "recipe", "validate", str(QUICKSTART),
         "--set", "schedule.lr.name=one_cycle"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
    assert result.stderr.splitlines() == [f"note: {ONE_CYCLE_NOTE}"]


def test_recipe_validate_drops_and_notes_each_key_once() -> None:
    args = ["recipe", "validate", str(QUICKSTART), "--set", "schedule.lr.name=one_cycle",
            "--set", "attack.train.name=fgsm", "--set", "attack.eval.pgd20.name=square"]  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, (result.output, result.exception)
    assert result.stdout == "ok\n"
    assert _notes(caught) == [
        ONE_CYCLE_NOTE,
        "--set attack.train.name=fgsm: dropped attack.train.steps = 1 (attack 'fgsm' has no such parameter)",
        "--set attack.eval.pgd20.name=square: dropped attack.eval.pgd20.steps = 20 "
        "(attack 'square' has no such parameter)",
    ]


def test_kept_what_the_new_plugin_takes() -> None:
    with pytest.warns(OverrideNote):
        recipe = load_recipe(QUICKSTART, ["attack.train.name=fgsm"])
    train = recipe.attack.train
    assert train.name == "fgsm" and "steps" not in train.params
    assert (train.params["eps"], train.params["rel_step_size"], train.params["random_start_fraction"]) == (
        0.1,
        1.0,
        0.8,
    )


def test_a_key_set_by_another_override_is_kept_and_refused() -> None:
    with pytest.raises(RecipeError) as caught:
        load_recipe(QUICKSTART, ["schedule.lr.warmup_fraction=0.1", "schedule.lr.name=one_cycle"])
    assert "schedule.lr.warmup_fraction" in str(caught.value)
    assert "(from --set)" in str(caught.value)


def test_the_data_sections_own_keys_are_never_dropped() -> None:
    raw = {
        "data": {
            "name": "digits",
            "batch_size": 16,
            "eval_batch_size": 32,
            "num_workers": 0,
            "limit_train": 64,
        }
    }
    with pytest.warns(OverrideNote) as caught:
        result, applied = apply_overrides(raw, ["data.name=synthetic"])
    assert result["data"] == {"name": "synthetic", "batch_size": 16, "eval_batch_size": 32, "num_workers": 0}
    assert _notes(list(caught)) == [
        "--set data.name=synthetic: dropped data.limit_train = 64 (dataset 'synthetic' has no such parameter)"
    ]
    assert applied == ["data.name"]
    assert raw["data"]["limit_train"] == 64  # the caller's table is untouched


@pytest.mark.parametrize(
    "override",
    [
        "schedule.lr.name=cosine",  # the same plugin: its parameters stay
        "schedule.lr.name=cosinee",  # unknown: nothing dropped, validation names it
    ],
)
def test_nothing_is_dropped_for_the_same_or_an_unknown_name(override: str) -> None:
    raw = {"schedule": {"lr": {"name": "cosine", "warmup_fraction": 0.05}}}
    with warnings.catch_warnings():
        warnings.simplefilter("error", OverrideNote)
        result, _ = apply_overrides(raw, [override])
    assert result["schedule"]["lr"]["warmup_fraction"] == 0.05


def test_an_unknown_new_name_is_still_reported_by_validation() -> None:
    with pytest.raises(RecipeError) as caught:
        load_recipe(QUICKSTART, ["schedule.lr.name=cosinee"])
    assert "unknown schedule 'cosinee'" in str(caught.value)


def test_the_last_rename_of_a_table_decides() -> None:
    raw = {"model": {"name": "small_cnn", "width": 8, "depth": 2}}
    with pytest.warns(OverrideNote) as caught:
        result, _ = apply_overrides(raw, ["model.name=timm", "model.name=preact_resnet18"])
    assert result["model"] == {"name": "preact_resnet18", "width": 8}
    assert _notes(list(caught)) == [
        "--set model.name=preact_resnet18: dropped model.depth = 2 "
        "(model 'preact_resnet18' has no such parameter)"
    ]


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        (("model",), "model"),
        (("activation",), "activation"),
        (("data",), "dataset"),
        (("attack", "train"), "attack"),
        (("attack", "eval", "pgd20"), "attack"),
        (("attack", "eval", "samples"), None),
        (("schedule", "lr"), "schedule"),
        (("schedule", "eps"), "schedule"),
        (("optimizer",), None),
        ((), None),
    ],
)
def test_the_recipe_layout_says_which_kind_a_table_names(path: tuple[str, ...], kind: str | None) -> None:
    assert plugin_table_kind(path) == kind


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        # a plugin name replacing the table keeps what an earlier override set in it
        (["objective.beta=3", "objective=trades"], {"name": "trades", "beta": 3}),
        # an inline table keeps it too, unless it sets that key itself
        (["objective.beta=3", 'objective={name = "trades"}'], {"name": "trades", "beta": 3}),
        (["objective.beta=3", 'objective={name = "trades", beta = 1.0}'], {"name": "trades", "beta": 1.0}),
        # the file's parameters are still replaced with the table
        (["objective=trades"], "trades"),
    ],
)
def test_a_whole_table_override_keeps_what_earlier_overrides_set_inside(
    overrides: list[str], expected: object
) -> None:
    raw = {"objective": {"name": "mart", "beta": 6.0}}
    result, applied = apply_overrides(raw, overrides)
    assert result["objective"] == expected
    assert applied == [item.partition("=")[0] for item in overrides]


def test_a_nested_earlier_override_survives_its_ancestor_being_replaced() -> None:
    raw = {"attack": {"train": {"name": "pgd", "eps": 0.1, "steps": 1}}}
    result, _ = apply_overrides(raw, ["attack.train.eps=0.2", 'attack={train = {name = "pgd", steps = 2}}'])
    assert result["attack"] == {"train": {"name": "pgd", "steps": 2, "eps": 0.2}}


def test_an_earlier_override_the_new_plugin_does_not_take_is_refused_not_lost() -> None:
    """Before: ``objective.weight=3`` then ``objective=trades`` trained TRADES, the 3 silently gone."""
    with pytest.raises(RecipeError) as caught:
        load_recipe(QUICKSTART, ["objective.weight=3", "objective=trades"])
    assert "objective.weight: unknown parameter of objective 'trades'; valid: beta (from --set)" in str(
        caught.value
    )
    recipe = load_recipe(QUICKSTART, ["objective.beta=3", "objective=trades"])
    assert (recipe.objective.name, recipe.objective.params) == ("trades", {"beta": 3})
