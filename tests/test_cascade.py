"""The evaluation cascade: each attack attacks only the images every earlier attack failed on.

AutoAttack's way of spending an evaluation: a later attack can only lower the worst case
on images still robust, so attacking the others is wasted time. The cascade must give the
worst case that running every attack on every image gives, image for image.
"""

from __future__ import annotations

import pytest
import torch
from digits_cnn import trained_digits_cnn
from torch import nn

import sat_toolkit
from sat_toolkit.attacks import create_attack
from sat_toolkit.evaluation import evaluate_robustness

EPS = 0.1


@pytest.fixture(scope="module")
def digits_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small CNN trained briefly on the 8x8 digits: some images robust at eps 0.1, some not."""
    model, x, y = trained_digits_cnn(steps=60)
    return model, x[1200:1500], y[1200:1500]


def _attacks() -> dict[str, object]:
    """Attacks whose result for an image does not depend on the other images in its batch."""
    threat = {"eps": EPS, "norm": "linf", "seed": 0}
    return {
        "fgsm": create_attack({"name": "fgsm", **threat}),
        "pgd5": create_attack({"name": "pgd", "steps": 5, **threat}),
        "pgd_dlr": create_attack({"name": "pgd", "steps": 10, "loss": "dlr", **threat}),
    }


def test_the_cascade_gives_the_worst_case_of_every_attack_on_every_image(digits_model) -> None:
    model, x, y = digits_model
    everything = evaluate_robustness(model, x, y, _attacks(), batch_size=64, cascade=False)
    cascade = evaluate_robustness(model, x, y, _attacks(), batch_size=64, cascade=True)

    assert torch.equal(cascade.worst_case, everything.worst_case)
    assert cascade.robust_accuracy == everything.robust_accuracy
    # The set is neither trivially robust nor trivially broken, so the cascade saved work.
    assert 0.1 < everything.robust_accuracy < everything.clean_accuracy - 0.1

    clean = int(everything.clean_correct.sum())
    assert [o.attacked for o in everything.attacks.values()] == [clean] * 3
    # Each attack saw exactly the images every earlier one failed on.
    survivors = everything.clean_correct.clone()
    for outcome in cascade.attacks.values():
        assert outcome.attacked == int(survivors.sum())
        survivors &= outcome.robust
    assert cascade.attacks["pgd_dlr"].attacked < clean

    # Per attack, the cascade reports the robust accuracy after it and every earlier one.
    after = everything.clean_correct.clone()
    for label, outcome in cascade.attacks.items():
        after &= everything.attacks[label].robust
        assert torch.equal(outcome.robust, after)


def test_the_cascade_keeps_a_real_worst_case_example_for_every_image(digits_model) -> None:
    model, x, y = digits_model
    report = evaluate_robustness(model, x, y, _attacks(), batch_size=64, return_examples=True)
    assert report.x_adv is not None
    assert float((report.x_adv - x).abs().max()) <= EPS + 1e-6
    with torch.no_grad():
        fooled = model(report.x_adv).argmax(1) != y
    assert torch.equal(fooled, ~report.worst_case)  # broken images carry the example that broke them


def test_evaluate_cascades_by_default_and_says_so_in_the_report(digits_model) -> None:
    model, x, y = digits_model
    attacks = {"pgd5": "pgd:steps=5", "pgd_dlr": "pgd:steps=10,loss=dlr"}
    common = dict(eps=EPS, suite=None, attacks=attacks, return_examples=False)
    default = sat_toolkit.evaluate(model, x, y, **common)
    apart = sat_toolkit.evaluate(model, x, y, cascade=False, **common)

    assert default.robust_accuracy == apart.robust_accuracy
    report, separate = default.to_dict(), apart.to_dict()
    assert report["cascade"] is True and separate["cascade"] is False
    assert report["attacks"]["pgd_dlr"]["attacked"] < separate["attacks"]["pgd_dlr"]["attacked"]
    # Without the cascade, each attack's own number on all clean-correct images.
    assert separate["attacks"]["pgd_dlr"]["robust_accuracy"] >= separate["robust_acc"]
