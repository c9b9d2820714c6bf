"""``sat-toolkit run`` end to end on the bundled digits: files, accuracy, resume, failures."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import sat_toolkit
from sat_toolkit.cli import cli
from sat_toolkit.engine.checkpoint import list_checkpoints
from sat_toolkit.engine.trainer import NonFiniteLossError, train
from sat_toolkit.errors import SatError
from sat_toolkit.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]


def tiny_recipe(output_dir: Path, **sections: dict) -> dict:
    """A recipe that trains in seconds: 640 digits, a narrow CNN, 3 epochs of 20 steps."""
    recipe = {
        "run": {"name": "tiny", "seed": 0, "output_dir": str(output_dir), "deterministic": True},
        "data": {"name": "digits", "batch_size": 32, "eval_batch_size": 128, "limit_train": 640},
        "model": {"name": "small_cnn", "width": 8, "depth": 2, "convs_per_stage": 1},
        "activation": "silu",
        "attack": {
            "train": {
                "name": "pgd",
                "eps": 0.1,
                "steps": 1,
                "rel_step_size": 1.0,
                "random_start_fraction": 0.8,
            },
            "eval": {"samples": 100, "seed": 0, "pgd5": {"name": "pgd", "steps": 5}},
        },
        "optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 0.0, "ema": 0.9},
        "schedule": {"lr": {"name": "cosine"}},
        "train": {"epochs": 3, "validate_every_epochs": 0, "log_every_steps": 5},
        "checkpoint": {"every_steps": 4, "keep_last": 50},
        "logging": {"tensorboard": True},
    }
    for section, values in sections.items():
        recipe[section] = {**recipe.get(section, {}), **values}
    return recipe


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model.safetensors"))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    sat_toolkit.run(tiny_recipe(run_dir), show_progress=False)
    return run_dir


def test_a_run_writes_every_promised_file(finished_run: Path) -> None:
    assert (finished_run / "recipe.toml").is_file()
    assert (finished_run / "model.safetensors").is_file()
    assert list((finished_run / "tensorboard").rglob("events.out.tfevents.*"))
    assert [p.name for p in list_checkpoints(finished_run)][-1] == "step-00000060"  # 3 epochs x 20 steps
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert metrics["steps"] == 60 and metrics["epochs"] == 3
    evaluation = metrics["evaluation"]
    assert evaluation["samples"] == 100
    assert set(evaluation["attacks"]) == {"pgd5"}
    # The budget the attacks inherited from the training attack (it was recorded as null).
    assert evaluation["eps"] == load_recipe(tiny_recipe(finished_run)).attack.eps is not None
    assert evaluation["norm"] == "linf"  # the threat model beside its eps
    # The saved recipe is the resolved one and loads back to the same recipe.
    assert load_recipe(finished_run / "recipe.toml") == load_recipe(tiny_recipe(finished_run))


def test_the_trained_model_is_well_above_chance_and_load_model_agrees(finished_run: Path) -> None:
    metrics = json.loads((finished_run / "metrics.json").read_text())["evaluation"]
    assert metrics["clean_accuracy"] > 0.4  # chance is 0.1
    assert metrics["attacks"]["pgd5"]["robust_accuracy"] > 0.15
    assert metrics["robust_accuracy"] <= metrics["clean_accuracy"]

    model = sat_toolkit.load_model(finished_run)
    assert not model.training
    from sat_toolkit.data import create_dataset
    from sat_toolkit.engine.evaluation import fixed_test_subset

    x, y = fixed_test_subset(create_dataset({"name": "digits"}).load("test"), samples=100, seed=0)
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    # load_model rebuilt the architecture from the saved config: same images, same answer.
    assert accuracy == pytest.approx(metrics["clean_accuracy"], abs=1e-6)
    assert model.sat_config["activation"] == {"name": "silu"}


def test_resuming_after_a_stop_mid_epoch_gives_identical_weights(finished_run: Path, tmp_path: Path) -> None:
    """Stop after 13 steps (mid-epoch 1; last checkpoint at step 12), resume, compare."""
    run_dir = tmp_path / "resumed"
    recipe = load_recipe(tiny_recipe(run_dir))
    partial = train(recipe, show_progress=False, stop_after_steps=13)
    assert partial.metrics == {"stopped_at_step": 13}
    assert not (run_dir / "model.safetensors").exists()
    train(recipe, resume=True, show_progress=False)
    reference, resumed = _weights(finished_run), _weights(run_dir)
    assert reference.keys() == resumed.keys()
    for key in reference:
        assert torch.equal(reference[key], resumed[key]), key


def test_resuming_after_a_real_kill_gives_identical_weights(finished_run: Path, tmp_path: Path) -> None:
    """SIGKILL a real ``sat-toolkit run`` process once it has checkpointed, then resume."""
    run_dir = tmp_path / "killed"
    recipe_file = tmp_path / "tiny.toml"
    recipe_file.write_text(load_recipe(tiny_recipe(run_dir)).to_toml())
    # Same intra-op thread count as this process: it decides the float reduction order.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    process = subprocess.Popen(
        [sys.executable, "-m", "sat_toolkit", "run", str(recipe_file), "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if any(p.name >= "step-00000008" for p in list_checkpoints(run_dir)):
            break
        time.sleep(0.05)
    if process.poll() is not None:
        pytest.fail(f"the run ended before it could be killed: {process.stderr.read().decode()[-2000:]}")
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (run_dir / "model.safetensors").exists()
    result = CliRunner().invoke(cli, ["run", str(recipe_file), "--resume", "--no-progress"])
    assert result.exit_code == 0, result.output
    reference, resumed = _weights(finished_run), _weights(run_dir)
    for key in reference:
        assert torch.equal(reference[key], resumed[key]), key


def test_a_different_run_in_the_same_directory_is_refused(finished_run: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in finished_run.rglob("*") if p.is_file()}
    other = tiny_recipe(finished_run, optimizer={"lr": 0.02})
    with pytest.raises(SatError, match="holds a different run .*optimizer.lr"):
        sat_toolkit.run(other, show_progress=False)
    with pytest.raises(SatError, match="already holds a finished run of this recipe .*sat-toolkit eval"):
        sat_toolkit.run(tiny_recipe(finished_run), show_progress=False)
    after = {p: p.stat().st_mtime_ns for p in finished_run.rglob("*") if p.is_file()}
    assert before == after  # nothing written, nothing lost


def test_cli_reports_a_different_run_as_one_line_with_exit_2(finished_run: Path, tmp_path: Path) -> None:
    recipe_file = tmp_path / "other.toml"
    recipe_file.write_text(load_recipe(tiny_recipe(finished_run, optimizer={"lr": 0.02})).to_toml())
    result = CliRunner().invoke(cli, ["run", str(recipe_file)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    run_dir = tmp_path / "diverges"
    recipe = tiny_recipe(
        run_dir, optimizer={"name": "sgd", "lr": 1e20, "ema": "off"}, checkpoint={"every_steps": 1}
    )
    with pytest.raises(
        NonFiniteLossError, match="training stopped at step \\d+: the loss is (nan|inf)"
    ) as info:
        sat_toolkit.run(recipe, show_progress=False)
    checkpoints = list_checkpoints(run_dir)
    assert checkpoints, "expected the steps before the blow-up to be checkpointed"
    assert str(checkpoints[-1]) in str(info.value)
    # The kept checkpoint holds finite weights.
    weights = load_file(str(checkpoints[-1] / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())
    assert not (run_dir / "model.safetensors").exists()


def test_python_api_and_cli_accept_overrides(tmp_path: Path) -> None:
    run_dir = tmp_path / "override"
    summary = sat_toolkit.run(
        tiny_recipe(run_dir, train={"epochs": 1}), overrides=["activation=gelu", "attack.eval.samples=20"],
        show_progress=False,
    )  # fmt: skip
    assert summary.metrics["steps"] == 20
    assert summary.metrics["evaluation"]["samples"] == 20
    assert sat_toolkit.load_model(run_dir).sat_config["activation"]["name"] == "gelu"
    assert math.isfinite(summary.metrics["final_train_loss"])


def test_resuming_a_finished_run_changes_nothing(finished_run: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in finished_run.rglob("*") if p.is_file()}
    summary = sat_toolkit.run(tiny_recipe(finished_run), resume=True, show_progress=False)
    assert summary.metrics["steps"] == 60
    assert before == {p: p.stat().st_mtime_ns for p in finished_run.rglob("*") if p.is_file()}


def test_resuming_a_finished_run_says_only_that_it_is_finished(finished_run: Path, tmp_path: Path) -> None:
    """It also said "resumed from ... (step 20/20)" first, as if training went on (a stranger's walk)."""
    run_dir = tmp_path / "tiny"
    shutil.copytree(finished_run, run_dir)
    recipe_file = tmp_path / "tiny.toml"
    recipe_file.write_text(load_recipe(tiny_recipe(run_dir)).to_toml())
    result = CliRunner().invoke(cli, ["run", str(recipe_file), "--resume", "--no-progress"])
    assert result.exit_code == 0, result.output
    steps = json.loads((run_dir / "metrics.json").read_text())["steps"]
    assert result.stdout.strip().splitlines() == [
        f"{run_dir} is already finished ({steps} steps); nothing to do",
        f"run directory: {run_dir}",
    ]


def test_a_finished_run_with_a_damaged_last_checkpoint_is_still_finished(
    finished_run: Path, tmp_path: Path
) -> None:
    """Its results are in place, so --resume has nothing to do: it retrained from the
    checkpoint before the damaged one (to the same weights) and set the damaged one aside."""
    run_dir = tmp_path / "tiny"
    shutil.copytree(finished_run, run_dir)
    recipe_file = tmp_path / "tiny.toml"
    recipe_file.write_text(load_recipe(tiny_recipe(run_dir)).to_toml())
    last = list_checkpoints(run_dir)[-1] / "model.safetensors"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a disk that filled up
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    result = CliRunner().invoke(cli, ["run", str(recipe_file), "--resume", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"{run_dir} is already finished (60 steps); nothing to do"
    assert "damaged" not in result.output and "resumed from" not in result.output
    assert before == {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("[" * 100 + "]" * 100, "unreadable: nested too deeply to parse"),  # past what parsing reads
        ('{"clean": "x"}', "no evaluation in it"),  # JSON, but not a finished run's: looped in a study
        (
            '{"evaluation": {"clean_accuracy": 0.9, "robust_accuracy": "high"}}',
            "evaluation.robust_accuracy is 'high', not an accuracy in [0, 1]",
        ),  # once a TypeError in a study's report
        ('{"evaluation": {"clean_accuracy": NaN}}', "evaluation.clean_accuracy is nan, not an accuracy"),
    ],
)
def test_a_finished_run_with_damaged_metrics_says_how_to_redo_them(
    finished_run: Path, tmp_path: Path, damage: str, problem: str
) -> None:
    """--resume of a finished run reads its metrics.json: damaged, that is one line naming
    the file and the fix, and the fix works."""
    run_dir = tmp_path / "tiny"
    shutil.copytree(finished_run, run_dir)
    recipe_file = tmp_path / "tiny.toml"
    recipe_file.write_text(load_recipe(tiny_recipe(run_dir)).to_toml())
    (run_dir / "metrics.json").write_text(damage)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    result = CliRunner().invoke(cli, ["run", str(recipe_file), "--resume", "--no-progress"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    (line,) = result.stderr.strip().splitlines()
    assert f"{run_dir / 'metrics.json'} is damaged ({problem}" in line
    assert "delete it and run again with --resume" in line
    assert "nothing to do" not in result.output  # not a finished run as far as the user can tell
    assert before == {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}

    (run_dir / "metrics.json").unlink()  # as the message says
    result = CliRunner().invoke(cli, ["run", str(recipe_file), "--resume", "--no-progress"])
    assert result.exit_code == 0, result.output
    redone = json.loads((run_dir / "metrics.json").read_text())
    original = json.loads((finished_run / "metrics.json").read_text())
    for key in ("clean_accuracy", "robust_accuracy"):
        assert redone["evaluation"][key] == original["evaluation"][key], key


def test_gradient_accumulation_and_bf16_autocast(tmp_path: Path) -> None:
    summary = sat_toolkit.run(
        tiny_recipe(
            tmp_path / "accumulate",
            optimizer={"mixed_precision": "bf16", "grad_accumulation": 2},
            train={"epochs": 1},
        ),
        show_progress=False,
    )
    # 20 micro-batches of 32 -> 10 optimiser steps over a global batch of 64.
    assert summary.metrics["steps"] == 10
    assert summary.metrics["global_batch_size"] == 64
    assert math.isfinite(summary.metrics["final_train_loss"])


def test_the_shipped_quickstart_end_to_end(tmp_path: Path) -> None:
    """``sat-toolkit run recipes/quickstart.toml`` then ``eval --suite aa-core``, as the README has it."""
    run_dir = tmp_path / "quickstart"
    result = CliRunner().invoke(
        cli,
        [
            "run",
            str(REPO / "recipes" / "quickstart.toml"),
            "--set",
            f"run.output_dir={run_dir}",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    for name in ("recipe.toml", "model.safetensors", "metrics.json"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert list_checkpoints(run_dir)
    evaluation = json.loads((run_dir / "metrics.json").read_text())["evaluation"]
    assert evaluation["samples"] == 359  # the whole digits test split
    assert set(evaluation["attacks"]) == {"pgd20", "apgd_ce"}
    # Chance is 0.1 on ten digits: clearly above it, clean and under the strongest attack.
    assert evaluation["clean_accuracy"] > 0.8
    assert evaluation["robust_accuracy"] > 0.5
    assert evaluation["robust_accuracy"] <= min(a["robust_accuracy"] for a in evaluation["attacks"].values())

    # The README's next step: AutoAttack's core with every check, on 120 of the images (the
    # checks rerun the attacks stronger and add Square: on all 359 this step alone took
    # minutes of the suite, and the evaluation above already covered every image).
    report_file = tmp_path / "eval.json"
    result = CliRunner().invoke(
        cli, ["eval", str(run_dir), "--suite", "aa-core", "--samples", "120", "--output", str(report_file)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(report_file.read_text())
    assert report["n_examples"] == 120 and len(report["checks"]) == 6
    failed = [(c["name"], c["detail"]) for c in report["checks"] if not c["passed"]]
    assert not failed, failed  # the toolkit's own model passes its own masking checks
    assert "may be overstated" not in result.output


def test_channels_last_trains_the_same_weights_and_resumes(tmp_path: Path) -> None:
    """A memory format is a layout, not a model: same weights as contiguous training, and resumable."""
    one_epoch = {"epochs": 1}
    plain = tmp_path / "plain"
    sat_toolkit.run(tiny_recipe(plain, train=one_epoch), show_progress=False)
    layout = {**one_epoch, "channels_last": True}
    channels_last = tmp_path / "channels_last"
    sat_toolkit.run(tiny_recipe(channels_last, train=layout), show_progress=False)
    for key, value in _weights(plain).items():
        torch.testing.assert_close(_weights(channels_last)[key], value, rtol=1e-3, atol=1e-4, msg=key)

    resumed = tmp_path / "resumed"
    recipe = load_recipe(tiny_recipe(resumed, train=layout))
    train(recipe, show_progress=False, stop_after_steps=9)
    train(recipe, resume=True, show_progress=False)
    for key, value in _weights(channels_last).items():
        assert torch.equal(_weights(resumed)[key], value), key


def test_compile_trains_the_same_weights_and_saves_plain_ones(tmp_path: Path) -> None:
    """train.compile changes how the step runs, not what it computes or what the run saves."""
    plain = tmp_path / "plain"
    sat_toolkit.run(tiny_recipe(plain, train={"epochs": 1}), show_progress=False)
    from torch._dynamo.utils import counters

    counters.clear()
    compiled = tmp_path / "compiled"
    sat_toolkit.run(tiny_recipe(compiled, train={"epochs": 1, "compile": True}), show_progress=False)
    assert counters["stats"]["unique_graphs"] > 0  # the step really ran compiled
    weights = _weights(compiled)
    assert not any(key.startswith("_orig_mod") for key in weights)  # the uncompiled model's names
    for key, value in _weights(plain).items():
        torch.testing.assert_close(weights[key], value, rtol=1e-3, atol=1e-4, msg=key)
