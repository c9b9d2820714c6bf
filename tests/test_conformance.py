"""``sat_toolkit.testing``: every built-in plugin passes its kind's check, and each check can fail.

A conformance check that passes everything is worthless, so for each kind a broken class
is fed in and the ``AssertionError`` must name exactly what is broken.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sat_toolkit.activations import Activation
from sat_toolkit.attacks import Attack, AttackResult, preserve_model_state
from sat_toolkit.data.fashion_mnist import DEFAULT_DIR as FASHION_MNIST_DIR
from sat_toolkit.data.info import DatasetInfo
from sat_toolkit.phase import attack_phase
from sat_toolkit.plugins import get_plugin_host
from sat_toolkit.plugins.manager import BUILTIN_DISTRIBUTION, normalise_distribution
from sat_toolkit.schedules import Schedule
from sat_toolkit.testing import (
    check_activation,
    check_attack,
    check_conformance,
    check_dataset,
    check_model,
    check_schedule,
    conformance_problems,
    install_fake_distribution,
)

pytestmark = pytest.mark.usefixtures("one_thread")

#: Parameters that keep each built-in's check to about a second (the defaults run
#: ImageNet-sized attacks and models); anything not listed is checked with its defaults.
FAST: dict[str, dict[str, Any]] = {
    "apgd": {"steps": 5},
    "apgd_ce": {"steps": 5},
    "apgd_dlr": {"steps": 5},
    "apgd_t": {"steps": 5, "n_target_classes": 3},
    "square": {"queries": 30},
    "ensemble": {"attacks": ["apgd_ce", {"name": "square", "queries": 20}]},
    "small_cnn": {"width": 8, "depth": 2},
    "preact_resnet18": {"width": 8},
    "wide_resnet": {"depth": 10, "widen_factor": 1},
    "timm": {"architecture": "resnet18"},
    "efficientnet": {"width_multiplier": 0.25, "depth_multiplier": 0.25},
    "efficientnet_l1": {"width_multiplier": 0.25, "depth_multiplier": 0.25},
    "digits": {"limit_train": 8, "limit_test": 8},
    "fashion_mnist": {"limit_train": 8, "limit_test": 8},
    "synthetic": {"num_classes": 3, "image_size": 8, "train_size": 4, "test_size": 4},
}

BUILTINS = [
    pytest.param(record.kind, record.name, id=f"{record.kind}-{record.name}")
    for record in get_plugin_host().records()
    if record.obj is not None and normalise_distribution(record.distribution) == BUILTIN_DISTRIBUTION
]


def _png_tree(root: Path) -> Path:
    """``root/{train,val}/{a,b}/0.png``: the smallest image folder with two classes."""
    from PIL import Image

    for split in ("train", "val"):
        for shade, name in ((40, "a"), (200, "b")):
            (root / split / name).mkdir(parents=True)
            Image.new("RGB", (10, 12), (shade, 255 - shade, 90)).save(root / split / name / "0.png")
    return root


def _hub_save(root: Path) -> Path:
    """A two-class ``DatasetDict`` written with ``save_to_disk``, as the hub plugin reads it."""
    import datasets
    from PIL import Image

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    images = [Image.new("RGB", (9, 9), (shade, 30, 60)) for shade in (20, 220)]
    split = datasets.Dataset.from_dict({"image": images, "label": [0, 1]}, features=features)
    datasets.DatasetDict({"train": split, "test": split}).save_to_disk(str(root / "hub"))
    return root / "hub"


def _params(name: str, tmp_path: Path) -> dict[str, Any]:
    if name == "fashion_mnist" and not FASHION_MNIST_DIR.is_dir():
        pytest.skip(f"fashion_mnist reads {FASHION_MNIST_DIR}, which this machine lacks (apt install it)")
    if name == "imagefolder":
        return {"path": str(_png_tree(tmp_path / "tree")), "image_size": 8}
    if name == "hub":
        return {"path": str(_hub_save(tmp_path)), "image_size": 8}
    return FAST.get(name, {})


@pytest.mark.parametrize(("kind", "name"), BUILTINS)
def test_every_builtin_passes_its_kinds_check(kind: str, name: str, tmp_path: Path) -> None:
    cls = get_plugin_host().get(kind, name)
    check_conformance(kind, cls, **_params(name, tmp_path))


def test_every_kind_has_builtins_under_test() -> None:
    kinds = {param.values[0] for param in BUILTINS}
    assert kinds == {"activation", "attack", "schedule", "model", "dataset", "objective"}


# -- activations -----------------------------------------------------------------------------
class Flattens(Activation):
    name = "flattens"
    smooth = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x).flatten(1)


class Logs(Activation):
    name = "logs"
    smooth = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x)


class Noisy(Activation):
    name = "noisy"
    smooth = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.01 * torch.rand_like(x)


class InPlace(Activation):
    name = "in_place"
    smooth = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.relu_()


class Unsmooth(nn.Module):  # no 'smooth' flag: the static contract catches it first
    name = "unsmooth"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_activation_check_names_a_changed_shape() -> None:
    with pytest.raises(AssertionError) as failure:
        check_activation(Flattens)
    assert str(failure.value) == (
        "activation class Flattens fails the sat-toolkit conformance check (1 problem):\n"
        "  - forward changes the shape (2, 3, 4, 4) -> (2, 48); an activation is element-wise and must "
        "keep the shape"
    )


def test_activation_check_names_non_finite_values_randomness_and_in_place_writes() -> None:
    # The check's batch, as its docstring describes it: seeded normal values times 3, the first
    # seven replaced by fixed points from -20 to 20 (0 among them). log is NaN below 0 and
    # -inf at 0; its gradient 1/x is finite except at 0.
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 3
    x.view(-1)[:7] = torch.tensor([-20.0, -5.0, -1.0, 0.0, 1.0, 5.0, 20.0])
    assert conformance_problems("activation", Logs) == [
        f"forward gives {int((x <= 0).sum())} non-finite values (NaN or inf) on inputs in [-20, 20]",
        "backward gives 1 non-finite input gradients on inputs in [-20, 20]",
    ]
    assert conformance_problems("activation", Noisy) == [
        "is not deterministic: two forward passes on the same input differ"
    ]
    assert conformance_problems("activation", InPlace) == [
        "forward modifies its input in place; return a new tensor (attacks need the input)"
    ]


def test_activation_check_reports_the_static_contract_first() -> None:
    assert conformance_problems("activation", Unsmooth) == [
        "needs a class attribute 'smooth' = True or False (True when its gradient is continuous)"
    ]


def test_activation_check_names_a_value_its_schema_refuses() -> None:
    from sat_toolkit.activations import ParametricSoftplus

    with pytest.raises(
        AssertionError,
        match=r"ParametricSoftplus\(alpha=-1\.0\) is refused by its declared parameters: alpha must be > 0",
    ):
        check_activation(ParametricSoftplus, alpha=-1.0)


def test_activation_check_names_a_constructor_that_raises() -> None:
    class Refuses(nn.Module):
        name = "refuses"
        description = "checks in __init__, as an older plugin might"
        smooth = True

        def __init__(self, alpha: float = 1.0) -> None:
            super().__init__()
            if alpha < 0:
                raise ValueError(f"alpha must be >= 0, got {alpha}")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    with pytest.raises(AssertionError, match=r"Refuses\(alpha=-1\.0\) raised ValueError: alpha must be >= 0"):
        check_activation(Refuses, alpha=-1.0)


# -- attacks ---------------------------------------------------------------------------------
def _ce_sign(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    leaf = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(F.cross_entropy(model(leaf), y), leaf)
    return grad.sign()


class LeavesTheBall(Attack):
    name = "leaves_the_ball"

    def _perturb(self, model: Any, x: torch.Tensor, y: torch.Tensor, eps: float) -> AttackResult:
        return AttackResult(x_adv=(x + 2 * eps * _ce_sign(model, x, y)).clamp(0, 1), eps=eps)


class ForgetsToClamp(Attack):
    name = "forgets_to_clamp"

    def _perturb(self, model: Any, x: torch.Tensor, y: torch.Tensor, eps: float) -> AttackResult:
        return AttackResult(x_adv=x + eps * _ce_sign(model, x, y), eps=eps)


class IgnoresTheCallsEps(Attack):
    name = "ignores_the_calls_eps"

    def _perturb(self, model: Any, x: torch.Tensor, y: torch.Tensor, eps: float) -> AttackResult:
        return AttackResult(x_adv=(x + self.eps * _ce_sign(model, x, y)).clamp(0, 1), eps=self.eps)


class GlobalRandom(Attack):
    """Takes a seed (from the base) but draws from torch's global generator."""

    name = "global_random"

    def _perturb(self, model: Any, x: torch.Tensor, y: torch.Tensor, eps: float) -> AttackResult:
        noise = torch.empty_like(x).uniform_(-eps, eps)
        return AttackResult(x_adv=(x + noise).clamp(0, 1) if eps else x.clone(), eps=eps)


class LeavesTrainMode:
    """Follows the contract on paper, but puts the model in eval mode and leaves it there."""

    name = "leaves_train_mode"
    description = "forgets to restore the model's mode"

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float | None = None) -> Any:
        model.eval()
        with attack_phase(), torch.no_grad():
            model(x)
        return x.clone()


class LeavesGradients:
    """Restores the mode, stays in the attack phase, but differentiates with loss.backward()."""

    name = "leaves_gradients"

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float | None = None) -> Any:
        modes = [m.training for m in model.modules()]
        model.eval()
        with attack_phase(), torch.enable_grad():
            F.cross_entropy(model(x), y).backward()
        for module, mode in zip(model.modules(), modes, strict=True):
            module.training = mode
        return x.clone()


class WritesIntoX:
    name = "writes_into_x"

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float | None = None) -> Any:
        return x.mul_(0.99)


class OutsideThePhase:
    """Keeps the model's state, but its passes look like training passes to a surrogate activation."""

    name = "outside_the_phase"

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float = 0.1) -> Any:
        with preserve_model_state(model):
            sign = _ce_sign(model, x, y)
        return (x + eps * sign).clamp(0, 1)


class ReturnsATuple(Attack):
    name = "returns_a_tuple"

    def _perturb(self, model: Any, x: torch.Tensor, y: torch.Tensor, eps: float) -> Any:
        return x.clone(), None


class NoPerturb:
    name = "no_perturb"

    def attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x


def test_attack_check_names_examples_outside_the_ball() -> None:
    with pytest.raises(AssertionError) as failure:
        check_attack(LeavesTheBall)
    assert str(failure.value) == (
        "attack class LeavesTheBall fails the sat-toolkit conformance check (1 problem):\n"
        "  - perturb(model, x, y, eps=0.1) returned x_adv outside the linf eps-ball (largest perturbation "
        "0.2, eps 0.1); project every iterate onto the ball "
        "(sat_toolkit.attacks.projections.PROJECTIONS.get(norm)(x, eps))"
    )


def test_attack_check_names_examples_outside_the_box() -> None:
    # The batch has pixels at exactly 0 and 1, so a step of eps without clamping leaves [0, 1].
    problems = conformance_problems("attack", ForgetsToClamp)
    assert problems == [
        "perturb(model, x, y, eps=0.1) returned x_adv outside [0, 1] (min -0.1, max 1.1); clamp it to [0, 1]"
    ]


def test_attack_check_names_an_attack_that_ignores_the_calls_budget() -> None:
    problems = conformance_problems("attack", IgnoresTheCallsEps)
    assert len(problems) == 1
    assert problems[0].startswith("perturb(model, x, y, eps=0.05) returned x_adv outside the linf eps-ball")
    assert problems[0].endswith(
        "(the attack was built with eps=0.1): perturb's eps must override the attack's own budget for the "
        "call; the training loop passes the scheduled eps this way"
    )


def test_attack_check_names_unseeded_randomness() -> None:
    state = torch.get_rng_state()
    problems = conformance_problems("attack", GlobalRandom)
    assert problems == [
        "built with seed=0, perturb still drew from torch's global random state; draw from "
        "self.generator(x.device) (sat_toolkit.attacks.Attack) or a torch.Generator of your own",
        "two instances built with seed=0 gave different x_adv; seed every random draw "
        "(self.generator(x.device) in sat_toolkit.attacks.Attack)",
    ]
    assert torch.equal(torch.get_rng_state(), state)  # the check itself leaves the caller's RNG alone


def test_attack_check_names_a_model_left_in_another_mode() -> None:
    with pytest.raises(AssertionError) as failure:
        check_attack(LeavesTrainMode)
    # Seven modules were in train mode and are left in eval mode; the head (6) was in eval mode.
    assert str(failure.value) == (
        "attack class LeavesTrainMode fails the sat-toolkit conformance check (1 problem):\n"
        "  - perturb left the train/eval mode of module(s) (the model itself), 0, 1, 2 and 3 more changed; "
        "restore it "
        "(subclass sat_toolkit.attacks.Attack, or use sat_toolkit.attacks.state.preserve_model_state)"
    )


def test_attack_check_names_parameter_gradients_left_behind() -> None:
    # 0.bias is frozen by the check's model, so five parameters receive a gradient.
    assert conformance_problems("attack", LeavesGradients) == [
        "perturb left .grad on parameters (0.weight, 1.weight, 1.bias, 6.weight and 1 more); take input "
        "gradients with torch.autograd.grad(loss, x_adv), not loss.backward()"
    ]


def test_attack_check_names_in_place_writes() -> None:
    assert conformance_problems("attack", WritesIntoX) == [
        "perturb modified the input batch x in place; work on a copy (x is the training batch)"
    ]


def test_attack_check_names_forward_passes_outside_the_attack_phase() -> None:
    assert conformance_problems("attack", OutsideThePhase) == [
        "1 of 1 forward passes ran outside sat_toolkit.phase.attack_phase(); enter it around the attack "
        "(Attack.perturb does)"
    ]


def test_attack_check_names_a_wrong_return_type_and_a_missing_perturb() -> None:
    assert conformance_problems("attack", ReturnsATuple) == [
        "perturb(model, x, y, eps=0.1) returned tuple; return sat_toolkit.attacks.AttackResult(x_adv=...) "
        "or the adversarial tensor"
    ]
    assert conformance_problems("attack", NoPerturb) == ["has no method perturb(model, x, y, *, eps=None)"]


# -- schedules -------------------------------------------------------------------------------
class NanAtStepThree(Schedule):
    name = "nan_at_step_three"

    def _value(self, step: int, total_steps: int, base: float) -> float:
        return float("nan") if step == 3 else base


class Counting(Schedule):
    """Decays by call count instead of by step: fine in a loop, wrong after a resume."""

    name = "counting"

    def __init__(self) -> None:
        self.calls = 0

    def _value(self, step: int, total_steps: int, base: float) -> float:
        self.calls += 1
        return base * 0.99**self.calls


class RunsPastTheEnd:
    name = "runs_past_the_end"
    targets = ("lr",)

    def value(self, step: int, total_steps: int, base: float) -> float:
        return base * max(0.0, 1 - step / total_steps) + 1e-3 * (step > total_steps)


def test_schedule_check_names_a_nan() -> None:
    with pytest.raises(AssertionError) as failure:
        check_schedule(NanAtStepThree)
    assert str(failure.value) == (
        "schedule class NanAtStepThree fails the sat-toolkit conformance check (1 problem):\n"
        "  - value(3, 50, 0.1) returned nan; return a finite number"
    )


def test_schedule_check_names_state_kept_between_calls() -> None:
    assert conformance_problems("schedule", Counting) == [
        "is not pure: value(0, 1, 0.1) depends on earlier calls; compute it from (step, total_steps, base) "
        "alone (a resumed run restores only the step)"
    ]


def test_schedule_check_names_steps_past_the_end() -> None:
    assert conformance_problems("schedule", RunsPastTheEnd) == [
        "steps past the end must return the value at the end: value(1, 1, 0.1) = 0.0 but "
        "value(2, 1, 0.1) = 0.001"
    ]


# -- models ----------------------------------------------------------------------------------
class Unnormalised:
    """Builds a network without Normalize or sat_config, and with a hard-wired ReLU."""

    name = "unnormalised"

    def build(self, info: DatasetInfo, activation: Any) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(info.channels * 16 * 16, 8), nn.ReLU(), nn.Linear(8, 3))


class WrongClassCount:
    name = "wrong_class_count"

    def build(self, info: DatasetInfo, activation: Any) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(info.channels * 16 * 16, info.num_classes + 1))


def test_model_check_names_every_missing_part() -> None:
    with pytest.raises(AssertionError) as failure:
        check_model(Unnormalised)
    message = str(failure.value)
    assert message.startswith(
        "model class Unnormalised fails the sat-toolkit conformance check (3 problems):"
    )
    assert "  - has no Normalize layer with the dataset's mean and std;" in message
    assert "  - contains no SiLU although built with activation 'silu';" in message
    assert "  - the built model has no sat_config dict;" in message


def test_model_check_names_the_wrong_logit_shape() -> None:
    problems = conformance_problems("model", WrongClassCount)
    assert (
        problems[0] == "maps [2, 3, 16, 16] images to (2, 4); expected [2, 3] logits (num_classes from info)"
    )


# -- datasets --------------------------------------------------------------------------------
class RawPixels:
    """Yields uint8 pixels 0..255 and labels one too high: two classic mistakes."""

    name = "raw_pixels"

    def info(self) -> DatasetInfo:
        return DatasetInfo(num_classes=2, channels=1, image_size=(4, 4), mean=(0.5,), std=(0.2,))

    def load(self, split: str) -> list[tuple[torch.Tensor, int]]:
        return [(torch.full((1, 4, 4), 255, dtype=torch.uint8), 2)]


def test_dataset_check_names_pixels_and_labels() -> None:
    problems = conformance_problems("dataset", RawPixels)
    assert problems == [
        "load('train')[0]: the image is torch.uint8; yield a float32 tensor C x H x W",
        "load('train')[0]: label 2 is outside 0 .. 1 (info().num_classes)",
        "load('test')[0]: the image is torch.uint8; yield a float32 tensor C x H x W",
        "load('test')[0]: label 2 is outside 0 .. 1 (info().num_classes)",
    ]
    with pytest.raises(AssertionError, match=r"dataset class RawPixels .* \(4 problems\)"):
        check_dataset(RawPixels)


def test_an_untyped_constructor_parameter_is_a_conformance_problem() -> None:
    """Discovery loads it, but ``weight=abc`` passed validation and failed inside the plugin."""

    class Loose(Schedule):
        name = "loose"
        description = "untyped weight"

        def __init__(self, weight=0.5) -> None:  # noqa: ANN001 - the mistake under test
            self.weight = weight

        def _value(self, step: int, total_steps: int, base: float) -> float:
            return base * self.weight

    assert conformance_problems("schedule", Loose) == [
        "constructor parameter 'weight' has no type annotation, so a recipe's value reaches it unchecked; "
        "declare it (e.g. weight: float = ..., or Annotated[float, Param(ge=0)])"
    ]


# -- the fake distribution -------------------------------------------------------------------
def test_install_fake_distribution_writes_what_pip_would(tmp_path: Path) -> None:
    info = install_fake_distribution(tmp_path, "my-acts", "VALUE = 1\n", version="2.0", entry_point="acts")
    assert info == tmp_path / "my_acts-2.0.dist-info"
    assert (info / "METADATA").read_text() == "Metadata-Version: 2.1\nName: my-acts\nVersion: 2.0\n"
    assert (info / "entry_points.txt").read_text() == "[sat_toolkit]\nacts = my_acts_plugin\n"
    assert (tmp_path / "my_acts_plugin.py").read_text() == "VALUE = 1\n"


@pytest.fixture
def a_broken_package_installed_already(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> str:
    """What a developer's environment may hold: a plugin package whose module fails to import."""
    site = tmp_path_factory.mktemp("installed")
    install_fake_distribution(site, "someones-broken-acts", "raise ImportError('half-installed')\n")
    monkeypatch.syspath_prepend(str(site))
    return "someones-broken-acts"


def test_fake_distribution_fixture_blocks_what_the_environment_had_installed(
    a_broken_package_installed_already: str, fake_distribution: Any
) -> None:
    """A plugin author's test sees the built-ins and its own fakes only (a stranger's walk got
    seven warnings from unrelated packages in a test of its own)."""
    import warnings

    from sat_toolkit.plugins import PluginWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)  # the broken package would warn if it loaded
        records = get_plugin_host().records()
    (blocked,) = (r for r in records if r.distribution == a_broken_package_installed_already)
    assert blocked.status == "blocked"
    assert not any(r.status == "failed" for r in records)
    # A fake named like the installed package stands in for it: it loads, the broken copy does not.
    fake_distribution(a_broken_package_installed_already, WAVY, version="9.9")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)
        record = next(r for r in get_plugin_host().records("activation") if r.name == "wavy")
    assert (record.distribution, record.version, record.status) == (
        a_broken_package_installed_already,
        "9.9",
        "ok",
    )


WAVY = """
import torch
from sat_toolkit.activations import Activation
from sat_toolkit.plugins import hookimpl

class Wavy(Activation):
    name = "wavy"
    description = "x + sin(x) / 2"

    def forward(self, x):
        return x + torch.sin(x) / 2

@hookimpl
def sat_register_activations():
    return [Wavy]
"""


def test_fake_distribution_fixture_installs_a_discoverable_plugin(fake_distribution: Any) -> None:
    fake_distribution("wavy-acts", WAVY, version="0.3")
    record = next(r for r in get_plugin_host().records("activation") if r.name == "wavy")
    assert (record.distribution, record.version, record.status) == ("wavy-acts", "0.3", "ok")
    check_activation(record.obj)


def test_sat_toolkit_never_imports_pytest() -> None:
    """Only sat_toolkit.testing may: the CLI and the library must work where pytest is absent."""
    probe = (
        "import sys, sat_toolkit, sat_toolkit.cli, sat_toolkit.api; "
        "from sat_toolkit.plugins import get_plugin_host; get_plugin_host(); "
        "print('pytest' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
