"""``[attack.validate]``: the multi-step attack of the per-epoch validation.

The budget sweep's collapsed runs (docs/results/fashion_mnist_budget) fooled PGD-10, the
attack the validation always ran; APGD-CE with 10 steps, at the same cost, saw 17 and 31
points more of the collapse. So the recipe chooses it, as it chooses the evaluation's
attacks. What must hold: the choice is checked and inherits the threat model like an
evaluation attack, it changes only what the validation reports (never the trained
weights), and runs saved before the key existed still read back as the same run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from sat_toolkit.cli import cli
from sat_toolkit.engine import trainer
from sat_toolkit.parsing import tomllib
from sat_toolkit.recipe import RecipeError, load_recipe
from sat_toolkit.recipe.rundir import as_read_back, differences

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "recipes" / "quickstart.toml"
APGD_CE_10 = 'attack.validate={name = "apgd_ce", steps = 10}'


def test_the_validation_attack_inherits_the_training_threat_model_and_is_saved() -> None:
    recipe = load_recipe(QUICKSTART, [APGD_CE_10, "attack.train.eps=0.2"])
    validate = recipe.attack.validate
    assert validate is not None and validate.name == "apgd_ce"
    assert (validate.params["eps"], validate.params["norm"], validate.params["steps"]) == (0.2, "linf", 10)
    saved = tomllib.loads(recipe.to_toml())
    assert saved["attack"]["validate"]["name"] == "apgd_ce"
    assert load_recipe(saved) == recipe  # what a resume reads back


def test_without_the_key_a_recipe_saves_what_runs_saved_before_it_existed() -> None:
    recipe = load_recipe(QUICKSTART)
    assert recipe.attack.validate is None
    pgd10 = {"name": "pgd", "steps": 10, "rel_step_size": 0.25, "eps": 0.1, "norm": "linf"}
    assert recipe.attack.validation == pgd10
    assert "validate" not in as_read_back(recipe)["attack"]
    # A finished run the budget sweep published (recipe.toml of a version without the key)
    # is the same run as the recipe its study plans today.
    published = REPO / "docs" / "results" / "fashion_mnist_budget" / "e6+relu" / "seed0" / "recipe.toml"
    saved = tomllib.loads(published.read_text(encoding="utf-8"))
    assert differences(saved, as_read_back(load_recipe(saved))) == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            'attack.validate={name = "apgd_cee"}',
            "attack.validate.name: unknown attack 'apgd_cee'. Did you mean 'apgd_ce'?",
        ),
        (
            'attack.validate={name = "pgd", norm = "l2"}',
            "attack.validate.eps: required: this attack's norm 'l2'",
        ),
        ('attack.validate={name = "pgd", steps = 0}', "attack.validate.steps: must be >= 1, got 0"),
        ("attack.validat.name=pgd", "attack.validat: unknown key; did you mean 'validate'?"),
    ],
    ids=["unknown-attack", "other-norm-without-eps", "bad-parameter", "misspelt-table"],
)
def test_a_bad_validation_attack_is_one_line_naming_the_key(override: str, message: str) -> None:
    with pytest.raises(RecipeError, match="(?m)^" + re.escape(message)):
        load_recipe(QUICKSTART, [override])
    result = CliRunner().invoke(cli, ["recipe", "validate", str(QUICKSTART), "--set", override])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert message in result.output


def test_the_validation_attack_changes_what_validation_reports_never_the_weights(tmp_path: Path) -> None:
    """A monitor must not steer what it watches: APGD draws a random start and runs the model
    many times more than PGD-10, yet the trainer reseeds every micro-batch and the attacks
    restore the model's state, so the weights are bit for bit those of a PGD-10 run."""
    tiny = [
        "data.limit_train=256",
        "train.epochs=3",
        "train.validate_every_epochs=1",
        "train.validate_samples=64",
        "logging.tensorboard=false",
        'model={name = "small_cnn", width = 8, depth = 2, convs_per_stage = 1}',
        'attack.eval={samples = 32, seed = 0, pgd2 = {name = "pgd", steps = 2}}',
    ]
    runs = {}
    for name, extra in {"pgd10": [], "apgd_ce10": [APGD_CE_10]}.items():
        out = tmp_path / name
        recipe = load_recipe(QUICKSTART, [*tiny, *extra, f"run.output_dir={json.dumps(str(out))}"])
        runs[name] = trainer.train(recipe, show_progress=False).metrics
        runs[name]["weights"] = load_file(out / "model.safetensors")

    default, apgd = runs["pgd10"], runs["apgd_ce10"]
    assert [v["attack"] for v in default["validation"]] == ["PGD-10", "PGD-10"]
    assert [v["attack"] for v in apgd["validation"]] == ["APGD-CE-10", "APGD-CE-10"]
    for pgd_entry, apgd_entry in zip(default["validation"], apgd["validation"], strict=True):
        assert pgd_entry["clean_accuracy"] == apgd_entry["clean_accuracy"]  # the same model, the same images
        assert pgd_entry["fgsm_accuracy"] == apgd_entry["fgsm_accuracy"]
        assert apgd_entry["robust_accuracy"] <= apgd_entry["clean_accuracy"]
    assert default["weights"].keys() == apgd["weights"].keys()
    for key, tensor in default["weights"].items():
        assert tensor.equal(apgd["weights"][key]), key


def test_an_l2_run_names_its_single_step_attack_fgm_and_records_exact_fractions(tmp_path: Path) -> None:
    """Under L2 the ``fgsm`` plugin steps along the normalised gradient: FGM, not FGSM. The
    accuracies are counts over the samples, so 50 images give multiples of 0.02 exactly (the
    float32 mean wrote 0.7799999713897705 into metrics.json)."""
    out = tmp_path / "l2"
    overrides = [
        "data.limit_train=128",
        "train.epochs=2",
        "train.validate_every_epochs=1",
        "train.validate_samples=50",
        "logging.tensorboard=false",
        'model={name = "small_cnn", width = 8, depth = 2, convs_per_stage = 1}',
        'attack.train={name = "pgd", norm = "l2", eps = 0.5, steps = 1}',
        'attack.eval={samples = 16, pgd2 = {name = "pgd", steps = 2}}',
        f"run.output_dir={json.dumps(str(out))}",
    ]
    args = ["run", str(QUICKSTART), "--no-progress"] + [a for o in overrides for a in ("--set", o)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("epoch 1:"))
    assert "FGM " in line and "FGSM" not in line, line
    (entry,) = json.loads((out / "metrics.json").read_text())["validation"]
    assert entry["samples"] == 50 and entry["norm"] == "l2"
    for key in ("clean_accuracy", "robust_accuracy", "fgsm_accuracy"):
        assert entry[key] == round(entry[key] * 50) / 50, (key, entry[key])


def test_the_validation_images_are_among_the_final_evaluations() -> None:
    """What the README says of them: the first of the same seeded permutation of the test split."""
    from sat_toolkit.engine.evaluation import fixed_test_subset

    images = torch.arange(3000, dtype=torch.float32).view(3000, 1, 1, 1)  # each image its own index
    dataset = [(image, 0) for image in images]
    validation, _ = fixed_test_subset(dataset, 512, seed=7)
    evaluation, _ = fixed_test_subset(dataset, 1000, seed=7)
    assert set(validation.flatten().tolist()) < set(evaluation.flatten().tolist())
    other_seed, _ = fixed_test_subset(dataset, 1000, seed=8)
    assert not set(validation.flatten().tolist()) <= set(other_seed.flatten().tolist())
