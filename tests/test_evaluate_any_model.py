"""Evaluating models the toolkit did not train: ``sat_toolkit.evaluate`` and ``eval --arch``.

The user's paths: a plain ``nn.Module`` from Python, and a timm architecture with a weights
file from the command line (safetensors, or a ``torch.save``'d checkpoint), on a device
of their choice. Each is checked against an independent computation, not just "it ran".
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file
from test_evaluation import _exact_linear_robustness, _linear_digits_model
from torch import nn

import sat_toolkit
from sat_toolkit.cli import cli
from sat_toolkit.data import create_dataset
from sat_toolkit.engine.evaluation import fixed_test_subset
from sat_toolkit.errors import SatError
from sat_toolkit.models import Normalize, NormalizedModel


def _digits_mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A two-layer MLP trained here on the digits: a model sat-toolkit knows nothing about."""
    train = create_dataset({"name": "digits"}).load("train")
    x_train, y_train = train[list(range(len(train)))]
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    optimiser = torch.optim.Adam(mlp.parameters(), lr=0.01)
    for _ in range(200):
        optimiser.zero_grad()
        nn.functional.cross_entropy(mlp(x_train), y_train).backward()
        optimiser.step()
    x, y = fixed_test_subset(create_dataset({"name": "digits"}).load("test"), 80, 0)
    return mlp.train(), x, y


def test_python_api_on_a_plain_mlp_returns_report_and_adversarial_examples() -> None:
    mlp, x, y = _digits_mlp()
    before = {k: v.clone() for k, v in mlp.state_dict().items()}
    result = sat_toolkit.evaluate(
        mlp, x, y, eps=0.1, suite="quick", attacks=["pgd:steps=10"], per_attack_examples=True
    )
    assert set(result.attacks) == {"apgd_ce", "pgd_steps10"}
    assert mlp.training  # the caller's mode is restored
    assert all(torch.equal(before[k], v) for k, v in mlp.state_dict().items())
    # The returned worst-case examples are real: inside the ball and [0, 1], and the model,
    # re-run here, is right on them exactly for the samples counted robust.
    x_adv = result.x_adv
    assert x_adv.shape == x.shape
    assert float((x_adv - x).abs().max()) <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        right_on_adv = mlp.eval()(x_adv).argmax(1) == y
    assert torch.equal(right_on_adv & result.report.clean_correct, result.report.worst_case)
    assert result.robust_accuracy == pytest.approx(float(result.report.worst_case.float().mean()))
    assert result.robust_accuracy < result.clean_accuracy  # eps = 0.1 breaks an undefended MLP
    per_attack = result.report.attacks["apgd_ce"]
    with torch.no_grad():
        assert torch.equal(
            (mlp(per_attack.x_adv).argmax(1) == y) & result.report.clean_correct, per_attack.robust
        )
    report = result.to_dict()
    assert report["threat_model"] == "Linf" and report["n_examples"] == 80
    assert report["environment"]["device"] == "cpu"


def test_python_api_reaches_the_exact_robustness_of_a_linear_model_and_runs_the_checks() -> None:
    model, x, y = _linear_digits_model(quantise=False)
    result = sat_toolkit.evaluate(
        model, x, y, eps=0.15, suite=None, checks=True, square_queries=300,
        attacks={"ce": "apgd_ce:steps=20", "t": {"name": "apgd_t", "steps": 20}},
    )  # fmt: skip
    exact = _exact_linear_robustness(model.linear, x, y, 0.15) & result.report.clean_correct
    assert torch.equal(result.report.worst_case, exact)
    assert len(result.checks) == 6 and result.passed_checks


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (torch.rand(4, 1, 8, 8) * 255, torch.zeros(4, dtype=torch.long), "not [0, 1]"),
        (torch.rand(4, 1, 8, 8), torch.zeros(3, dtype=torch.long), "one integer label per image"),
        (torch.zeros(4, 64, dtype=torch.long), torch.zeros(4, dtype=torch.long), "float tensor"),
        (torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long), "no images"),
    ],
)
def test_python_api_refuses_inputs_it_cannot_score(x: torch.Tensor, y: torch.Tensor, message: str) -> None:
    with pytest.raises(SatError, match=re.escape(message)):
        sat_toolkit.evaluate(nn.Flatten(), x, y, eps=0.1)


# -- sat-toolkit eval WEIGHTS --arch ... ------------------------------------------------------
MEAN, STD = 0.3, 0.25


@pytest.fixture(scope="module")
def timm_digits_model() -> nn.Module:
    """A timm resnet10t for 1-channel 8x8 digits, briefly trained here with our normalisation."""
    import timm

    torch.manual_seed(0)
    body = timm.create_model("resnet10t", pretrained=False, num_classes=10, in_chans=1)
    model = NormalizedModel(Normalize([MEAN], [STD]), body)
    train = create_dataset({"name": "digits"}).load("train")
    x_train, y_train = train[list(range(512))]
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for start in range(0, 512 * 3, 64):
        index = torch.arange(start, start + 64) % 512
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(x_train[index]), y_train[index]).backward()
        optimiser.step()
    return model.eval()


def _eval_weights(weights: Path, tmp_path: Path, *extra: str) -> tuple[int, str, dict | None]:
    output = tmp_path / "report.json"
    args = [
        "eval", str(weights), "--arch", "resnet10t", "--data", "digits",
        "--mean", str(MEAN), "--std", str(STD), "--eps", "0.05", "--suite", "none",
        "--attack", "pgd:steps=5", "--samples", "40", "--no-checks",
        "--device", "cpu", "--output", str(output), *extra,
    ]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    report = json.loads(output.read_text()) if output.is_file() else None
    return result.exit_code, result.output, report


@pytest.mark.parametrize("fmt", ["safetensors", "state_dict_pt", "wrapped_ddp_checkpoint"])
def test_eval_cli_scores_a_timm_weights_file_like_the_python_api(
    timm_digits_model: nn.Module, tmp_path: Path, fmt: str
) -> None:
    state = {k: v.contiguous() for k, v in timm_digits_model.body.state_dict().items()}
    if fmt == "safetensors":
        weights = tmp_path / "w.safetensors"
        save_file(state, str(weights))
    elif fmt == "state_dict_pt":
        weights = tmp_path / "w.pt"
        torch.save(state, weights)
    else:  # what a DDP training script saves: nested, with "module." on every key
        weights = tmp_path / "w.pth"
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, weights)
    code, output, report = _eval_weights(weights, tmp_path)
    assert code == 0, output
    x, y = fixed_test_subset(create_dataset({"name": "digits"}).load("test"), 40, 0)
    expected = sat_toolkit.evaluate(timm_digits_model, x, y, eps=0.05, suite=None, attacks=["pgd:steps=5"])
    assert report["clean_acc"] == expected.clean_accuracy > 0.5
    assert report["attacks"]["pgd_steps5"]["robust_accuracy"] == expected.attacks["pgd_steps5"]
    assert report["architecture"]["architecture"] == "resnet10t"
    assert report["normalization"] == {"mean": [MEAN], "std": [STD]}
    assert report["environment"]["device"] == "cpu"


def test_eval_cli_builds_the_activation_the_weights_were_trained_with(
    timm_digits_model: nn.Module, tmp_path: Path
) -> None:
    """A SiLU resnet10t's state dict is a ReLU resnet10t's: without --activation, weights
    trained with create_timm_model(..., "silu") were scored as a ReLU network, without a word."""
    from sat_toolkit.activations import create_timm_model

    body, _ = create_timm_model("resnet10t", "silu", num_classes=10, in_chans=1)
    body.load_state_dict(timm_digits_model.body.state_dict())
    silu_model = NormalizedModel(Normalize([MEAN], [STD]), body).eval()
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in body.state_dict().items()}, str(weights))
    x, y = fixed_test_subset(create_dataset({"name": "digits"}).load("test"), 40, 0)
    expected = sat_toolkit.evaluate(silu_model, x, y, eps=0.05, suite=None, attacks=["pgd:steps=5"])
    with torch.no_grad():
        assert not torch.allclose(silu_model(x), timm_digits_model(x), atol=1e-3)  # another model
    code, output, report = _eval_weights(weights, tmp_path, "--activation", "silu")
    assert code == 0, output
    assert report["clean_acc"] == expected.clean_accuracy
    assert report["attacks"]["pgd_steps5"]["robust_accuracy"] == expected.attacks["pgd_steps5"]
    assert report["activation"] == {"name": "silu"}
    code, output, report = _eval_weights(weights, tmp_path)  # scored as ReLU: said, since nothing else can
    assert code == 0 and "is built with its own activations" in output and report["activation"] is None
    for extra, message in [
        (["--activation", "siluu"], "unknown activation 'siluu'"),
        (["--arch", "resnet10t:act_layer=silu"], "give the activation with --activation NAME, not act_layer"),
    ]:
        code, output, _ = _eval_weights(weights, tmp_path, *extra)
        assert code == 2 and message in output and "Traceback" not in output, output
    result = CliRunner().invoke(cli, ["eval", str(tmp_path), "--activation", "silu"])
    assert result.exit_code == 2 and "a sat-toolkit model file records its own activation" in result.output


def test_eval_cli_refuses_a_pickle_that_would_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    weights = tmp_path / "evil.pt"
    torch.save({"state_dict": Payload()}, weights)
    code, output, _ = _eval_weights(weights, tmp_path)
    assert code == 2 and "refused because loading them could run code" in output
    assert "Traceback" not in output and not marker.exists()


def _pickle_that_touches(marker: Path, path: Path) -> Path:
    """A torch file whose unpickling would create ``marker``."""

    class Payload:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": Payload()}, path)
    return path


@pytest.mark.parametrize("route", ["model file's sat_config", "--arch"])
def test_a_checkpoint_path_for_timm_to_load_is_refused_on_every_route(tmp_path: Path, route: str) -> None:
    """A model file or --arch naming a pickle for timm.create_model(checkpoint_path=...) runs nothing.

    timm reads checkpoint_path with torch.load (without weights_only in versions our
    requirements once allowed), so the model's own parameters must never reach it.
    """
    from sat_toolkit.export import save_model
    from sat_toolkit.models import create_model

    marker = tmp_path / "pwned"
    evil = _pickle_that_touches(marker, tmp_path / "evil.pth")
    info = create_dataset("digits").info()
    model = create_model({"name": "timm", "architecture": "resnet10t"}, info, {"name": "relu"})
    config = {**model.sat_config, "dataset": {"name": "digits"}}
    if route == "--arch":
        weights = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in model.body.state_dict().items()}, str(weights))
        code, output, report = _eval_weights(weights, tmp_path, "--arch", f"resnet10t:checkpoint_path={evil}")
    else:
        config["model"] = {**config["model"], "checkpoint_path": str(evil)}
        weights = save_model(model, config, tmp_path / "crafted.safetensors")
        result = CliRunner().invoke(cli, ["eval", str(weights), "--samples", "8", "--no-checks"])
        code, output, report = result.exit_code, result.output, None
    assert code == 2, output
    assert "parameter 'checkpoint_path' would make timm read or fetch weights" in output
    assert "Traceback" not in output and report is None and not marker.exists()


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        ("pgd:stepz=3", "Error: attack 'pgd' has no parameter 'stepz'; valid parameters: "),
        ("pgd:steps=0", "Error: attack 'pgd': steps must be >= 1, got 0"),
    ],
)
def test_eval_cli_refuses_an_attacks_parameters_before_it_announces_the_evaluation(
    timm_digits_model: nn.Module, tmp_path: Path, attack: str, message: str
) -> None:
    """A stranger's walk: such mistakes came after "evaluating ... on N test images", two lines."""
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in timm_digits_model.body.state_dict().items()}, str(weights))
    code, output, report = _eval_weights(weights, tmp_path, "--attack", attack)
    assert code == 2 and report is None
    assert len(output.strip().splitlines()) == 1 and output.startswith(message), output


def test_eval_cli_says_how_it_reads_labels_for_a_model_with_more_outputs(tmp_path: Path) -> None:
    import timm

    body = timm.create_model("resnet10t", pretrained=False, num_classes=12, in_chans=1)
    weights = tmp_path / "w12.safetensors"
    save_file({k: v.contiguous() for k, v in body.state_dict().items()}, str(weights))
    code, output, report = _eval_weights(weights, tmp_path, "--num-classes", "12")
    assert code == 0, output
    assert (
        "note: the model has 12 outputs and the dataset 10 classes: its labels 0..9 are read as the "
        "model's first 10 classes, and a prediction of any other counts as wrong"
    ) in output
    assert report is not None and report["n_examples"] == 40


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--num-classes", "12"], "weight 'fc.weight' has shape (10, 512) but the model expects (12, 512)"),
        (
            ["--num-classes", "5"],
            "--num-classes 5: the dataset's labels run to 9, beyond the model's outputs",
        ),
        (["--arch", "resnet10tt"], "unknown architecture 'resnet10tt'"),
        (["--mean", "0.1,0.2"], "--mean: the data has 1 channel(s); give 1 value, got 2"),
        (["--mean", "77", "--std", "60"], "for 8-bit statistics divide by 255"),
        (["--eps", "8"], "did you mean 8/255?"),
        (["--attack", "pgd:eps=0.3"], "has eps 0.3 but this evaluation's eps is 0.05"),
        (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "nonsense"], "--device"),
    ],
)
def test_eval_cli_foreign_weights_mistakes_are_one_line(
    timm_digits_model: nn.Module, tmp_path: Path, extra: list[str], message: str
) -> None:
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in timm_digits_model.body.state_dict().items()}, str(weights))
    code, output, report = _eval_weights(weights, tmp_path, *extra)
    assert code == 2 and message in output, output
    assert "Traceback" not in output and report is None


@pytest.mark.parametrize(
    ("dtype", "value", "message"),
    [
        (
            torch.float32,
            float("nan"),
            "'fc.weight' holds NaN or inf, so the weights would give meaningless results",
        ),
        (torch.int64, 0, "'fc.weight' is int64, the model's is float32"),
    ],
)
def test_eval_cli_refuses_weights_that_hold_nan_or_integers(
    timm_digits_model: nn.Module, tmp_path: Path, dtype: torch.dtype, value: float, message: str
) -> None:
    """load_state_dict would copy both without a word, and the evaluation would report a number."""
    state = {k: v.contiguous() for k, v in timm_digits_model.body.state_dict().items()}
    state["fc.weight"] = torch.full_like(state["fc.weight"], value, dtype=dtype)
    weights = tmp_path / "w.safetensors"
    save_file(state, str(weights))
    code, output, report = _eval_weights(weights, tmp_path)
    assert code == 2 and message in output and len(output.strip().splitlines()) == 1, output
    assert report is None


def test_eval_cli_takes_half_precision_weights_as_the_widened_fp32_model(
    timm_digits_model: nn.Module, tmp_path: Path
) -> None:
    """fp16 weights are widened losslessly: the scores are those of the fp16-rounded fp32 model."""
    rounded = {
        k: v.half() if v.is_floating_point() else v for k, v in timm_digits_model.body.state_dict().items()
    }
    save_file({k: v.contiguous() for k, v in rounded.items()}, str(tmp_path / "half.safetensors"))
    save_file(
        {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in rounded.items()},
        str(tmp_path / "widened.safetensors"),
    )
    half = _eval_weights(tmp_path / "half.safetensors", tmp_path)
    (tmp_path / "second").mkdir()
    widened = _eval_weights(tmp_path / "widened.safetensors", tmp_path / "second")
    assert half[0] == widened[0] == 0, half[1]
    assert half[2]["clean_acc"] == widened[2]["clean_acc"] > 0.5
    scores = [
        {name: attack["robust_accuracy"] for name, attack in report["attacks"].items()}
        for report in (half[2], widened[2])
    ]
    assert scores[0] == scores[1]


def test_eval_cli_arch_needs_normalisation_and_data(tmp_path: Path) -> None:
    weights = tmp_path / "w.safetensors"
    save_file({"x": torch.zeros(1)}, str(weights))
    no_norm = CliRunner().invoke(
        cli, ["eval", str(weights), "--arch", "resnet10t", "--data", "digits", "--eps", "0.1"]
    )
    assert no_norm.exit_code == 2 and "--mean and --std" in no_norm.output
    no_data = CliRunner().invoke(
        cli, ["eval", str(weights), "--arch", "resnet10t", "--mean", "0", "--std", "1"]
    )
    assert no_data.exit_code == 2 and "--data NAME" in no_data.output
    no_eps = CliRunner().invoke(
        cli, ["eval", str(weights), "--arch", "resnet10t", "--data", "digits", "--mean", "0", "--std", "1"]
    )
    assert no_eps.exit_code == 2 and no_eps.output.strip().splitlines()[-1] == (
        "Error: --arch: a weights file does not say which eps it was trained for; pass --eps, in [0, 1] "
        "pixels (L-inf: 8/255 is CIFAR's usual budget, 4/255 ImageNet's)"
    )
    foreign = CliRunner().invoke(cli, ["eval", str(weights), "--eps", "0.1"])
    assert foreign.exit_code == 2 and "carries no sat_config" in foreign.output


def test_two_weights_files_in_one_folder_get_their_own_reports(
    timm_digits_model: nn.Module, tmp_path: Path
) -> None:
    state = {k: v.contiguous() for k, v in timm_digits_model.body.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save(state, tmp_path / "w.pth")

    def evaluate(name: str, mean: str) -> None:
        args = [
            "eval", str(tmp_path / name), "--arch", "resnet10t", "--data", "digits", "--mean", mean,
            "--std", "0.25", "--eps", "0.05", "--suite", "none", "--attack", "pgd:steps=2", "--samples", "10",
            "--no-checks",
        ]  # fmt: skip
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output

    for name in ("w.safetensors", "w.pth"):
        evaluate(name, "0.3")
    reports = sorted(p.name for p in tmp_path.glob("eval-*.json"))
    common = "-none+pgd_steps2-linf-eps0.05-n10-seed0-"
    assert [name.split(common)[0] for name in reports] == ["eval-w_pth", "eval-w_safetensors"]
    digests = {name.split(common)[1] for name in reports}
    assert len(digests) == 1, "the same images read the same way: the same digest"
    first = {name: (tmp_path / name).read_bytes() for name in reports}
    # The same weights read with other statistics are another evaluation: a report of their own.
    evaluate("w.pth", "0.5")
    third = sorted(set(p.name for p in tmp_path.glob("eval-*.json")) - set(reports))
    assert len(third) == 1 and third[0].startswith("eval-w_pth" + common)
    assert json.loads((tmp_path / third[0]).read_text())["normalization"]["mean"] == [0.5]
    assert all((tmp_path / name).read_bytes() == data for name, data in first.items())


def test_eval_cli_checks_the_architecture_on_the_datasets_image_size(tmp_path: Path) -> None:
    weights = tmp_path / "w.safetensors"
    save_file({"x": torch.zeros(1)}, str(weights))
    args = ["eval", str(weights), "--arch", "vit_tiny_patch16_224:img_size=28", "--data", "digits",
            "--mean", "0.5", "--std", "0.5", "--eps", "0.1"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "fails on the dataset's 1x8x8 images" in result.output
    assert "Traceback" not in result.output and result.output.rstrip().endswith(
        "make the two agree: --arch NAME:img_size=... (and patch_size) where the architecture takes them, "
        "or --data NAME:image_size=... to serve the images at the size the weights expect"
    )  # both fixes: the weights' size may be the right one (a stranger's walk)


def test_python_api_casts_double_images_and_takes_attacks_returning_tensors() -> None:
    mlp, x, y = _digits_mlp()

    class ShiftAttack:  # a third-party attack: no base class, returns a bare tensor
        def perturb(self, model, x, y, *, eps=None):
            return (x + eps).clamp(0, 1)

    result = sat_toolkit.evaluate(mlp, x.double(), y, eps=0.05, suite=None, attacks={"shift": ShiftAttack()})
    with torch.no_grad():
        expected = (mlp.eval()((x + 0.05).clamp(0, 1)).argmax(1) == y) & result.report.clean_correct
    assert torch.equal(result.report.attacks["shift"].robust, expected)
    assert result.to_dict()["environment"]["precision"] == "fp32"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"eps": 2}, "did you mean 2/255?"),
        ({"eps": 0.1, "norm": "l2", "attacks": {"p": {"name": "pgd", "norm": "linf"}}}, "has norm linf"),
        ({"eps": 0.1, "num_classes": 5}, "num_classes is 5 but the model returns 10 logits"),
        ({"eps": 0.1, "labels": 10}, "labels run from 10 to 19; the model has classes 0 to 9"),
        ({"eps": 0.1, "device": "gpu"}, "device='gpu': not a device name"),  # in Python's terms, not --device
    ],
)
def test_python_api_refuses_a_mismatched_threat_model_or_labels(options: dict, message: str) -> None:
    mlp, x, y = _digits_mlp()
    y = y + options.pop("labels", 0)
    with pytest.raises(SatError, match=re.escape(message)):
        sat_toolkit.evaluate(mlp, x, y, suite="quick", **options)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the default device then)")
def test_eval_defaults_to_the_gpu_and_matches_the_cpu(timm_digits_model: nn.Module) -> None:
    x, y = fixed_test_subset(create_dataset({"name": "digits"}).load("test"), 40, 0)
    from sat_toolkit.devices import default_device

    assert default_device().type == "cuda"
    cpu = sat_toolkit.evaluate(timm_digits_model.cpu(), x, y, eps=0.05, suite=None, attacks=["pgd:steps=5"])
    gpu = sat_toolkit.evaluate(
        timm_digits_model, x, y, eps=0.05, suite=None, attacks=["pgd:steps=5"], device="cuda"
    )
    assert gpu.to_dict()["environment"]["device"].startswith("cuda:0")
    assert gpu.clean_accuracy == cpu.clean_accuracy
    assert abs(gpu.robust_accuracy - cpu.robust_accuracy) <= 1 / 40


def test_a_report_the_file_system_refuses_at_the_end_is_kept_and_located(tmp_path: Path) -> None:
    """The location is checked before the evaluation; should the write still fail, the
    hours of evaluation are not lost: the report goes to the temp directory, one line says where."""
    from sat_toolkit.commands.eval import _write_report
    from sat_toolkit.errors import SatError

    (tmp_path / "blocker").write_text("a file where the report's folder would be")
    with pytest.raises(SatError) as caught:
        _write_report(tmp_path / "blocker" / "report.json", '{"robust_accuracy": 0.5}\n')
    message = caught.value.message
    assert message.startswith(
        f"--output {tmp_path / 'blocker' / 'report.json'}: could not write the report ("
    )
    kept = Path(message.rsplit("it is saved in ", 1)[1])
    assert kept.read_text() == '{"robust_accuracy": 0.5}\n'
    kept.unlink()


def test_an_attack_whose_loss_needs_more_classes_is_refused_before_any_attack_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stranger's walk: on a 3-class model APGD-T (targeted DLR, 4 classes at least) stopped
    the evaluation after APGD-CE had attacked every image, or, where APGD-CE had fooled them
    all, was skipped and the suite's number written as if it had run."""
    import sat_toolkit.evaluation.evaluate as evaluate_module

    model = NormalizedModel(Normalize((0.5,), (0.5,)), nn.Sequential(nn.Flatten(), nn.Linear(64, 3)))
    x, y = torch.rand(8, 1, 8, 8), torch.arange(8) % 3
    monkeypatch.setattr(evaluate_module, "evaluate_robustness", lambda *a, **k: pytest.fail("attacked"))
    with pytest.raises(SatError) as refused:
        sat_toolkit.evaluate(model, x, y, eps=0.1, suite=None, checks=False, attacks=["apgd_ce", "apgd_t"])
    assert refused.value.message.startswith(
        "attack 'apgd_t' (apgd_t) needs at least 4 classes and the model has 3; leave it out"
    )
