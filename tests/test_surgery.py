"""Model surgery on timm models (random init, nothing downloaded) and plain modules."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from sat_toolkit.activations import (
    ActivationFactory,
    SiLU,
    SmoothGradientReLU,
    create_timm_model,
    find_functional_activations,
    replace_activations,
)
from sat_toolkit.activations.surgery import count_modules
from sat_toolkit.errors import SatError

RELU_TYPES = (nn.ReLU, nn.ReLU6)


def _param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("architecture", "size", "original"),
    [("resnet18", 64, nn.ReLU), ("resnet50", 64, nn.ReLU), ("efficientnet_b0", 64, nn.SiLU)],
)
def test_surgery_on_timm_models(architecture: str, size: int, original: type[nn.Module]) -> None:
    torch.manual_seed(0)
    model = timm.create_model(architecture, pretrained=False, num_classes=10).eval()
    before_count = count_modules(model, (original,))
    assert before_count > 0
    params_before = _param_count(model)
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        out_before = model(x)

    report = replace_activations(model, "gelu" if original is nn.SiLU else "silu", example_input=x)

    assert count_modules(model, RELU_TYPES) == 0
    assert count_modules(model, (original,)) == 0
    assert len(report.replaced) == before_count
    assert report.functional_checked and report.functional_calls == []
    assert _param_count(model) == params_before
    with torch.no_grad():
        out_after = model(x)
    assert out_after.shape == out_before.shape
    # Random-init EfficientNet logits are ~1e-5, so compare relative to their scale.
    change = (out_after - out_before).abs().max() / out_before.abs().max()
    assert change > 0.01


def test_surgery_keeps_squeeze_excite_gates() -> None:
    model = timm.create_model("efficientnet_b0", pretrained=False, num_classes=10)
    gates = count_modules(model, (nn.Sigmoid,))
    replace_activations(model, "silu")
    assert count_modules(model, (nn.Sigmoid,)) == gates


def test_create_timm_model_uses_act_layer_and_leaves_no_relu() -> None:
    model, report = create_timm_model(
        "resnet18", "silu", num_classes=10, example_input=torch.rand(1, 3, 32, 32)
    )
    assert count_modules(model, RELU_TYPES) == 0
    assert count_modules(model, (SiLU,)) == 17  # stem + 2 per block x 8 blocks
    # act_layer did the work; the sweep found nothing left to replace, and says so.
    assert report.replaced == {} and report.already == 17
    assert report.summary().startswith("replaced 0 activation modules (nothing); 17 already were the")
    reference = timm.create_model("resnet18", pretrained=False, num_classes=10)
    assert _param_count(model) == _param_count(reference)


def test_create_timm_model_with_surrogate_activation_passes_params() -> None:
    model, _ = create_timm_model(
        "resnet18", {"name": "relu_smooth_grad", "attacker": True, "optimizer": False}, num_classes=10
    )
    surrogates = [m for m in model.modules() if isinstance(m, SmoothGradientReLU)]
    assert len(surrogates) == 17
    assert all(m.attacker and not m.optimizer for m in surrogates)
    assert len({id(m) for m in surrogates}) == 17  # a fresh module per use site


def test_unknown_timm_architecture_is_a_clear_error() -> None:
    with pytest.raises(SatError, match="unknown timm architecture 'resnet17'"):
        create_timm_model("resnet17", "silu")
    # a misspelling no name contains still gets the closest names
    with pytest.raises(SatError, match=r"unknown timm architecture 'resnet18x'\. Similar: resnet18, "):
        create_timm_model("resnet18x", "silu")


def test_an_architecture_without_act_layer_is_built_plain_and_swept() -> None:
    """dla34 takes no act_layer: the public helper raised timm's TypeError, where the recipe
    route already fell back to the sweep."""
    model, report = create_timm_model("dla34", "silu", num_classes=10)
    assert model.surgery_route == "sweep"
    assert count_modules(model, (nn.ReLU,)) == 0 and len(report.replaced) == 21
    assert model.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 10)


class _FunctionalNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True))
        self.block = _Block()
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(self.stem(x))
        return self.head(torch.relu(x.mean((2, 3))))


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x)) + x.relu()


def test_functional_relu_calls_are_reported_by_module_name() -> None:
    model = _FunctionalNet()
    report = replace_activations(model, "silu", example_input=torch.rand(1, 3, 8, 8))
    assert report.replaced == {"stem.1": "ReLU"}
    assert isinstance(model.stem[1], SiLU)
    assert report.functional_calls == [
        "block: torch.nn.functional.relu",
        "block: Tensor.relu",
        "<root>: torch.relu",
    ]
    assert "functional activations surgery cannot reach" in report.summary()
    with pytest.raises(SatError, match="block: torch.nn.functional.relu"):
        replace_activations(_FunctionalNet(), "silu", example_input=torch.rand(1, 3, 8, 8), strict=True)


class _SmoothFunctionalNet(nn.Module):
    """Functional smooth activations, as timm's dm_nfnet_f0 calls F.gelu in its GammaAct
    modules: surgery leaves every one behind, so each must be reported, not just ReLU's."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.linear(x)) + F.silu(x) + F.elu(x) + F.softplus(x)
        return torch.selu(x) + F.leaky_relu(x) + F.hardtanh(x) + F.mish(x)


def test_functional_smooth_activations_are_reported_too() -> None:
    assert find_functional_activations(_SmoothFunctionalNet(), torch.rand(2, 3)) == [
        f"<root>: {name}"
        for name in (
            "torch.nn.functional.gelu", "torch.nn.functional.silu", "torch.nn.functional.elu",
            "torch.nn.functional.softplus", "torch.selu", "torch.nn.functional.leaky_relu",
            "torch.nn.functional.hardtanh", "torch.nn.functional.mish",
        )
    ]  # fmt: skip


def test_calls_inside_activation_modules_are_not_reported() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 3))
    assert find_functional_activations(model, torch.rand(2, 3)) == []
    replace_activations(model, "relu")  # our ReLU plugin calls F.relu internally
    assert find_functional_activations(model, torch.rand(2, 3)) == []


def test_surgery_preserves_train_mode_and_probe_restores_it() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    model.train()
    replace_activations(model, "silu", example_input=torch.rand(2, 3))
    assert model.training and model[1].training


def test_activation_factory_accepts_timm_inplace_argument() -> None:
    factory = ActivationFactory({"name": "smoothrelu", "alpha": 5.0})
    first, second = factory(inplace=True), factory()
    assert first is not second and first.alpha == 5.0


def test_create_timm_model_reaches_efficientnet_norm_act_layers() -> None:
    """timm's BatchNormAct2d accepts only a class as act_layer; the factory hands it one."""
    from sat_toolkit.activations import SmoothReLU

    model, report = create_timm_model("efficientnet_b0", {"name": "smoothrelu", "alpha": 5.0}, num_classes=10)
    assert count_modules(model, (nn.SiLU, nn.ReLU)) == 0
    acts = [m for m in model.modules() if isinstance(m, SmoothReLU)]
    assert len(acts) == 49 and all(m.hparams() == {"alpha": 5.0, "learnable": False} for m in acts)
    assert report.replaced == {}  # act_layer reached every site, nothing left to sweep


def test_one_activation_instance_used_at_two_places_is_replaced_at_both() -> None:
    """named_modules() lists a shared module once: the second place kept its ReLU, and the
    report said one activation was replaced where the forward ran two."""
    relu = nn.ReLU()
    model = nn.Sequential(nn.Linear(3, 3), relu, nn.Linear(3, 3), relu)
    report = replace_activations(model, "silu", example_input=torch.randn(2, 3))
    assert not isinstance(model[3], nn.ReLU) and model[1] is model[3]  # shared before, shared after
    assert report.replaced == {"1": "ReLU", "3": "ReLU"}
    x = torch.randn(4, 3)
    expected = model[2](torch.nn.functional.silu(model[0](x)))
    assert torch.allclose(model(x), torch.nn.functional.silu(expected))
