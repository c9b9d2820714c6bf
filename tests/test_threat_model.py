"""One threat model end to end: an L2 run is validated, evaluated and re-evaluated under L2.

Validation, the recipe's evaluation attacks and ``sat-toolkit eval`` (with or without
``--eps``) all inherit the training attack's norm unless told otherwise. Scoring an L2
model under L-inf at the same eps would be a different (and, at eps = 0.5, absurd)
threat model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_engine import tiny_recipe

import sat_toolkit
from sat_toolkit.cli import cli
from sat_toolkit.recipe import load_recipe

L2_EPS = 0.5  # 8x8 digits: 64 pixels, so L-inf 0.5 would allow almost any image
L2_TRAIN = {"name": "pgd", "eps": L2_EPS, "norm": "l2", "steps": 2, "rel_step_size": 0.5}


@pytest.fixture(scope="module")
def l2_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("l2") / "run"
    recipe = tiny_recipe(
        run_dir,
        attack={
            "train": L2_TRAIN,
            "eval": {
                "samples": 60, "seed": 0,
                "pgd5": {"name": "pgd", "steps": 5}, "apgd": {"name": "apgd_ce", "steps": 5},
            },
        },
        train={"epochs": 2, "validate_every_epochs": 1, "validate_samples": 60},
    )  # fmt: skip
    sat_toolkit.run(recipe, show_progress=False)
    return run_dir


def test_recipe_eval_attacks_inherit_the_training_norm(l2_run: Path) -> None:
    recipe = load_recipe(l2_run / "recipe.toml")
    assert {label: spec.params["norm"] for label, spec in recipe.attack.eval.attacks.items()} == {
        "pgd5": "l2",
        "apgd": "l2",
    }
    linf = load_recipe(
        tiny_recipe(
            l2_run, attack={"train": L2_TRAIN, "eval": {"x": {"name": "pgd", "norm": "linf", "eps": 0.1}}}
        )
    )
    assert linf.attack.eval.attacks["x"].params["norm"] == "linf"  # a recipe that says otherwise wins


def test_validation_and_final_evaluation_attack_under_l2(l2_run: Path) -> None:
    metrics = json.loads((l2_run / "metrics.json").read_text())
    validation = metrics["validation"]
    assert [v["epoch"] for v in validation] == [1]
    assert all(v["norm"] == "l2" and v["eps"] == L2_EPS for v in validation)
    # L-inf eps 0.5 lets every pixel reach mid-grey, so no image would survive it.
    assert validation[0]["robust_accuracy"] > 0.1
    attacks = metrics["evaluation"]["attacks"]
    assert {label: a["settings"]["norm"] for label, a in attacks.items()} == {"pgd5": "l2", "apgd": "l2"}
    assert all(a["settings"]["eps"] == L2_EPS for a in attacks.values())


@pytest.mark.parametrize("eps_args", [[], ["--eps", "0.3"]])
def test_eval_keeps_the_models_norm_with_or_without_eps(
    l2_run: Path, tmp_path: Path, eps_args: list[str]
) -> None:
    output = tmp_path / "report.json"
    result = CliRunner().invoke(
        cli,
        ["eval", str(l2_run), "--suite", "quick", "--samples", "30", "--square-queries", "20",
         "--output", str(output), *eps_args],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(output.read_text())
    assert report["threat_model"] == "L2"
    assert report["eps"] == (0.3 if eps_args else L2_EPS)
    assert all(a["settings"]["norm"] == "l2" for a in report["attacks"].values())
    square = next(c for c in report["checks"] if c["name"].startswith("gradient-free Square"))
    assert square["numbers"]["queries"] == 20 and not square["numbers"]["square_in_suite"]  # L2 Square ran


def test_an_eval_attack_under_another_norm_must_bring_its_own_eps(l2_run: Path) -> None:
    from sat_toolkit.recipe.errors import RecipeError

    with pytest.raises(RecipeError, match=r"attack.eval.x.eps: required: this attack's norm 'linf' differs"):
        load_recipe(
            tiny_recipe(l2_run, attack={"train": L2_TRAIN, "eval": {"x": {"name": "pgd", "norm": "linf"}}})
        )


def test_eval_norm_without_eps_refuses_to_reuse_the_training_budget(l2_run: Path) -> None:
    result = CliRunner().invoke(cli, ["eval", str(l2_run), "--norm", "linf", "--samples", "10"])
    assert result.exit_code == 2
    assert "trained under l2, so its training eps (0.5) is no linf budget; pass --eps too" in result.output
