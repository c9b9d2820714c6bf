"""EfficientNet plugins: timm's scaling reproduced, the activation injected, configs rebuild.

Reference values are independent of the plugin: timm's registered ``efficientnet_b0``
for B0, and for L1 the scaling arithmetic done by hand (channels rounded to multiples of
8, stage repeats rounded up). L1 (273M parameters, 1.1 GB of float32) is built for real
once; rebuilds of it happen on the ``meta`` device, where counting costs nothing.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from sat_toolkit.activations.factory import resolve_activation
from sat_toolkit.activations.surgery import find_functional_activations, replace_activations
from sat_toolkit.data.info import DatasetInfo
from sat_toolkit.errors import SatError
from sat_toolkit.models import create_model, create_model_builder, rebuild_model
from sat_toolkit.models.efficientnet import SCALING
from sat_toolkit.models.pinning import count_parameters

pytestmark = pytest.mark.usefixtures("one_thread")

IMAGENET = DatasetInfo(
    num_classes=1000,
    channels=3,
    image_size=(224, 224),
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
)
SMALL = DatasetInfo(num_classes=10, channels=3, image_size=(64, 64), mean=(0.5,) * 3, std=(0.25,) * 3)
#: EfficientNet-B0's stages: (repeats, output channels); timm's ``_gen_efficientnet`` arch_def.
B0_STAGES = ((1, 16), (2, 24), (2, 40), (3, 80), (3, 112), (4, 192), (1, 320))


def round_channels(channels: float, divisor: int = 8) -> int:
    """TF EfficientNet's channel rounding: nearest multiple of 8, never below 90 %."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


@pytest.fixture(scope="module")
def b0_gelu() -> nn.Module:
    return create_model({"name": "efficientnet", "variant": "b0"}, SMALL, "gelu")


@pytest.fixture(scope="module")
def l1() -> nn.Module:
    return create_model("efficientnet_l1", IMAGENET, "silu")


def test_b0_matches_timm_efficientnet_b0() -> None:
    import timm

    with torch.device("meta"):
        ours = create_model({"name": "efficientnet", "variant": "b0"}, IMAGENET, "silu")
        reference = timm.create_model("efficientnet_b0", pretrained=False, num_classes=1000)
    assert count_parameters(ours) == count_parameters(reference) == 5_288_548
    # Same tensors in the same places, not just the same total.
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    mine = {
        k.removeprefix("body."): tuple(v.shape) for k, v in ours.state_dict().items() if k.startswith("body.")
    }
    assert mine == theirs


def test_l1_scaling_arithmetic_and_count(l1: nn.Module) -> None:
    width, depth, resolution, dropout = SCALING["l1"]
    assert (width, depth, resolution, dropout) == (3.9, 3.7, 600, 0.5)
    body = l1.body
    assert body.conv_stem.out_channels == round_channels(32 * width) == 128
    assert body.num_features == round_channels(1280 * width) == 4992
    assert body.classifier.in_features == 4992 and body.classifier.out_features == 1000
    repeats = [len(stage) for stage in body.blocks]
    assert repeats == [math.ceil(r * depth) for r, _ in B0_STAGES] == [4, 8, 8, 12, 12, 15, 4]
    assert [stage[-1].conv_pwl.out_channels for stage in body.blocks[1:]] == [
        round_channels(c * width) for _, c in B0_STAGES[1:]
    ]
    assert body.drop_rate == 0.5
    assert count_parameters(l1) == 272_630_564
    assert l1.sat_config["model"]["num_params"] == 272_630_564


def test_l1_config_records_the_architecture(l1: nn.Module) -> None:
    import timm

    model = l1.sat_config["model"]
    assert model["name"] == "efficientnet_l1"
    assert {
        k: model[k] for k in ("variant", "width_multiplier", "depth_multiplier", "resolution", "dropout")
    } == {
        "variant": "l1",
        "width_multiplier": 3.9,
        "depth_multiplier": 3.7,
        "resolution": 600,
        "dropout": 0.5,
    }
    assert model["timm_version"] == timm.__version__
    json.dumps(l1.sat_config)  # plain values only
    with torch.device("meta"):
        rebuilt = rebuild_model(l1.sat_config)
    assert count_parameters(rebuilt) == count_parameters(l1)
    assert rebuilt.sat_config == l1.sat_config


def test_l1_activation_injected_without_leftovers(l1: nn.Module) -> None:
    silu = resolve_activation("silu")
    # Stem and head BN-act, 2 per depthwise-separable block (BN-act, SE reduction), 3 per
    # inverted-residual block (two BN-acts, SE reduction); stage 1 holds the 4 ds blocks.
    ds_blocks = len(l1.body.blocks[0])
    ir_blocks = sum(len(stage) for stage in l1.body.blocks[1:])
    assert sum(isinstance(m, silu) for m in l1.modules()) == 2 + 2 * ds_blocks + 3 * ir_blocks == 187
    assert not any(type(m) is nn.SiLU for m in l1.modules())
    assert l1.surgery_report.replaced == {}


def test_activation_goes_in_as_act_layer(b0_gelu: nn.Module) -> None:
    gelu = resolve_activation("gelu")
    leftovers = [type(m).__name__ for m in b0_gelu.modules() if type(m) in (nn.SiLU, nn.ReLU)]
    assert leftovers == []
    import timm.layers.activations as timm_acts

    assert not any(isinstance(m, timm_acts.Swish) for m in b0_gelu.modules())
    # stem + head BN-act, 1 ds block x 2 + 15 inverted-residual blocks x 3: every one is ours.
    assert sum(isinstance(m, gelu) for m in b0_gelu.modules()) == 2 + 2 + 15 * 3
    # Squeeze-excite gates stay sigmoids, one per block.
    assert sum(type(m) is nn.Sigmoid for m in b0_gelu.modules()) == 16
    assert b0_gelu.surgery_report.replaced == {}
    # A second sweep finds nothing, and no functional ReLU hides in a forward.
    assert replace_activations(b0_gelu.body, "gelu").replaced == {}
    assert find_functional_activations(b0_gelu, torch.rand(1, 3, 32, 32)) == []


def test_b0_forward_small_input(b0_gelu: nn.Module) -> None:
    b0_gelu.eval()
    with torch.no_grad():
        logits = b0_gelu(torch.rand(2, 3, 64, 64))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()


def test_b0_config_round_trip(b0_gelu: nn.Module) -> None:
    config = b0_gelu.sat_config
    assert config["model"]["resolution"] == 224 and config["model"]["dropout"] == 0.2
    with torch.device("meta"):
        rebuilt = rebuild_model(config)
    assert count_parameters(rebuilt) == count_parameters(b0_gelu)
    assert set(rebuilt.state_dict()) == set(b0_gelu.state_dict())


@pytest.mark.parametrize("variant", ["b1", "b4", "b7"])
def test_variants_follow_timm(variant: str) -> None:
    import timm

    with torch.device("meta"):
        ours = create_model({"name": "efficientnet", "variant": variant}, IMAGENET, "silu")
        reference = timm.create_model(f"efficientnet_{variant}", pretrained=False)
    assert count_parameters(ours) == count_parameters(reference)
    assert ours.sat_config["model"]["resolution"] == SCALING[variant][2]


def test_overrides_and_tf_compatible_keep_the_count() -> None:
    with torch.device("meta"):
        tf = create_model({"name": "efficientnet", "tf_compatible": True, "resolution": 64}, SMALL, "silu")
        plain = create_model({"name": "efficientnet"}, SMALL, "silu")
    assert count_parameters(tf) == count_parameters(plain)
    assert tf.body.bn1.eps == 1e-3 and tf.sat_config["model"]["resolution"] == 64


def test_rebuild_with_a_different_count_fails() -> None:
    config = create_model_builder({"name": "efficientnet", "num_params": 123, "timm_version": "0.0.1"})
    with torch.device("meta"), pytest.raises(SatError, match=r"123.*timm 0\.0\.1"):
        config.build(SMALL, "silu")


def test_bad_parameters_are_one_line_errors() -> None:
    with pytest.raises(SatError, match="unknown variant 'b9'"):
        create_model_builder({"name": "efficientnet", "variant": "b9"})
    with pytest.raises(SatError, match="model 'efficientnet' builds it"):
        create_model_builder({"name": "efficientnet_l1", "variant": "b0"})
    with pytest.raises(SatError, match=r"dropout must be < 1, got 1\.5"):
        create_model_builder({"name": "efficientnet", "dropout": 1.5})
    with pytest.raises(SatError, match=r"width_multiplier must be > 0, got 0\.0"):
        create_model_builder({"name": "efficientnet", "width_multiplier": 0})
    with pytest.raises(SatError, match="no parameter 'pretrained'"):
        create_model_builder({"name": "efficientnet", "pretrained": True})
