"""benchmarks/gpu_studies.sh, the one-call runner of studies on a lent GPU machine, walked
on the CPU: it must run the studies it is given into docs/results/<name> and pack their
records, and nothing heavier, for the device tool to bring back."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STUDY = """
[study]
name = "one_cell"
base = "../quickstart.toml"
seeds = [0]
set = [
    "train.epochs=1",
    "data.limit_train=256",
    'model={name = "small_cnn", width = 8, depth = 2, convs_per_stage = 1}',
    "train.validate_every_epochs=0",
    "logging.tensorboard=false",
    'attack.eval={samples = 50, seed = 0, pgd5 = {name = "pgd", steps = 5}}',
]

[[study.axis]]
name = "activation"
[study.axis.values]
relu = ["activation=relu"]
"""


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("tar") is None, reason="needs bash and tar")
def test_run_packs_the_finished_cells_of_the_studies_it_ran_without_weights(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"  # the script works in the checkout it lies in
    (checkout / "benchmarks").mkdir(parents=True)
    shutil.copy(REPO / "benchmarks" / "gpu_studies.sh", checkout / "benchmarks")
    (checkout / "recipes" / "studies").mkdir(parents=True)
    shutil.copy(REPO / "recipes" / "quickstart.toml", checkout / "recipes")
    (checkout / "recipes" / "studies" / "one_cell.toml").write_text(STUDY)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out), "JOBS": "1"}
    script = checkout / "benchmarks" / "gpu_studies.sh"
    command = ["bash", str(script), "run", "600", "recipes/studies/one_cell.toml"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "== recipes/studies/one_cell.toml -> docs/results/one_cell" in done.stdout
    with tarfile.open(out / "studies.tgz") as archive:
        names = set(archive.getnames())
    cell = "docs/results/one_cell/relu/seed0"
    assert {f"{cell}/metrics.json", f"{cell}/recipe.toml", "docs/results/one_cell/study.json"} <= names
    assert {"docs/results/one_cell/report.md", "docs/results/one_cell/logs/relu-seed0.log"} <= names
    assert (checkout / cell / "model.safetensors").is_file()  # trained there, but not packed:
    assert not [n for n in names if "checkpoints" in n or n.endswith((".safetensors", ".lock"))]
    assert all(n.startswith("docs/results/one_cell") for n in names)  # only the studies it ran


def test_run_without_a_study_or_mode_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_studies.sh")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and done.stderr.startswith("usage:")
