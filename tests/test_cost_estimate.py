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


def test_long_attacks_are_probed_with_a_tenth_of_their_budget() -> None:
    from sat_toolkit.evaluation.cost import PROBE_MIN_BUDGET, _shortened_copy

    square = create_attack({"name": "square", "queries": 5000, "eps": EPS, "seed": 1})
    probe, scale = _shortened_copy(square)
    assert (probe.queries, scale, square.queries) == (500, 10.0, 5000)
    assert probe is not square and probe.hparams() == {**square.hparams(), "queries": 500}
    apgd = create_attack({"name": "apgd_t", "steps": 30, "eps": EPS})
    assert _shortened_copy(apgd)[0].steps == PROBE_MIN_BUDGET and _shortened_copy(apgd)[1] == 3.0
    pgd = create_attack({"name": "pgd", "steps": 10, "eps": EPS})
    assert _shortened_copy(pgd)[0].steps == 10 and _shortened_copy(pgd)[1] == 1.0  # already short
