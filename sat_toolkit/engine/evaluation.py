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
from sat_toolkit.engine.precision import unpatched
from sat_toolkit.recipe import Recipe
from sat_toolkit.recipe.schema import attack_label


def fixed_test_subset(dataset: Any, samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, seeded subset of the test split (the same one for every attack)."""
    count = len(dataset) if samples <= 0 else min(samples, len(dataset))
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count]
    order, _ = order.sort()
    return take_samples(dataset, order)


def _process_share(count: int, accelerator: Accelerator) -> tuple[int, int, int]:
    """``(start, stop, share)``: this process's contiguous slice of ``count`` samples.

    Every process gets the same ``share`` (the last ones may hold fewer real samples, or
    none), so the outcomes can be gathered as equal-sized tensors and put back in order.
    """
    share = math.ceil(count / accelerator.num_processes)
    start = min(accelerator.process_index * share, count)
    return start, min(start + share, count), share


def validation_attacks(recipe: Recipe) -> dict[str, Any]:
    """The validation attack (``[attack.validate]``, PGD-10 by default) and FGSM, in the training
    attack's threat model; none when there is no eps to attack with. Seeded with
    ``attack.eval.seed`` like the final evaluation's attacks, so a random start (APGD's)
    does not depend on what drew from torch's global generator before it."""
    from sat_toolkit.evaluation.suites import build_attacks

    threat = recipe.attack.threat_model
    if "eps" not in threat:
        return {}
    specs = {"validate": recipe.attack.validation, "fgsm": {"name": "fgsm", **threat}}
    return build_attacks(specs, seed=recipe.attack.eval.seed)


def validate(recipe: Recipe, model: nn.Module, test_set: Any, accelerator: Accelerator) -> dict[str, Any]:
    """Cheap robust validation: clean, validation-attack and FGSM accuracy on a fixed test subset.

    The validation attack is ``[attack.validate]`` (PGD-10 by default; APGD-CE with 10
    steps costs the same and sees more of a gradient-masking collapse); both attacks use
    the training attack's threat model unless the table names its own. FGSM is there for
    the catastrophic-overfitting guard (:mod:`sat_toolkit.engine.overfitting`): a
    single-step-trained model that collapses stays robust to FGSM while a multi-step
    attack breaks it. The record names the validation attack (``"attack"``).
    Each process attacks a contiguous share of the subset; the per-sample outcomes are
    gathered and the padding of uneven shares dropped, so every sample counts once.
    """
    from sat_toolkit.evaluation import evaluate_robustness
    from sat_toolkit.evaluation.robust import SURROGATE_SUFFIX

    model = unpatched(model)  # each attack at its own precision, not the training's autocast
    x_all, y_all = fixed_test_subset(test_set, recipe.train.validate_samples, recipe.attack.eval.seed)
    threat = recipe.attack.threat_model
    attacks = validation_attacks(recipe)
    start, stop, share = _process_share(len(y_all), accelerator)
    # -1 marks padding rows; a real row holds (clean correct, validation-attack robust, FGSM
    # robust) as 0/1.
    outcome = torch.full((share, 3), -1.0, device=accelerator.device)
    if stop > start:
        x, y = x_all[start:stop].to(accelerator.device), y_all[start:stop].to(accelerator.device)
        # Each attack on every image: the overfitting guard compares the two numbers.
        report = evaluate_robustness(
            model, x, y, attacks, batch_size=recipe.data.eval_batch_size, cascade=False
        )
        columns = [report.clean_correct]
        for name in attacks:  # an attack's worst case over the true and a surrogate gradient
            robust = report.clean_correct.clone()
            for label, attacked in report.attacks.items():
                if label in (name, name + SURROGATE_SUFFIX):
                    robust &= attacked.robust
            columns.append(robust)
        outcome[: stop - start, : len(columns)] = torch.stack(columns, dim=1).float()
    gathered = accelerator.gather(outcome)
    gathered = gathered[gathered[:, 0] >= 0]
    samples = int(gathered.shape[0])

    def accuracy(column: int) -> float:
        """Counted in integers and divided in double precision: 0.78, not float32's 0.7799999713897705."""
        return int(gathered[:, column].sum().item()) / samples if samples else math.nan

    return {
        "samples": samples,
        "clean_accuracy": accuracy(0),
        "robust_accuracy": accuracy(1) if attacks else math.nan,
        "fgsm_accuracy": accuracy(2) if attacks else math.nan,
        "attack": attack_label(recipe.attack.validation),
        "norm": threat.get("norm", "linf"),
        "eps": threat.get("eps", math.nan),
    }


def final_evaluation(
    recipe: Recipe, model: nn.Module, test_set: Any, accelerator: Accelerator, show_progress: bool
) -> dict[str, Any]:
    """The evaluation the recipe configures, on a fixed seeded test subset.

    Attacks without a seed of their own get ``attack.eval.seed``, exactly as
    ``sat-toolkit eval --seed`` seeds them, so evaluating the exported model with the same
    attacks, samples and seed reproduces these numbers.
    """
    from sat_toolkit.evaluation import evaluate_robustness
    from sat_toolkit.evaluation.suites import build_attacks

    model = unpatched(model)  # fp32 as the attacks ask, not the training's autocast
    seed = recipe.attack.eval.seed
    x, y = fixed_test_subset(test_set, recipe.attack.eval.samples, seed)
    x, y = x.to(accelerator.device), y.to(accelerator.device)
    torch.manual_seed(seed)
    specs = {label: spec.to_dict() for label, spec in recipe.attack.eval.attacks.items()}
    attacks = build_attacks(specs, seed=seed)
    with _AttackProgress(enabled=show_progress and bool(attacks)) as progress:
        batch = recipe.data.eval_batch_size
        report = evaluate_robustness(
            model, x, y, attacks, batch_size=batch, progress=progress, cascade=recipe.attack.eval.cascade
        )
    result = report.to_dict()
    if result.get("eps") is None:  # the attacks were built with their budgets, not given one
        budgets = {a["settings"].get("eps") for a in result["attacks"].values()}
        if len(budgets) == 1:  # one budget for every attack: the evaluation's own
            result["eps"] = budgets.pop()
    norms = {a["settings"].get("norm") for a in result["attacks"].values()} - {None}
    if len(norms) == 1:  # the threat model beside its eps, not only in each attack's settings
        result["norm"] = norms.pop()
    lines = [f"clean accuracy {report.clean_accuracy:.4f} on {len(y)} test images"]
    for label, outcome in report.attacks.items():  # in a cascade: the accuracy after this attack
        shown = f"after {label}" if report.cascade else label
        lines.append(
            f"  {shown:<12} robust accuracy {outcome.robust_accuracy:.4f} ({outcome.attacked} attacked)"
        )
    if report.attacks:
        lines.append(f"  {'worst case':<12} robust accuracy {report.robust_accuracy:.4f}")
    accelerator.print("\n".join(lines))
    return result


class _AttackProgress:
    """One progress bar that follows the evaluation: per attack, the images attacked so far.

    Fed by :func:`~sat_toolkit.evaluation.evaluate_robustness` after every batch, so the bar
    (and its ETA) moves as the attacks do; a new attack restarts it under its own label.
    """

    def __init__(self, *, enabled: bool) -> None:
        self.bar = progress_bar(0, 0, enabled=enabled, unit="image", desc="evaluating")
        self.label: str | None = None

    def __call__(self, label: str, done: int, total: int) -> None:
        if label != self.label:
            self.label = label
            self.bar.reset(total=total)
            self.bar.set_description(f"evaluating {label}")
        self.bar.update(done - self.bar.n)

    def __enter__(self) -> _AttackProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


#: Training images each external evaluation attack is tried on before the first step.
PREFLIGHT_SAMPLES = 2


def _builtin_classes() -> set[type]:
    """The attack classes the toolkit's own distribution registers."""
    from sat_toolkit.plugins import get_plugin_host
    from sat_toolkit.plugins.manager import BUILTIN_DISTRIBUTION, normalise_distribution

    records = get_plugin_host().records("attack")
    return {r.obj for r in records if normalise_distribution(r.distribution) == BUILTIN_DISTRIBUTION}


def _is_external(attack: Any, builtin: set[type]) -> bool:
    """Whether a plugin wrote ``attack``: its class, or a member of it (an ensemble's)."""
    members = getattr(attack, "members", None) or ()
    return type(attack) not in builtin or any(_is_external(m, builtin) for m in members)


def preflight_evaluation(recipe: Recipe, model: nn.Module, train_set: Any, device: torch.device) -> None:
    """Try every plugin-provided evaluation attack once on a couple of training images.

    Evaluation attacks run only after the last epoch, so a broken plugin attack would
    otherwise be found after hours of training. Built-in attacks are trusted (their
    tests cover them); each external one attacks :data:`PREFLIGHT_SAMPLES` images of the
    freshly built model and its result gets the final evaluation's check, so a wrong
    result is a one-line error in seconds. The RNG is restored, so training draws the
    same numbers with or without it.
    """
    from sat_toolkit.evaluation.evaluate import refuse_attacks_beyond_classes
    from sat_toolkit.evaluation.robust import run_checked
    from sat_toolkit.evaluation.suites import build_attacks
    from sat_toolkit.phase import true_gradients

    specs = {label: spec.to_dict() for label, spec in recipe.attack.eval.attacks.items()}
    if not specs:
        return
    builtin = _builtin_classes()
    attacks = build_attacks(specs, seed=recipe.attack.eval.seed)
    refuse_attacks_beyond_classes(
        attacks,
        int(model.sat_config["data_info"]["num_classes"]),
        "remove [attack.eval.{label}] (the final evaluation would stop at it after training)",
    )
    external = {label: attack for label, attack in attacks.items() if _is_external(attack, builtin)}
    if not external:
        return
    x, y = take_samples(train_set, torch.arange(min(PREFLIGHT_SAMPLES, len(train_set))))
    x, y = x.to(device), y.to(device)
    norm = recipe.attack.threat_model.get("norm")
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for label, attack in external.items():
                with true_gradients():
                    run_checked(label, attack, unpatched(model), x, y, norm=norm)
    finally:
        model.train(was_training)


def evaluation_scalars(evaluation: dict[str, Any]) -> dict[str, float]:
    scalars = {"eval/clean_accuracy": evaluation["clean_accuracy"]}
    if evaluation.get("robust_accuracy") is not None:
        scalars["eval/robust_accuracy"] = evaluation["robust_accuracy"]
    for label, outcome in evaluation["attacks"].items():
        scalars[f"eval/{label}"] = outcome["robust_accuracy"]
    return scalars
