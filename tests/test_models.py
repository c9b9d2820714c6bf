"""Model plugins: shapes, normalisation in the model, activation injection, configs, training."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from sat_toolkit.activations import ReLU, SiLU, SmoothReLU
from sat_toolkit.activations.surgery import is_activation
from sat_toolkit.data import DatasetInfo, Digits, iterate_batches
from sat_toolkit.errors import SatError
from sat_toolkit.models import (
    ActivationSurgeryWarning,
    Normalize,
    NormalizedModel,
    PreActResNet18,
    SmallCNN,
    TimmModel,
    create_model,
    create_model_builder,
    rebuild_model,
)
from sat_toolkit.plugins import PluginKind, get_plugin_host

INFOS = {
    "8x8x1": DatasetInfo(10, 1, (8, 8), (0.3,), (0.4,)),
    "28x28x1": DatasetInfo(10, 1, (28, 28), (0.286,), (0.353,)),
    "32x32x3": DatasetInfo(7, 3, (32, 32), (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)),
}
# Small widths keep the suite fast; the architecture is the same at any width.
SPECS = {
    "small_cnn": {"name": "small_cnn", "width": 8},
    "preact_resnet18": {"name": "preact_resnet18", "width": 8},
    "wide_resnet": {"name": "wide_resnet", "depth": 10, "widen_factor": 1},
    "timm": {"name": "timm", "architecture": "resnet10t"},
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """These models are tiny: a second intra-op thread only adds contention on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _timm_relu_count() -> int:
    reference = timm.create_model("resnet10t", pretrained=False)
    return sum(isinstance(m, nn.ReLU) for m in reference.modules())


def expected_silu_count(kind: str) -> int:
    return {
        "small_cnn": 3 * 2,  # depth x convs_per_stage
        "preact_resnet18": 8 * 2 + 1,  # two per block, eight blocks, plus the final BN-act
        "wide_resnet": 3 * 2 + 1,  # WRN-10: one block per stage, three stages, plus the final BN-act
        "timm": _timm_relu_count(),  # one of ours wherever timm would put a ReLU
    }[kind]


@pytest.fixture(scope="module", params=list(INFOS))
def info(request: pytest.FixtureRequest) -> DatasetInfo:
    return INFOS[request.param]


@pytest.mark.parametrize("kind", list(SPECS))
def test_output_shape(kind: str, info: DatasetInfo) -> None:
    torch.manual_seed(0)
    model = create_model(SPECS[kind], info, "silu")
    x = torch.rand(3, *info.input_shape)
    model.train()
    assert model(x).shape == (3, info.num_classes)
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (3, info.num_classes) and torch.isfinite(logits).all()


def test_normalize_is_exactly_x_minus_mean_over_std() -> None:
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    x = torch.rand(5, 3, 4, 4)
    mean_t = torch.tensor(mean).view(1, 3, 1, 1)
    std_t = torch.tensor(std).view(1, 3, 1, 1)
    layer = Normalize(mean, std)
    assert torch.equal(layer(x), (x - mean_t) / std_t)
    assert [name for name, _ in layer.named_buffers()] == ["mean", "std"]
    assert list(layer.parameters()) == []
    assert layer.to(torch.float64).mean.dtype == torch.float64  # buffers follow .to()


@pytest.mark.parametrize("kind", list(SPECS))
def test_normalisation_is_the_first_layer(kind: str) -> None:
    info = INFOS["32x32x3"]
    torch.manual_seed(0)
    model = create_model(SPECS[kind], info, "silu").eval()
    assert isinstance(model, NormalizedModel)
    assert isinstance(next(iter(model.children())), Normalize)
    x = torch.rand(4, *info.input_shape)
    manual = (x - torch.tensor(info.mean).view(1, -1, 1, 1)) / torch.tensor(info.std).view(1, -1, 1, 1)
    with torch.no_grad():
        assert torch.equal(model(x), model.body(manual))
    state = model.state_dict()
    assert torch.equal(state["normalize.mean"].flatten(), torch.tensor(info.mean))
    assert torch.equal(state["normalize.std"].flatten(), torch.tensor(info.std))


@pytest.mark.parametrize("kind", list(SPECS))
def test_activation_is_injected_everywhere_as_distinct_instances(kind: str) -> None:
    model = create_model(SPECS[kind], INFOS["28x28x1"], "silu")
    assert not any(isinstance(m, (nn.ReLU, ReLU)) for m in model.modules())
    # Every activation module left is ours, and there is one per use site: named_modules
    # without de-duplication would list a shared instance twice.
    acts = [m for _, m in model.named_modules(remove_duplicate=False) if is_activation(m)]
    assert all(isinstance(m, SiLU) for m in acts)
    assert len(acts) == expected_silu_count(kind)
    assert len({id(m) for m in acts}) == len(acts)


def test_activation_parameters_reach_every_instance() -> None:
    spec = {"name": "smoothrelu", "alpha": 5.0}
    model = create_model({"name": "preact_resnet18", "width": 4}, INFOS["8x8x1"], spec)
    acts = [m for m in model.modules() if isinstance(m, SmoothReLU)]
    assert len(acts) == 17 and all(m.hparams()["alpha"] == 5.0 for m in acts)


def _preact_resnet18_param_count(width: int, channels: int, classes: int) -> int:
    """Counted from the architecture's definition, independently of the code under test."""

    def bn(c: int) -> int:
        return 2 * c  # weight and bias

    total = channels * width * 9  # 3x3 stem, no bias
    in_c = width
    for stage, stride in enumerate((1, 2, 2, 2)):
        out_c = width * 2**stage
        for block in range(2):
            s = stride if block == 0 else 1
            total += bn(in_c) + in_c * out_c * 9 + bn(out_c) + out_c * out_c * 9
            if s != 1 or in_c != out_c:
                total += in_c * out_c  # 1x1 projection
            in_c = out_c
    return total + bn(in_c) + in_c * classes + classes


def _wide_resnet_param_count(depth: int, k: int, channels: int, classes: int) -> int:
    """WRN-depth-k counted from Zagoruyko & Komodakis' table, independently of the code under test."""
    n = (depth - 4) // 6
    total = channels * 16 * 9  # 3x3 stem
    in_c = 16
    for stage in range(3):
        out_c = 16 * k * 2**stage
        for _ in range(n):
            total += 2 * in_c + in_c * out_c * 9 + 2 * out_c + out_c * out_c * 9
            if in_c != out_c:  # the first block of each stage changes the width (k > 1) or stride
                total += in_c * out_c
            in_c = out_c
    return total + 2 * in_c + in_c * classes + classes


def test_wide_resnet_parameter_count_and_depth_check() -> None:
    cifar10 = DatasetInfo(10, 3, (32, 32), (0.5,) * 3, (0.25,) * 3)

    def count(**params: int) -> int:
        return sum(
            p.numel() for p in create_model({"name": "wide_resnet", **params}, cifar10, "silu").parameters()
        )

    # RobustBench's WRN-28-10 and WRN-34-10 (TRADES, MART) have 36,479,194 and 46,160,474.
    assert count() == _wide_resnet_param_count(28, 10, 3, 10) == 36_479_194
    assert count(depth=34) == _wide_resnet_param_count(34, 10, 3, 10) == 46_160_474
    assert count(depth=16, widen_factor=2) == _wide_resnet_param_count(16, 2, 3, 10)
    with pytest.raises(SatError, match=r"depth: 27 is not 6n \+ 4"):
        create_model({"name": "wide_resnet", "depth": 27}, cifar10, "silu")


def test_preact_resnet18_parameter_count() -> None:
    model = PreActResNet18(width=64).build(INFOS["32x32x3"], "silu")
    count = sum(p.numel() for p in model.parameters())
    assert count == _preact_resnet18_param_count(64, 3, 7)
    ten_classes = sum(
        p.numel()
        for p in PreActResNet18()
        .build(DatasetInfo(10, 3, (32, 32), (0.5,) * 3, (0.25,) * 3), "silu")
        .parameters()
    )
    # The widely quoted CIFAR-10 PreActResNet18 has 11,171,146 parameters; He et al.'s
    # final BN before pooling (2 x 512) makes 11,172,170.
    assert ten_classes == _preact_resnet18_param_count(64, 3, 10) == 11_171_146 + 1024
    assert sum(p.numel() for p in PreActResNet18(width=32).build(INFOS["8x8x1"], "silu").parameters()) == (
        _preact_resnet18_param_count(32, 1, 10)
    )


@pytest.mark.parametrize("kind", list(SPECS))
def test_sat_config_rebuilds_the_same_model(kind: str) -> None:
    info = INFOS["28x28x1"]
    torch.manual_seed(0)
    activation = {"name": "smoothrelu", "alpha": 8.0}
    model = create_model(SPECS[kind], info, activation).eval()
    config = json.loads(json.dumps(model.sat_config))  # survives JSON: plain values only
    assert config == model.sat_config
    assert config["version"] == 1
    assert config["model"]["name"] == kind and config["activation"] == activation
    assert DatasetInfo.from_dict(config["data_info"]) == info
    torch.manual_seed(1)
    rebuilt = rebuild_model(config).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = torch.rand(2, *info.input_shape)
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))


def test_sat_config_records_every_parameter_with_defaults() -> None:
    model = SmallCNN().build(INFOS["8x8x1"], "silu")
    assert model.sat_config["model"] == {
        "name": "small_cnn",
        "width": 32,
        "depth": 3,
        "convs_per_stage": 2,
        "dropout": 0.0,
        "head": "pool",
    }
    timm_model = TimmModel(architecture="resnet10t", drop_rate=0.1).build(INFOS["8x8x1"], "gelu")
    assert timm_model.sat_config["model"] == {
        "name": "timm",
        "architecture": "resnet10t",
        "drop_rate": 0.1,
        "timm_version": timm.__version__,
        "num_params": sum(p.numel() for p in timm_model.parameters()),
    }
    assert timm_model.sat_config["activation"] == "gelu"


def test_a_timm_rebuild_that_counts_differently_is_refused() -> None:
    """A later timm that builds the architecture differently must not load the old weights."""
    model = create_model({"name": "timm", "architecture": "resnet10t"}, INFOS["8x8x1"], "silu")
    config = model.sat_config
    assert rebuild_model(config).sat_config["model"]["num_params"] == config["model"]["num_params"]
    tampered = {**config, "model": {**config["model"], "num_params": config["model"]["num_params"] + 1}}
    with pytest.raises(SatError, match=r"builds [\d,]+ parameters, but the config says"):
        rebuild_model(tampered)


def test_timm_model_records_its_surgery_report() -> None:
    model = create_model(SPECS["timm"], INFOS["32x32x3"], "silu")
    report = model.surgery_report
    assert report.functional_checked and report.functional_calls == []
    assert model.body.surgery_route == "act_layer+sweep"


def test_timm_model_warns_about_functional_relu_it_cannot_replace() -> None:
    # MobileViT-v2's attention calls F.relu in forward; no module surgery can reach it.
    with pytest.warns(ActivationSurgeryWarning, match=r"attn: torch.nn.functional.relu"):
        model = create_model({"name": "timm", "architecture": "mobilevitv2_050"}, INFOS["32x32x3"], "silu")
    assert model.body.surgery_route == "act_layer+sweep"
    assert model.surgery_report.functional_calls
    assert all(isinstance(m, SiLU) for m in model.modules() if is_activation(m))


def test_timm_input_mismatch_is_a_clear_error() -> None:
    with pytest.raises(SatError, match=r"\(vit_tiny_patch16_224\) fails on a 1x28x28 input .* pass img_size"):
        create_model(
            {"name": "timm", "architecture": "vit_tiny_patch16_224", "depth": 1}, INFOS["28x28x1"], "silu"
        )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "small_cnn", "width": 0}, "model 'small_cnn': width must be >= 1, got 0"),
        ({"name": "small_cnn", "width": -8}, "model 'small_cnn': width must be >= 1, got -8"),
        ({"name": "small_cnn", "width": 2.5}, "model 'small_cnn': width: expected an integer, got float 2.5"),
        ({"name": "small_cnn", "depth": 0}, "model 'small_cnn': depth must be >= 1, got 0"),
        ({"name": "small_cnn", "dropout": 1.0}, r"model 'small_cnn': dropout must be < 1, got 1\.0"),
        (
            {"name": "small_cnn", "head": "dense"},
            "model 'small_cnn': head must be one of 'pool', 'fc', got string 'dense'",
        ),
        (
            {"name": "preact_resnet18", "width": 0},
            "model 'preact_resnet18': width must be >= 1, got 0",
        ),
        (
            {"name": "small_cnn", "widht": 8},
            "model 'small_cnn' has no parameter 'widht'; valid parameters: width",
        ),
        ({"name": "timm"}, "model 'timm' needs the parameter 'architecture'"),
        (
            {"name": "timm", "architecture": "resnet17"},
            "model 'timm': unknown architecture 'resnet17'; similar: ",
        ),
        (
            {"name": "timm", "architecture": "resnet18", "pretrained": True},
            "pretrained = true would download",
        ),
        (
            {"name": "timm", "architecture": "resnet18", "in_chans": 3},
            "parameter 'in_chans' is set by the toolkit",
        ),
        ({"name": "resnet18"}, "unknown model 'resnet18'"),
    ],
)
def test_bad_parameters_are_one_line_errors(spec: dict[str, object], message: str) -> None:
    with pytest.raises(SatError, match=message) as caught:
        create_model_builder(spec)
    assert "\n" not in str(caught.value)


def test_bad_activation_fails_before_building() -> None:
    with pytest.raises(SatError, match="unknown activation 'silly'"):
        SmallCNN().build(INFOS["8x8x1"], "silly")


def test_plugin_host_finds_builtin_models() -> None:
    host = get_plugin_host()
    assert host.get(PluginKind.MODEL, "small_cnn") is SmallCNN
    assert host.get(PluginKind.MODEL, "preact_resnet18") is PreActResNet18
    assert host.get(PluginKind.MODEL, "timm") is TimmModel
    for cls in (SmallCNN, PreActResNet18, TimmModel):
        assert cls.description and "\n" not in cls.description


@pytest.fixture(scope="module")
def trained_digits_cnn() -> tuple[nn.Module, float]:
    """small_cnn (width 16) trained for 3 seeded epochs on digits: about 1 s on one CPU core."""
    torch.manual_seed(0)
    data = Digits()
    train, test = data.load("train"), data.load("test")
    model = create_model({"name": "small_cnn", "width": 16}, data.info(), "silu")
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        model.train()
        for images, labels in iterate_batches(train, 64, shuffle=True, generator=generator):
            loss = F.cross_entropy(model(images), labels)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        images, labels = test[torch.arange(len(test))]
        accuracy = (model(images).argmax(1) == labels).float().mean().item()
    return model, accuracy


def test_small_cnn_learns_digits(trained_digits_cnn: tuple[nn.Module, float]) -> None:
    _, accuracy = trained_digits_cnn
    assert accuracy > 0.8  # chance is 0.1


def test_the_same_weights_give_the_same_model_file_in_every_process(tmp_path: Path) -> None:
    """A file hash is a reproducibility fingerprint: no metadata order that varies per process."""
    script = "\n".join([
        "import sys, torch",
        "from sat_toolkit.data import create_dataset",
        "from sat_toolkit.export import save_model",
        "from sat_toolkit.models import create_model",
        "torch.manual_seed(0)",
        "info = create_dataset({'name': 'digits'}).info()",
        "m = create_model({'name': 'small_cnn', 'width': 4, 'depth': 1}, info, 'silu')",
        "save_model(m, m.sat_config, sys.argv[1])",
    ])  # fmt: skip
    files = [tmp_path / f"model{i}.safetensors" for i in range(6)]
    for path in files:
        subprocess.run([sys.executable, "-c", script, str(path)], check=True, capture_output=True)
    assert len({path.read_bytes() for path in files}) == 1
    header_size = int.from_bytes(files[0].read_bytes()[:8], "little")
    header = json.loads(files[0].read_bytes()[8 : 8 + header_size])
    assert list(header["__metadata__"]) == ["sat_config"]


@pytest.mark.parametrize(("size", "depth", "side"), [((28, 28), 3, 7), ((8, 8), 3, 2), ((28, 20), 2, None)])
def test_small_cnn_fc_head_flattens_the_last_feature_map(
    size: tuple[int, int], depth: int, side: int | None
) -> None:
    """Each stride-2 stage maps a side n to ceil(n / 2); the fc head sees channels x H' x W'."""
    info = DatasetInfo(num_classes=10, channels=1, image_size=size, mean=[0.5], std=[0.5])
    model = create_model({"name": "small_cnn", "width": 4, "depth": depth, "head": "fc"}, info, "relu")
    height, width = (side, side) if side else (14, 10)
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [m.in_features for m in linear] == [4 * 2 ** (depth - 1) * height * width]
    assert model.body.features(torch.rand(3, 1, *size)).shape[1:] == (4 * 2 ** (depth - 1), height, width)
    assert model(torch.rand(3, 1, *size)).shape == (3, 10)
    pooled = create_model({"name": "small_cnn", "width": 4, "depth": depth}, info, "relu")
    assert [m.in_features for m in pooled.modules() if isinstance(m, nn.Linear)] == [4 * 2 ** (depth - 1)]
