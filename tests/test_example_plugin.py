"""The example third-party package in plugins/ is found through its real entry point.

The package is pip-installed into a throw-away virtual environment that sees the packages
of whatever environment runs the tests (a venv, the system interpreter, a conda env), so
sat_toolkit and torch are there, and nothing of the plugin until it is installed: the core
in ``sat_toolkit/`` is not touched at all.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import torch

import sat_toolkit

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


def _activation_rows(python: Path, **env: str) -> dict[str, dict]:
    result = _run(python, ["-m", "sat_toolkit", "plugins", "--kind", "activation", "--json"], **env)
    assert result.returncode == 0, result.stderr
    return {row["name"]: row for row in json.loads(result.stdout)}


def test_not_visible_before_install() -> None:
    rows = _activation_rows(Path(sys.executable))
    assert "mish" not in rows and "pssilu" not in rows


def test_child_env_sees_the_running_environment_not_the_base_interpreter(plugin_env: Path) -> None:
    """The toolkit the child imports is this one, wherever this environment keeps it."""
    probe = "import sat_toolkit, torch; print(sat_toolkit.__file__); print(torch.__file__)"
    result = _run(plugin_env, ["-c", probe])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [sat_toolkit.__file__, torch.__file__]


def test_installed_plugin_is_listed_with_its_distribution(plugin_env: Path) -> None:
    rows = _activation_rows(plugin_env)
    for name in ("mish", "pssilu"):
        assert rows[name]["distribution"] == "sat-extra-activations"
        assert rows[name]["version"] == "0.1.0"
        assert rows[name]["status"] == "ok"
    assert rows["silu"]["distribution"] == "smooth-adversarial-training"


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
        rows = _activation_rows(plugin_env, SAT_TOOLKIT_DISABLE_PLUGINS=blocked)
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
