"""Two CPU processes (gloo) under ``accelerate launch``: in sync, side-effect free, resumable."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_engine import tiny_recipe

import sat_toolkit
from sat_toolkit.data import create_dataset
from sat_toolkit.engine.checkpoint import list_checkpoints
from sat_toolkit.engine.evaluation import fixed_test_subset
from sat_toolkit.engine.trainer import train
from sat_toolkit.errors import SatError
from sat_toolkit.export import load_model
from sat_toolkit.models import rebuild_model
from sat_toolkit.recipe import load_recipe

PROBE = Path(__file__).with_name("distributed_probe.py")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(
    recipe_file: Path, out_dir: Path, stop: int = 0, expect_ok: bool = True, resume: bool = False
) -> str:
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_ip",
        "127.0.0.1",
        "--main_process_port",
        str(_free_port()),
        str(PROBE),
        str(recipe_file),
        str(out_dir),
        str(stop),
        *(["resume"] if resume else []),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert (result.returncode == 0) == expect_ok, result.stderr[-3000:]
    return result.stderr


def _recipe_file(tmp_path: Path, run_dir: Path, **sections: dict) -> Path:
    path = tmp_path / f"{run_dir.name}.toml"
    path.write_text(load_recipe(tiny_recipe(run_dir, **sections)).to_toml())
    return path


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("ddp")
    run_dir = tmp / "run"
    recipe = _recipe_file(tmp, run_dir, **VALIDATING_RUN)
    _launch(recipe, tmp / "probe")
    return run_dir, tmp / "probe"


# Validation after epoch 1 (of 2) and the final evaluation run under two processes too;
# BatchNorm in train mode for the attack: the hardest case for "no side effects".
VALIDATING_RUN: dict[str, dict] = {
    "train": {"epochs": 2, "validate_every_epochs": 1, "validate_samples": 101},
    "attack": {"train": {
        "name": "pgd", "eps": 0.1, "steps": 1, "rel_step_size": 1.0, "random_start_fraction": 0.8,
        "bn_mode": "train",
    }},
}  # fmt: skip


def test_two_process_run_killed_after_a_validation_resumes_in_two_to_the_same_end(
    two_process_run: tuple[Path, Path], tmp_path: Path
) -> None:
    """Stopped at step 12 (after epoch 1's validation), resumed by a second 2-process launch."""
    uninterrupted, _ = two_process_run
    run_dir = tmp_path / "resumed"
    recipe = _recipe_file(tmp_path, run_dir, **VALIDATING_RUN)
    _launch(recipe, tmp_path / "first", stop=12)
    assert not (run_dir / "metrics.json").exists()
    _launch(recipe, tmp_path / "second", resume=True)
    resumed = json.loads((run_dir / "metrics.json").read_text())
    expected = json.loads((uninterrupted / "metrics.json").read_text())
    assert resumed["rank_weight_fingerprints"] == expected["rank_weight_fingerprints"]
    assert resumed["validation"] == expected["validation"]
    for label, outcome in expected["evaluation"]["attacks"].items():
        got = resumed["evaluation"]["attacks"][label]
        assert (got["robust_accuracy"], got["settings"]) == (outcome["robust_accuracy"], outcome["settings"])


def test_both_ranks_end_with_identical_weights(two_process_run: tuple[Path, Path]) -> None:
    run_dir, _ = two_process_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert metrics["global_batch_size"] == 64
    rows = metrics["rank_weight_fingerprints"]
    assert len(rows) == 2 and rows[0] == rows[1]
    # 640 images sharded over 2 ranks, batch 32 each: 10 optimiser steps per epoch, and the
    # lr schedule sized for those 20 steps ends where it should (it was sized for 40).
    assert metrics["steps"] == 20
    recipe = load_recipe(run_dir / "recipe.toml")
    assert metrics["final_lr"] == pytest.approx(
        recipe.schedule.lr.build().value(20, 20, recipe.optimizer.lr), abs=1e-12
    )


def test_two_processes_train_exactly_train_steps(tmp_path: Path) -> None:
    """train.steps = 15 under 2 processes: 15 optimiser steps (it trained 10 = one epoch of
    20 unsharded batches per epoch, halved), and the lr schedule runs to its end."""
    run_dir = tmp_path / "steps"
    recipe_file = _recipe_file(
        tmp_path, run_dir, train={"steps": 15, "validate_every_epochs": 0}, attack={"eval": {"samples": 20}}
    )
    _launch(recipe_file, tmp_path / "probe")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (metrics["world_size"], metrics["steps"], metrics["epochs"]) == (2, 15, 2)
    recipe = load_recipe(recipe_file)
    assert metrics["final_lr"] == pytest.approx(
        recipe.schedule.lr.build().value(15, 15, recipe.optimizer.lr), abs=1e-12
    )


def test_two_process_validation_counts_every_image_once_as_one_process_would(
    two_process_run: tuple[Path, Path], one_thread: None
) -> None:
    """Each rank validates its share (51 + 50 of 101 images); the gathered result is the whole subset."""
    run_dir, _ = two_process_run
    recipe = load_recipe(run_dir / "recipe.toml")
    validation = json.loads((run_dir / "metrics.json").read_text())["validation"]
    assert [(v["epoch"], v["step"], v["samples"]) for v in validation] == [(1, 10, 101)]
    # The same PGD-10 (no random start: deterministic) on the epoch-1 checkpoint, in one process.
    model = rebuild_model(load_model(run_dir).sat_config)
    model.load_state_dict(load_file(str(run_dir / "checkpoints" / "step-00000010" / "model.safetensors")))
    source = create_dataset(recipe.data.plugin.to_dict())
    x, y = fixed_test_subset(source.load("test"), 101, recipe.attack.eval.seed)
    pgd10 = {"name": "pgd", "steps": 10, "rel_step_size": 0.25}
    reference = sat_toolkit.evaluate(model, x, y, eps=0.1, suite=None, attacks={"pgd10": pgd10})
    assert validation[0]["clean_accuracy"] == pytest.approx(reference.clean_accuracy, abs=1e-6)
    # Shares of 51 and 50 instead of one batch of 101 may round one borderline image differently.
    assert abs(validation[0]["robust_accuracy"] - reference.robust_accuracy) <= 1 / 101 + 1e-6


def test_two_process_final_evaluation_equals_sat_toolkit_eval_of_the_export(
    two_process_run: tuple[Path, Path], tmp_path: Path
) -> None:
    run_dir, _ = two_process_run
    evaluation = json.loads((run_dir / "metrics.json").read_text())["evaluation"]
    report_file = tmp_path / "eval.json"
    command = [
        sys.executable, "-m", "sat_toolkit", "eval", str(run_dir),
        "--suite", "none", "--attack", "pgd:steps=5", "--samples", "100", "--seed", "0",
        "--batch-size", "128", "--no-checks", "--device", "cpu", "--output", str(report_file),
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(report_file.read_text())
    assert report["n_examples"] == evaluation["samples"] == 100
    assert report["clean_acc"] == evaluation["clean_accuracy"]
    assert (
        report["attacks"]["pgd_steps5"]["robust_accuracy"] == evaluation["attacks"]["pgd5"]["robust_accuracy"]
    )
    assert report["robust_acc"] == evaluation["robust_accuracy"]


def test_attacks_left_model_state_untouched_on_every_rank(two_process_run: tuple[Path, Path]) -> None:
    _, probe = two_process_run
    for rank in (0, 1):
        counts = json.loads((probe / f"rank{rank}.json").read_text())
        assert counts["world_size"] == 2
        assert counts["attack_calls"] >= 20  # training attacks (+ validation/eval on rank 0)
        assert counts["state_changed"] == 0


def test_two_process_checkpoint_resumes_in_one_process(tmp_path: Path) -> None:
    run_dir = tmp_path / "handover"
    recipe_file = _recipe_file(tmp_path, run_dir, train={"epochs": 2})
    _launch(recipe_file, tmp_path / "probe", stop=5)
    saved = list_checkpoints(run_dir)
    assert [p.name for p in saved] == ["step-00000004"]
    assert (saved[0] / "rng_state_1.json").exists()  # written by the second rank
    assert not (run_dir / "model.safetensors").exists()
    weights_at_4 = load_file(str(saved[0] / "model.safetensors"))

    summary = train(load_recipe(recipe_file), resume=True, show_progress=False)
    assert summary.metrics["world_size"] == 1
    assert summary.metrics["steps"] == 40  # one process: 20 steps per epoch
    final = load_file(str(run_dir / "model.safetensors"))
    assert final.keys() == weights_at_4.keys()
    assert any(not torch.equal(final[k], weights_at_4[k]) for k in final)  # training went on


def test_a_two_process_checkpoint_of_a_train_steps_run_resumes_in_one_process_to_train_steps(
    tmp_path: Path,
) -> None:
    """A stranger's walk: 2 processes killed at step 44 of 300, resumed in 1, stopped at 264.

    The checkpoint counts two-process epochs (10 steps here, 20 for one process); the loop
    compared them with the one-process run's epochs and ended early, lr schedule unfinished.
    """
    run_dir = tmp_path / "steps"
    recipe_file = _recipe_file(
        tmp_path, run_dir, train={"steps": 30, "validate_every_epochs": 0}, attack={"eval": {"samples": 20}}
    )
    _launch(recipe_file, tmp_path / "probe", stop=25)
    newest = list_checkpoints(run_dir)[-1]
    assert newest.name == "step-00000024"
    assert json.loads((newest / "train_state.json").read_text())["epoch"] == 2  # of 10 steps each

    summary = train(load_recipe(recipe_file), resume=True, show_progress=False)
    assert summary.metrics["world_size"] == 1
    assert summary.metrics["steps"] == 30
    recipe = load_recipe(recipe_file)
    assert summary.metrics["final_lr"] == pytest.approx(  # the schedule ran to its end
        recipe.schedule.lr.build().value(30, 30, recipe.optimizer.lr), abs=1e-12
    )


def test_epochs_two_processes_finished_are_not_resumed_in_one(tmp_path: Path) -> None:
    """A stranger's walk: a 60-epoch run Ctrl-C'd after 5 two-process epochs and resumed in one
    process ended at step 575 of the 600 its lr schedule was sized for, lr above its end value.

    Epochs of 10 steps (two processes) would continue as epochs of 20: refused, naming the
    fix; resumed with two processes again, the run ends where an uninterrupted one does.
    """
    run_dir = tmp_path / "epochs"
    recipe_file = _recipe_file(
        tmp_path, run_dir, train={"epochs": 2, "validate_every_epochs": 0}, attack={"eval": {"samples": 20}}
    )
    _launch(recipe_file, tmp_path / "probe", stop=13)
    newest = list_checkpoints(run_dir)[-1]
    assert json.loads((newest / "train_state.json").read_text())["epoch"] == 1  # of 10 steps each
    with pytest.raises(SatError) as info:
        train(load_recipe(recipe_file), resume=True, show_progress=False)
    assert info.value.message == (
        f"--resume: {newest.name} belongs to a run of 20 steps (2 epochs), here the same epochs take 40: "
        "another number of processes (1 now) shares each epoch differently, and the lr schedule would not "
        "end where the recipe says; resume with as many processes as wrote it "
        "(accelerate launch --num_processes N ... --resume)"
    )
    assert not (run_dir / "model.safetensors").exists()
    _launch(recipe_file, tmp_path / "probe", resume=True)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 20


def test_sync_batchnorm_on_cpu_is_refused_with_the_fix(tmp_path: Path) -> None:
    recipe_file = _recipe_file(tmp_path, tmp_path / "sync", train={"epochs": 1, "sync_batchnorm": True})
    stderr = _launch(recipe_file, tmp_path / "probe", expect_ok=False)
    assert "train.sync_batchnorm: PyTorch's SyncBatchNorm runs on GPUs only" in stderr
    assert "--set train.sync_batchnorm=false" in stderr


def test_the_readmes_distributed_command_runs_to_completion(tmp_path: Path) -> None:
    """``accelerate launch --multi_gpu --num_processes 2 -m sat_toolkit run RECIPE``, as written."""
    run_dir = tmp_path / "cli"
    recipe = _recipe_file(tmp_path, run_dir, train={"epochs": 2, "validate_every_epochs": 1})
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--main_process_port", str(_free_port()), "-m", "sat_toolkit", "run", str(recipe), "--no-progress",
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("run directory:") == 1  # the main process speaks for the run
    assert result.stdout.count("epoch 1: clean") == 1
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and len(metrics["validation"]) == 1
    assert metrics["evaluation"]["samples"] == 100


def test_a_recipe_mistake_under_a_two_process_launch_is_said_once(tmp_path: Path) -> None:
    """Every process meets the same misspelt key; the main one says it, the other exits with
    its code (it was printed once per rank)."""
    recipe = _recipe_file(tmp_path, tmp_path / "never", train={"epochs": 1})
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--main_process_port", str(_free_port()), "-m", "sat_toolkit", "run", str(recipe), "--no-progress",
        "--set", "optimizer.lrr=0.1",
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [f"Error: {recipe}: optimizer.lrr: unknown key; did you mean 'lr'? (from --set)"], (
        result.stderr
    )
    # torchrun's launcher then reports the failed children with a traceback of its own; ours comes first.
    assert result.stderr.index("Error: ") < result.stderr.find(
        "ChildFailedError"
    ) or "ChildFailedError" not in (result.stderr)
    assert not (tmp_path / "never").exists()


def test_trades_two_forwards_through_ddp_before_one_backward_keep_the_ranks_in_sync(tmp_path: Path) -> None:
    """TRADES runs the prepared (DDP) model on x and on x_adv, then backpropagates once: under
    gloo both ranks must still average the same gradients and end with the same weights.
    """
    run_dir = tmp_path / "trades"
    recipe_file = _recipe_file(
        tmp_path, run_dir, objective={"name": "trades"}, train={"epochs": 1}, attack={"eval": {"samples": 20}}
    )
    _launch(recipe_file, tmp_path / "probe")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 10
    rows = metrics["rank_weight_fingerprints"]
    assert len(rows) == 2 and rows[0] == rows[1]
    assert 'name = "trades"' in (run_dir / "recipe.toml").read_text()


def test_ctrl_c_of_a_two_process_run_says_how_to_resume_once(tmp_path: Path) -> None:
    """Ctrl-C reaches every process of the launch (the terminal's process group); the resume
    command is printed by the main process alone, not once per rank."""
    run_dir = tmp_path / "run"
    recipe = _recipe_file(tmp_path, run_dir, train={"epochs": 50})
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--main_process_port", str(_free_port()), "-m", "sat_toolkit", "run", str(recipe), "--no-progress",
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        start_new_session=True,  # its own process group, as a terminal's foreground job has
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 300
    while not list(run_dir.glob("checkpoints/step-*")) and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr[-3000:]
    assert stderr.count("interrupted; continue the run with:") == 1, stderr[-3000:]
    # As many processes again: a plain `sat-toolkit run` is one process, whose epochs take twice the steps.
    resume = (
        f"accelerate launch --multi_gpu --num_processes 2 -m sat_toolkit run {recipe} --no-progress --resume"
    )
    assert f"interrupted; continue the run with: {resume}" in stderr
