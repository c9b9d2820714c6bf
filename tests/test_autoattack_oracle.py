"""Our ``autoattack`` suite against an independent implementation: torchattacks' AutoAttack port.

torchattacks (a test-only dependency) re-implements AutoAttack's standard version, APGD-CE,
APGD-T, FAB-T and Square, run as a cascade. On the same model and images our worst case
must agree with its number within one image per few hundred: the attacks are randomised
differently, so a borderline image may fall either way, but a systematic gap would mean
one of us runs a weaker attack.

FAB-T exists for models whose loss gradients are useless, so it is checked where APGD is
made to fail: the same network with its logits multiplied by 10^4, which saturates the
softmax so cross-entropy's input gradient is exactly zero on confident images, while the
decision boundaries (which FAB follows) do not move. Ours must fool every image that
torchattacks' FAB fools there.
"""

from __future__ import annotations

import pytest
import torch
from digits_cnn import trained_digits_cnn
from torch import nn

import sat_toolkit
from sat_toolkit.attacks import create_attack
from sat_toolkit.evaluation import evaluate_robustness

torchattacks = pytest.importorskip(
    "torchattacks", reason="torchattacks is the independent oracle: pip install --no-deps torchattacks==3.5.1"
)

EPS = 0.08


@pytest.fixture(scope="module")
def digits() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model, x, y = trained_digits_cnn(steps=60)
    return model, x[1200:1400], y[1200:1400]


class _Saturated(nn.Module):
    """The same decisions with logits x 10^4: cross-entropy's gradient underflows to exactly zero."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) * 1e4


def _robust_under(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return (model(x).argmax(1) == y) & (model(x_adv).argmax(1) == y)


@pytest.mark.slow
def test_autoattack_suite_matches_torchattacks_autoattack(digits) -> None:
    model, x, y = digits
    ours = sat_toolkit.evaluate(model, x, y, eps=EPS, suite="autoattack", seed=0, batch_size=200)
    reference = torchattacks.AutoAttack(model, norm="Linf", eps=EPS, version="standard", n_classes=10, seed=0)
    theirs = _robust_under(model, x, y, reference(x, y))
    ours_robust = int(ours.report.worst_case.sum())
    # A set where the attacks matter: some images robust, most clean-correct ones not.
    clean = int(ours.report.clean_correct.sum())
    assert 0.1 * clean < ours_robust < 0.9 * clean
    assert abs(ours_robust - int(theirs.sum())) <= max(1, len(y) // 300)
    assert ours.to_dict()["autoattack_acc"] == ours.robust_accuracy
    assert [o.name for o in ours.report.attacks.values()] == ["apgd_ce", "apgd_t", "fab_t", "square"]


@pytest.mark.slow
def test_fab_t_fools_every_image_torchattacks_fab_does_where_apgd_fails(digits) -> None:
    body, x, y = digits
    model = _Saturated(body).eval()
    apgd = create_attack({"name": "apgd_ce", "eps": EPS, "seed": 0})
    fab = create_attack({"name": "fab_t", "eps": EPS, "seed": 0})
    report = evaluate_robustness(model, x, y, {"apgd_ce": apgd, "fab_t": fab}, batch_size=200, cascade=False)
    apgd_broken = report.clean_correct & ~report.attacks["apgd_ce"].robust
    ours_broken = report.clean_correct & ~report.attacks["fab_t"].robust

    reference = torchattacks.FAB(
        model, norm="Linf", eps=EPS, steps=100, n_restarts=1, multi_targeted=True, n_classes=10, seed=0
    )
    theirs_broken = ~_robust_under(model, x, y, reference(x, y)) & report.clean_correct
    # APGD-CE is blind here (zero gradients); FAB is not.
    assert report.attacks["apgd_ce"].zero_grad_fraction > 0.5
    assert int(theirs_broken.sum()) > 3 * int(apgd_broken.sum()) + 10
    missed = theirs_broken & ~ours_broken
    assert int(missed.sum()) == 0, f"torchattacks' FAB fools {int(missed.sum())} images ours does not"


@pytest.mark.slow
def test_autoattack_suite_under_l2_matches_torchattacks(digits) -> None:
    """The same comparison under L2: FAB-T and Square have their own L2 forms (budget 0.5 of ~8 L2 units)."""
    model, x, y = digits
    x, y = x[:100], y[:100]
    ours = sat_toolkit.evaluate(model, x, y, eps=0.5, norm="l2", suite="autoattack", seed=0, batch_size=100)
    reference = torchattacks.AutoAttack(model, norm="L2", eps=0.5, version="standard", n_classes=10, seed=0)
    theirs = _robust_under(model, x, y, reference(x, y))
    robust = int(ours.report.worst_case.sum())
    clean = int(ours.report.clean_correct.sum())
    assert 0.1 * clean < robust < 0.9 * clean
    assert abs(robust - int(theirs.sum())) <= 1
    assert ours.to_dict()["threat_model"] == "L2"
