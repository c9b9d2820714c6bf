"""The evaluations a training run makes: cheap validation per epoch, the recipe's suite at the end.

Both attack a fixed, seeded subset of the test split, so every run of a study (and
``sat-toolkit eval`` with the same seed) scores the same images.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from sat_toolkit.engine.loader import take_samples
from sat_toolkit.engine.logging import progress_bar
from sat_toolkit.recipe import Recipe


def fixed_test_subset(dataset: Any, samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, seeded subset of the test split (the same one for every attack)."""
    count = len(dataset) if samples <= 0 else min(samples, len(dataset))
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count]
    order, _ = order.sort()
    return take_samples(dataset, order)


def validate(recipe: Recipe, model: nn.Module, test_set: Any, accelerator: Accelerator) -> dict[str, float]:
    """Cheap robust validation: clean accuracy and PGD-10 on a fixed test subset.

    Each process attacks its share of the subset; ``gather_for_metrics`` collects the
    per-sample outcomes without counting the padding of uneven shares twice.
    """
    from sat_toolkit.attacks import create_attack
    from sat_toolkit.evaluation import evaluate_robustness

    x_all, y_all = fixed_test_subset(test_set, recipe.train.validate_samples, recipe.attack.eval.seed)
    with accelerator.split_between_processes((x_all, y_all)) as (x, y):
        x, y = x.to(accelerator.device), y.to(accelerator.device)
        attacks = {}
        if recipe.attack.eps is not None:
            pgd = {"name": "pgd", "eps": recipe.attack.eps, "steps": 10, "rel_step_size": 0.25}
            attacks["pgd10"] = create_attack(pgd)
        report = evaluate_robustness(model, x, y, attacks, batch_size=recipe.data.eval_batch_size)
        outcome = torch.stack([report.clean_correct, report.worst_case], dim=1).float()
    outcome = accelerator.gather_for_metrics(outcome)
    return {
        "samples": int(outcome.shape[0]),
        "clean_accuracy": float(outcome[:, 0].mean()),
        "robust_accuracy": float(outcome[:, 1].mean()) if attacks else math.nan,
    }


def final_evaluation(
    recipe: Recipe, model: nn.Module, test_set: Any, accelerator: Accelerator, show_progress: bool
) -> dict[str, Any]:
    """The evaluation the recipe configures, on a fixed seeded test subset."""
    from sat_toolkit.evaluation import evaluate_robustness

    x, y = fixed_test_subset(test_set, recipe.attack.eval.samples, recipe.attack.eval.seed)
    x, y = x.to(accelerator.device), y.to(accelerator.device)
    torch.manual_seed(recipe.attack.eval.seed)
    attacks = {label: spec.build() for label, spec in recipe.attack.eval.attacks.items()}
    bar = progress_bar(
        len(attacks), 0, enabled=show_progress and bool(attacks), unit="attack", desc="evaluating"
    )
    report = evaluate_robustness(
        model, x, y, attacks, batch_size=recipe.data.eval_batch_size, progress=lambda *_: None
    )
    bar.update(len(attacks))
    bar.close()
    result = report.to_dict()
    lines = [f"clean accuracy {report.clean_accuracy:.4f} on {len(y)} test images"]
    for label, outcome in report.attacks.items():
        lines.append(f"  {label:<12} robust accuracy {outcome.robust_accuracy:.4f}")
    if report.attacks:
        lines.append(f"  {'worst case':<12} robust accuracy {report.robust_accuracy:.4f}")
    accelerator.print("\n".join(lines))
    return result


def evaluation_scalars(evaluation: dict[str, Any]) -> dict[str, float]:
    scalars = {"eval/clean_accuracy": evaluation["clean_accuracy"]}
    if evaluation.get("robust_accuracy") is not None:
        scalars["eval/robust_accuracy"] = evaluation["robust_accuracy"]
    for label, outcome in evaluation["attacks"].items():
        scalars[f"eval/{label}"] = outcome["robust_accuracy"]
    return scalars
