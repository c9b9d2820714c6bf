"""The example third-party package in plugins/ is found through its real entry point.

The package is pip-installed into a throw-away virtual environment that sees the packages
of whatever environment runs the tests (a venv, the system interpreter, a conda env), so
sat_toolkit and torch are there, and nothing of the plugin until it is installed: the core
in ``sat_toolkit/`` is not touched at all. There its activation, attack and schedule run
through a recipe, as a user would run them.

The conformance checks and the MI-FGSM reference tests import the package's classes in
this process instead (its ``src`` put on ``sys.path``): the checks need no registration,
and in-process they report every problem as the test's own ``AssertionError``, with the
test's thread settings. Discovery is what the child environment is there to prove.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sat_toolkit
from sat_toolkit.testing import check_activation, check_attack, check_schedule

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "plugins" / "sat-extra-activations"

USE_PLUGIN = """
import torch
from torch import nn
from sat_toolkit.activations import create_activation, replace_activations
from sat_toolkit.activations.surgery import count_modules

mish = create_activation("mish")
x = torch.linspace(-3, 3, 7, dtype=torch.float64)
print("mish", [round(v, 6) for v in mish.double()(x).tolist()])
pssilu = create_activation({"name": "pssilu", "alpha": 1.0, "beta": 0.0})
print("pssilu_is_silu", torch.allclose(pssilu(x.float()), nn.functional.silu(x.float())))
model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU())
report = replace_activations(model, {"name": "pssilu", "beta": 0.2}, example_input=torch.rand(2, 4))
print("replaced", len(report.replaced), "relu_left", count_modules(model, (nn.ReLU,)))
print("types", sorted({type(m).__module__ for m in model if not isinstance(m, nn.Linear)}))
"""


def _parent_site_dirs() -> list[str]:
    """The site-packages directories this interpreter reads, in its own order.

    ``EnvBuilder(system_site_packages=True)`` would expose the *base* interpreter's
    packages, which is not where torch and sat_toolkit live when the tests run inside a
    virtual environment; these directories are.
    """
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return [d for d in dict.fromkeys(dirs) if Path(d).is_dir()]


def _see_parent_packages(python: Path) -> None:
    """Let the child environment import everything installed where the tests run.

    A ``.pth`` line that calls ``site.addsitedir`` appends each directory after the
    child's own site-packages (so the plugin, once installed there, comes first) and also
    processes those directories' own ``.pth`` files, which is how an editable install of
    the toolkit is found.
    """
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    lines = [f"import site; site.addsitedir({d!r})" for d in _parent_site_dirs()]
    (Path(purelib) / "_sat_toolkit_test_parent_env.pth").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env_dir = tmp_path_factory.mktemp("plugin-venv")
    builder = venv.EnvBuilder(system_site_packages=False, with_pip=False)
    builder.create(env_dir)
    python = Path(builder.ensure_directories(env_dir).env_exe)
    _see_parent_packages(python)
    # --no-deps/--no-build-isolation: everything needed (setuptools included, see the
    # test extra) is visible from the parent env, so the install is offline and takes
    # seconds.
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
         "--no-build-isolation", str(PLUGIN)],
        capture_output=True, text=True, cwd=env_dir,
    )  # fmt: skip
    assert result.returncode == 0, f"installing the example plugin failed:\n{result.stdout}{result.stderr}"
    return python


def _run(python: Path, args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "SAT_TOOLKIT_DISABLE_PLUGINS"}
    environ.update(env)
    return subprocess.run([str(python), *args], capture_output=True, text=True, env=environ, timeout=300)


def _rows(python: Path, kind: str = "activation", **env: str) -> dict[str, dict]:
    result = _run(python, ["-m", "sat_toolkit", "plugins", "--kind", kind, "--json"], **env)
    assert result.returncode == 0, result.stderr
    return {row["name"]: row for row in json.loads(result.stdout) if row["kind"] == kind}


def test_not_visible_before_install() -> None:
    rows = _rows(Path(sys.executable))
    assert "mish" not in rows and "pssilu" not in rows


def test_child_env_sees_the_running_environment_not_the_base_interpreter(plugin_env: Path) -> None:
    """The toolkit the child imports is this one, wherever this environment keeps it."""
    probe = "import sat_toolkit, torch; print(sat_toolkit.__file__); print(torch.__file__)"
    result = _run(plugin_env, ["-c", probe])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [sat_toolkit.__file__, torch.__file__]


def test_installed_plugin_is_listed_with_its_distribution(plugin_env: Path) -> None:
    rows = _rows(plugin_env)
    for name in ("mish", "pssilu"):
        assert rows[name]["distribution"] == "sat-extra-activations"
        assert rows[name]["version"] == "0.1.0"
        assert rows[name]["status"] == "ok"
    assert rows["silu"]["distribution"] == "smooth-adversarial-training"
    for kind, name in (("attack", "mifgsm"), ("schedule", "triangular")):
        row = _rows(plugin_env, kind)[name]
        assert (row["distribution"], row["version"], row["status"]) == (
            "sat-extra-activations",
            "0.1.0",
            "ok",
        )


def test_installed_plugin_is_usable_by_the_core(plugin_env: Path) -> None:
    result = _run(plugin_env, ["-c", USE_PLUGIN])
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())
    # Mish(x) = x tanh(softplus(x)), checked against values computed here independently.
    import math

    expected = [round(x * math.tanh(math.log1p(math.exp(x))), 6) for x in (-3, -2, -1, 0, 1, 2, 3)]
    assert lines["mish"] == str(expected)
    assert lines["pssilu_is_silu"] == "True"
    assert lines["replaced"] == "2 relu_left 0"
    assert lines["types"] == "['sat_extra_activations.activations']"


def test_cli_shows_the_plugin_and_blocking_hides_it(plugin_env: Path) -> None:
    table = _run(plugin_env, ["-m", "sat_toolkit", "activations"])
    assert table.returncode == 0 and "sat-extra-activations" in table.stdout
    for blocked in ("sat-extra-activations", "extra-activations", "*"):
        rows = _rows(plugin_env, SAT_TOOLKIT_DISABLE_PLUGINS=blocked)
        assert "mish" not in rows and "pssilu" not in rows
        assert rows["silu"]["status"] == "ok"
    listing = _run(plugin_env, ["-m", "sat_toolkit", "plugins"], SAT_TOOLKIT_DISABLE_PLUGINS="*")
    blocked_row = next(line for line in listing.stdout.splitlines() if "sat-extra-activations" in line)
    assert "blocked" in blocked_row


def test_plugin_activation_draws_to_png(plugin_env: Path, tmp_path: Path) -> None:
    target = tmp_path / "acts.png"
    result = _run(plugin_env, ["-m", "sat_toolkit", "activations", "--plot", str(target), "--only", "mish"])
    assert result.returncode == 0, result.stderr
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- the attack and the schedule through a recipe, in the child environment ------------------
PLUGIN_RECIPE = """
[run]
name = "plugin-run"
seed = 0
output_dir = "{output_dir}"

[data]
name = "digits"
batch_size = 32
eval_batch_size = 64
limit_train = 128                # 4 steps per epoch

[model]
name = "small_cnn"
width = 8
depth = 2
convs_per_stage = 1

[activation]
name = "pssilu"
learnable = true

[attack.train]
name = "mifgsm"
eps = 0.1
steps = 2

[attack.eval]
samples = 32

[attack.eval.mifgsm5]
name = "mifgsm"                  # eps inherited from attack.train, seed from attack.eval
steps = 5

[optimizer]
name = "sgd"
lr = 0.05
weight_decay = 5e-4

[schedule.lr]
name = "triangular"
peak = 0.5

[train]
epochs = 2
validate_every_epochs = 0
log_every_steps = 1

[checkpoint]
every_steps = 0
keep_last = 1
"""


@pytest.fixture(scope="module")
def plugin_run(plugin_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two epochs on digits; the activation, both attacks and the lr schedule are the plugin's."""
    root = tmp_path_factory.mktemp("plugin-run")
    recipe = root / "recipe.toml"
    recipe.write_text(PLUGIN_RECIPE.format(output_dir=root / "run"))
    validated = _run(plugin_env, ["-m", "sat_toolkit", "recipe", "validate", str(recipe)])
    assert (validated.returncode, validated.stdout) == (0, "ok\n"), validated.stderr
    result = _run(plugin_env, ["-m", "sat_toolkit", "run", str(recipe), "--no-progress"])
    assert result.returncode == 0, result.stderr
    return root / "run"


def test_plugin_attack_trains_and_evaluates_through_a_recipe(plugin_run: Path) -> None:
    metrics = json.loads((plugin_run / "metrics.json").read_text())
    assert (metrics["steps"], metrics["epochs"]) == (8, 2)
    evaluation = metrics["evaluation"]
    assert evaluation["samples"] == 32 and set(evaluation["attacks"]) == {"mifgsm5"}
    attack = evaluation["attacks"]["mifgsm5"]
    settings = {k: attack["settings"][k] for k in ("name", "eps", "steps", "decay", "step_size", "seed")}
    assert settings == {"name": "mifgsm", "eps": 0.1, "steps": 5, "decay": 1.0, "step_size": None, "seed": 0}
    assert 0.0 <= attack["robust_accuracy"] <= evaluation["clean_accuracy"]
    # The plugin is installed in the child environment only: read the resolved recipe as TOML.
    from sat_toolkit.parsing import tomllib

    resolved = tomllib.loads((plugin_run / "recipe.toml").read_text(encoding="utf-8"))
    assert resolved["attack"]["train"]["name"] == "mifgsm"
    assert resolved["schedule"]["lr"] == {"name": "triangular", "peak": 0.5, "start": 0.0, "end": 0.0}


def test_plugin_schedule_drives_the_learning_rate(plugin_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logged: dict[int, float] = {}
    for events in sorted((plugin_run / "tensorboard").rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        if "train/lr" in accumulator.Tags().get("scalars", []):
            logged.update({event.step: event.value for event in accumulator.Scalars("train/lr")})
    # 8 steps, peak 0.5: linear from 0 up to lr = 0.05 at step 4, then down towards 0 at step 8.
    # Step s is logged after the optimiser step that used the value for step s - 1.
    expected = {s + 1: 0.05 * (s / 4 if s < 4 else 1 - (s - 4) / 4) for s in range(8)}
    assert logged.keys() == expected.keys()
    assert all(logged[s] == pytest.approx(expected[s], rel=1e-6, abs=1e-9) for s in expected)


def test_learnable_activation_parameters_are_trained_and_saved(plugin_run: Path) -> None:
    from safetensors.torch import load_file

    weights = load_file(str(plugin_run / "model.safetensors"))
    log_alphas = [k for k in weights if k.endswith(".log_alpha")]
    betas = [k for k in weights if k.endswith(".beta")]
    assert len(log_alphas) == len(betas) == 2  # one PSSiLU per conv block, two blocks
    assert all(weights[k].shape == () for k in log_alphas + betas)
    assert any(float(weights[k]) != 0.0 for k in log_alphas)  # log(alpha = 1) = 0 at the start


# -- the same classes in this process: conformance and the MI-FGSM reference ----------------
@pytest.fixture(scope="module")
def package() -> Iterator[ModuleType]:
    """``sat_extra_activations`` imported from its source tree (no install: see the module docstring)."""
    import importlib

    sys.path.insert(0, str(PLUGIN / "src"))
    try:
        yield importlib.import_module("sat_extra_activations")
    finally:
        sys.path.remove(str(PLUGIN / "src"))
        for name in [m for m in sys.modules if m.split(".")[0] == "sat_extra_activations"]:
            del sys.modules[name]


def test_package_classes_pass_the_conformance_checks(package: ModuleType) -> None:
    check_activation(package.Mish)
    check_activation(package.PSSiLU, alpha=2.0, beta=0.2, learnable=True)
    check_attack(package.MIFGSM, steps=3)
    check_attack(package.MIFGSM, steps=4, decay=0.0, step_size=0.03)
    check_schedule(package.Triangular)
    check_schedule(package.Triangular, peak=0.25, start=0.1, end=0.01)


def _digit_batch() -> tuple[torch.Tensor, torch.Tensor]:
    from sat_toolkit.data.digits import Digits

    return Digits(limit_test=16).load("test")[torch.arange(16)]


def _small_cnn() -> nn.Module:
    from sat_toolkit.data.digits import Digits
    from sat_toolkit.models import create_model

    torch.manual_seed(0)
    model = create_model({"name": "small_cnn", "width": 8, "depth": 2}, Digits().info(), "silu")
    return model.train()  # as the training loop hands it over; perturb works in eval mode


def test_mifgsm_without_momentum_is_fgsm_and_iterated_fgsm(package: ModuleType) -> None:
    from sat_toolkit.attacks import FGSM, PGD

    model, (x, y) = _small_cnn(), _digit_batch()
    one_step = package.MIFGSM(eps=0.1, steps=1, decay=0.0).perturb(model, x, y).x_adv
    assert torch.equal(one_step, FGSM(eps=0.1).perturb(model, x, y).x_adv)
    # decay = 0 forgets the velocity: each step is FGSM's, of size eps / steps (BIM).
    iterated = package.MIFGSM(eps=0.1, steps=4, decay=0.0).perturb(model, x, y).x_adv
    assert torch.equal(iterated, PGD(eps=0.1, steps=4, step_size=0.025).perturb(model, x, y).x_adv)


def _reference_mifgsm(
    weight: torch.Tensor,
    bias: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    decay: float,
) -> torch.Tensor:
    """Dong et al.'s update for a linear softmax classifier, gradients in closed form, float64."""
    x = x.double().flatten(1)
    weight, bias = weight.double(), bias.double()
    onehot = F.one_hot(y, weight.shape[0]).double()
    low, high = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    x_adv, velocity = x.clone(), torch.zeros_like(x)
    for _ in range(steps):
        probs = torch.softmax(x_adv @ weight.T + bias, dim=1)
        grad = (probs - onehot) @ weight  # d CE / d x for each sample
        velocity = decay * velocity + grad / grad.abs().sum(dim=1, keepdim=True)
        x_adv = torch.minimum(torch.maximum(x_adv + eps / steps * velocity.sign(), low), high)
    return x_adv


def test_mifgsm_matches_an_independent_computation(package: ModuleType) -> None:
    torch.manual_seed(3)
    linear = nn.Linear(16, 3)
    model = nn.Sequential(nn.Flatten(), linear)
    x = torch.rand(6, 1, 4, 4)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    results = {}
    for decay in (1.0, 0.5, 0.0):
        x_adv = package.MIFGSM(eps=0.3, steps=6, decay=decay).perturb(model, x, y).x_adv
        expected = _reference_mifgsm(linear.weight.detach(), linear.bias.detach(), x, y, 0.3, 6, decay)
        torch.testing.assert_close(x_adv.flatten(1).double(), expected, rtol=0, atol=1e-6)
        results[decay] = x_adv
    # The momentum matters here: the three decays give three different attacks.
    assert not torch.equal(results[1.0], results[0.0]) and not torch.equal(results[0.5], results[0.0])


def test_learnable_activation_parameters_skip_weight_decay_only_while_excluded(package: ModuleType) -> None:
    from sat_toolkit.engine.optim import build_optimizer

    model = nn.Sequential(nn.Linear(4, 4), package.PSSiLU(learnable=True), nn.Linear(4, 2))
    activation = {id(p) for p in model[1].parameters()}
    assert len(activation) == 2  # log_alpha and beta
    groups = build_optimizer(model, "sgd", lr=0.1, weight_decay=5e-4).param_groups
    decay_of = {id(p): group["weight_decay"] for group in groups for p in group["params"]}
    assert {decay_of[i] for i in activation} == {0.0}  # 0-d tensors, like norm scales and biases
    assert decay_of[id(model[0].weight)] == 5e-4
    everything = build_optimizer(
        model, "sgd", lr=0.1, weight_decay=5e-4, exclude_norm_and_bias_from_weight_decay=False
    ).param_groups
    assert {group["weight_decay"] for group in everything} == {5e-4}
