"""The cost estimate printed before an evaluation: a timed probe that changes no result."""

from __future__ import annotations

import torch
from digits_cnn import trained_digits_cnn
from torch import nn

import sat_toolkit
from sat_toolkit.attacks import create_attack
from sat_toolkit.evaluation.cost import MIN_IMAGES_TO_PROBE, CostEstimate

EPS = 0.1


def _digits_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model, x, y = trained_digits_cnn(steps=40)
    return model, x[1200:1600], y[1200:1600]


def test_the_probe_estimates_every_attack_and_changes_no_result() -> None:
    model, x, y = _digits_model()
    # Random starts drawn from the attacks' seeded generators and from torch's global one
    # (global_rng has no seed): a probe that advanced either would change the examples.
    global_rng = create_attack({"name": "pgd", "steps": 3, "eps": EPS, "random_start_fraction": 1.0})
    attacks = {"pgd5": "pgd:steps=5,random_start_fraction=1", "pgd3_global": global_rng, "fgsm": "fgsm"}
    common = {"eps": EPS, "suite": None, "attacks": attacks, "seed": 3, "batch_size": 64}
    plain = sat_toolkit.evaluate(model, x, y, **common)
    estimates: list[CostEstimate] = []
    probed = sat_toolkit.evaluate(model, x, y, on_estimate=estimates.append, **common)

    (estimate,) = estimates
    clean_correct = int((model(x).argmax(1) == y).sum())
    assert estimate.images == clean_correct
    assert estimate.probe_images == min(16, clean_correct)
    assert list(estimate.per_attack) == list(plain.report.attacks)
    assert all(seconds > 0 for seconds in estimate.per_attack.values())
    assert estimate.seconds == sum(estimate.per_attack.values())
    assert "at most" in estimate.describe(cascade=True) and "at most" not in estimate.describe(cascade=False)

    assert torch.equal(probed.x_adv, plain.x_adv)
    assert torch.equal(probed.report.worst_case, plain.report.worst_case)
    for label, outcome in plain.report.attacks.items():
        assert torch.equal(probed.report.attacks[label].robust, outcome.robust), label
    assert not model.training


def test_a_small_evaluation_is_not_probed() -> None:
    model, x, y = _digits_model()
    estimates: list[CostEstimate] = []
    few = MIN_IMAGES_TO_PROBE - 1  # the probe would cost more than 5% of the work
    sat_toolkit.evaluate(model, x[:few], y[:few], eps=EPS, suite="quick", on_estimate=estimates.append)
    assert estimates == []
