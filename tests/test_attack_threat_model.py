"""One threat-model object shared by every attack; subclasses declare only their own parameters."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch

from sat_toolkit.attacks import APGDT, FGSM, PGD
from sat_toolkit.attacks.base import ThreatModel
from sat_toolkit.attacks.steps import STEP_RULES
from sat_toolkit.errors import SatError

THREAT = ["eps", "norm", "bn_mode", "precision", "loss_scale", "seed"]


def test_the_threat_model_is_shared_and_built_from_typed_values() -> None:
    attack = PGD(eps=8 / 255, norm="l2", precision="bf16", seed=3, steps=5)
    assert attack.threat == ThreatModel(eps=8 / 255, norm="l2", bn_mode="eval", precision="bf16", seed=3)
    assert (attack.eps, attack.norm, attack.precision, attack.seed) == (8 / 255, "l2", "bf16", 3)
    assert attack.projection_cls.norm == "l2" and attack._step_rule is STEP_RULES.get("l2")


@pytest.mark.parametrize("cls", [PGD, FGSM, APGDT], ids=lambda c: c.name)
def test_the_flat_signature_leads_with_the_threat_model(cls: type) -> None:
    assert list(inspect.signature(cls).parameters)[: len(THREAT)] == THREAT


def test_fgsm_is_pgd_with_one_step_and_no_steps_parameter() -> None:
    assert "steps" not in inspect.signature(FGSM).parameters
    assert FGSM(eps=0.1).steps == 1
    assert set(inspect.signature(FGSM).parameters) == set(inspect.signature(PGD).parameters) - {"steps"}
    with pytest.raises(SatError, match=r"'fgsm' takes exactly one step; for more use 'pgd' with steps = N"):
        FGSM(steps=3)


def test_apgdt_keeps_every_apgd_parameter_including_step_rule() -> None:
    from sat_toolkit.attacks import APGD

    assert set(inspect.signature(APGDT).parameters) == set(inspect.signature(APGD).parameters) | {
        "n_target_classes"
    }
    attack = APGDT(step_rule="sign", n_target_classes=3, norm="l2")
    assert attack._step_rule is STEP_RULES.get("sign") and attack.n_target_classes == 3


def test_hparams_rebuild_an_attack_that_declares_only_its_own_parameters() -> None:
    attack = APGDT(eps=0.05, steps=7, n_target_classes=2, seed=1)
    again = APGDT(**attack.hparams())
    assert again.hparams() == attack.hparams() and again.threat == attack.threat


class Jittered(PGD):
    """A third-party attack that adds one parameter and passes everything else on."""

    name = "jittered"

    def __init__(self, *, jitter: float = 0.5, **params: Any) -> None:
        super().__init__(**params)
        self.jitter = jitter


def test_a_plugin_subclass_declares_one_parameter_and_gets_the_rest() -> None:
    params = inspect.signature(Jittered).parameters
    assert list(params)[-1] == "jitter" and set(THREAT) | {"steps", "restarts"} <= set(params)
    attack = Jittered(eps=4 / 255, steps=2, jitter=0.1)
    assert attack.eps == 4 / 255 and attack.steps == 2
    x, y = torch.rand(2, 1, 4, 4), torch.tensor([0, 1])
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    assert (attack.perturb(model, x, y).x_adv - x).abs().max() <= 4 / 255


def test_setting_a_threat_attribute_updates_the_one_threat_model() -> None:
    attack = PGD(eps=0.1)
    attack.eps = 2 / 255
    assert attack.threat.eps == 2 / 255 and attack.eps == 2 / 255
    attack.norm = "l2"
    assert attack.threat.norm == "l2" and attack.projection_cls.norm == "l2"


def test_the_threat_model_schema_is_declared_once_on_the_base() -> None:
    from sat_toolkit.params import check, declared

    for cls in (PGD, FGSM, APGDT, Jittered):
        assert declared(cls).params["eps"].param.bounds() == {"ge": 0}
    assert check(Jittered, {"eps": "4/255", "jitter": 1})[0] == {"eps": 4 / 255, "jitter": 1.0}
    assert check(FGSM, {"norm": "l3"})[1][0][0] == "norm"
    assert check(FGSM, {"seed": -1})[1] == [("seed", "must be >= 0, got -1")]
