"""What a checkpoint holds: no pickle of ours, a checked train state, an exact EMA, the history.

accelerate loads objects registered with ``register_for_checkpointing`` through
``torch.load(weights_only=False)``, so a crafted ``custom_checkpoint_N.pkl`` would run code
on ``--resume``. Our train state is JSON and our EMA safetensors instead; these tests pin
that down, and that the validation history survives a stop and a resume.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from accelerate.utils import load as accelerate_load
from click.testing import CliRunner
from safetensors.torch import load_file
from test_engine import tiny_recipe
from torch import nn

from sat_toolkit.cli import cli
from sat_toolkit.engine.checkpoint import (
    MANIFEST_FILE,
    TRAIN_STATE_FILE,
    TrainState,
    checkpoint_problem,
    list_checkpoints,
    read_train_state,
)
from sat_toolkit.engine.ema import EMA_FILE, WeightEMA
from sat_toolkit.engine.rng import rng_state_problem
from sat_toolkit.engine.trainer import train
from sat_toolkit.errors import SatError
from sat_toolkit.parsing import tomllib
from sat_toolkit.recipe import load_recipe

# accelerate's own files (model weights, optimiser, lr scheduler) and ours (RNG state as JSON);
# nothing else.
CHECKPOINT_FILES = {
    "model.safetensors", "optimizer.bin", "scheduler.bin", "rng_state_0.json", EMA_FILE, TRAIN_STATE_FILE,
    MANIFEST_FILE, "recipe.toml",
}  # fmt: skip


def validating_recipe(run_dir: Path) -> dict:
    """tiny_recipe (EMA 0.9, a checkpoint every 4 steps) validating after epochs 1 and 2 of 3."""
    return tiny_recipe(run_dir, train={"validate_every_epochs": 1, "validate_samples": 100})


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    train(load_recipe(validating_recipe(run_dir)), show_progress=False)
    return run_dir


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def test_no_checkpoint_file_is_a_pickle_of_ours(reference: Path) -> None:
    checkpoints = list_checkpoints(reference)
    assert len(checkpoints) == 15  # every 4 steps of 60 (keep_last=50)
    for checkpoint in checkpoints:
        names = {p.name for p in checkpoint.iterdir()}
        assert names == CHECKPOINT_FILES, checkpoint
        assert not list(checkpoint.glob("custom_checkpoint_*"))
        # accelerate's torch files load as accelerate loads them, weights_only=True, so they
        # cannot run code; the RNG state accelerate would pickle is JSON...
        accelerate_load(checkpoint / "optimizer.bin")
        scheduler = accelerate_load(checkpoint / "scheduler.bin")
        # ...the lr scheduler's is its position (no pickled schedule function)...
        assert scheduler["last_epoch"] == int(checkpoint.name.removeprefix("step-"))
        assert scheduler["lr_lambdas"] == [None]
        assert rng_state_problem(checkpoint / "rng_state_0.json") is None
        # ...and ours are plain data.
        assert (
            load_file(str(checkpoint / EMA_FILE)).keys()
            == load_file(str(checkpoint / "model.safetensors")).keys()
        )
        saved = tomllib.loads((checkpoint / "recipe.toml").read_text())  # the recipe it was trained with
        assert saved == tomllib.loads((reference / "recipe.toml").read_text())
        state = read_train_state(checkpoint)
        assert state.global_step == int(checkpoint.name.removeprefix("step-"))
        # The manifest lists every other file with its size and hash, and the whole checks out.
        manifest = json.loads((checkpoint / MANIFEST_FILE).read_text())
        assert set(manifest["files"]) == CHECKPOINT_FILES - {MANIFEST_FILE}
        assert checkpoint_problem(checkpoint, expect_ema=True) is None


def test_validation_history_survives_two_stops_and_resumes(reference: Path, tmp_path: Path) -> None:
    """Stop just after each epoch-end checkpoint (steps 22 and 42), resume, finish.

    The checkpoint each resume starts from is the one written at the end of epoch 1 (2):
    it must already hold that epoch's validation.
    """
    run_dir = tmp_path / "stopped"
    recipe = load_recipe(validating_recipe(run_dir))
    assert train(recipe, show_progress=False, stop_after_steps=22).metrics == {"stopped_at_step": 22}
    assert train(recipe, resume=True, show_progress=False, stop_after_steps=22).metrics == {
        "stopped_at_step": 42
    }
    train(recipe, resume=True, show_progress=False)

    expected = _metrics(reference)["validation"]
    assert [entry["epoch"] for entry in expected] == [1, 2]
    assert _metrics(run_dir)["validation"] == expected
    # The EMA went through two resumes bit for bit: every checkpoint's and the exported model.
    for ours, theirs in zip(list_checkpoints(run_dir), list_checkpoints(reference), strict=True):
        assert ours.name == theirs.name
        mine, reference_ema = load_file(str(ours / EMA_FILE)), load_file(str(theirs / EMA_FILE))
        assert all(torch.equal(mine[k], reference_ema[k]) for k in reference_ema), ours.name
    final, reference_final = (
        load_file(str(run_dir / "model.safetensors")),
        load_file(str(reference / "model.safetensors")),
    )
    assert all(torch.equal(final[k], reference_final[k]) for k in reference_final)


def test_the_ema_file_loads_back_exactly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))
    model[1].running_mean.normal_()
    ema = WeightEMA(model, decay=0.5)
    ema.save(tmp_path)
    fresh = WeightEMA(nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)), decay=0.5)
    fresh.load(tmp_path)
    saved, loaded = ema.module.state_dict(), fresh.module.state_dict()
    assert saved.keys() == loaded.keys()
    for key in saved:
        assert saved[key].dtype == loaded[key].dtype and torch.equal(saved[key], loaded[key]), key


def test_an_ema_file_of_another_model_is_one_line(tmp_path: Path) -> None:
    WeightEMA(nn.Linear(5, 4), decay=0.5).save(tmp_path)
    with pytest.raises(SatError, match=f"{EMA_FILE}: not the EMA weights of this recipe's model") as info:
        WeightEMA(nn.Linear(5, 3), decay=0.5).load(tmp_path)
    assert "\n" not in str(info.value)
    (tmp_path / EMA_FILE).unlink()
    with pytest.raises(SatError, match=f"{EMA_FILE}: missing"):
        WeightEMA(nn.Linear(5, 3), decay=0.5).load(tmp_path)


def _good_state() -> dict:
    return json.loads(
        TrainState(epoch=1, global_step=20, history=[{"epoch": 1, "step": 20, "x": 0.5}]).to_json()
    )


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda s: "{not json", "not JSON"),
        (lambda s: "[" * 100_000 + "]" * 100_000, "not JSON \\(nested too deeply to parse"),
        (lambda s: json.dumps([s]), "expected a JSON object"),
        (lambda s: {**s, "format": 1}, "format is 1"),
        (lambda s: {**s, "loss_reference": [1.0, "2"]}, "loss_reference must be a list of finite numbers"),
        (lambda s: {**s, "divergence_warned_at": -3}, "divergence_warned_at must be a non-negative integer"),
        (lambda s: {k: v for k, v in s.items() if k != "batches_seen"}, "missing keys \\['batches_seen'\\]"),
        (lambda s: {**s, "extra": 1}, "unknown keys \\['extra'\\]"),
        (lambda s: {**s, "global_step": "20"}, "global_step must be a non-negative integer, found '20'"),
        (lambda s: {**s, "epoch": True}, "epoch must be a non-negative integer"),
        (lambda s: {**s, "step_in_epoch": -1}, "step_in_epoch must be a non-negative integer"),
        (lambda s: {**s, "global_step": 2.0}, "global_step must be a non-negative integer"),
        (lambda s: {**s, "last_loss": "nan"}, "last_loss must be a number"),
        (lambda s: {**s, "history": {}}, "history must be a list"),
        (lambda s: {**s, "history": [1]}, "history\\[0\\] must be an object"),
        (lambda s: {**s, "history": [{"step": 20}]}, "history\\[0\\] epoch must be an integer"),
        (
            lambda s: {**s, "history": [{"epoch": 1, "step": 2, "x": [1]}]},
            "history\\[0\\] x must be a number",
        ),
    ],
)
def test_a_malformed_train_state_is_one_line_naming_the_file(tmp_path: Path, change, problem: str) -> None:
    changed = change(_good_state())
    (tmp_path / TRAIN_STATE_FILE).write_text(changed if isinstance(changed, str) else json.dumps(changed))
    with pytest.raises(SatError, match=problem) as info:
        read_train_state(tmp_path)
    message = str(info.value)
    assert message.startswith(str(tmp_path / TRAIN_STATE_FILE)) and "\n" not in message
    assert "delete" in message and "new run.output_dir" in message


def test_the_train_state_round_trips_with_nan() -> None:
    state = TrainState(
        epoch=2, step_in_epoch=3, global_step=43, batches_seen=86, history=[{"epoch": 1, "step": 20}]
    )
    back = TrainState.from_json(state.to_json(), Path(TRAIN_STATE_FILE))
    assert back.history == state.history and back.global_step == 43 and math.isnan(back.last_loss)


def _copy_stopped_run(reference: Path, destination: Path, last_step: int) -> Path:
    """The reference run as a run stopped at ``last_step``: later checkpoints and outputs removed."""
    shutil.copytree(reference, destination)
    for checkpoint in list_checkpoints(destination):
        if int(checkpoint.name.removeprefix("step-")) > last_step:
            shutil.rmtree(checkpoint)
    (destination / "metrics.json").unlink()
    (destination / "model.safetensors").unlink()
    return list_checkpoints(destination)[-1]


def _resume_cli(run_dir: Path) -> tuple[int, str]:
    recipe_file = run_dir.parent / "recipe.toml"
    recipe_file.write_text(load_recipe(validating_recipe(run_dir)).to_toml())
    result = CliRunner().invoke(cli, ["run", str(recipe_file), "--resume", "--no-progress"])
    return result.exit_code, result.output


def test_resuming_when_every_checkpoint_is_damaged_is_refused_in_one_line(
    reference: Path, tmp_path: Path
) -> None:
    """No intact checkpoint: exit 2 naming the newest one's problem, nothing written or moved."""
    run_dir = tmp_path / "damaged"
    last = _copy_stopped_run(reference, run_dir, last_step=24)
    for checkpoint in list_checkpoints(run_dir):
        (checkpoint / TRAIN_STATE_FILE).write_text('{"format": 2, "epoch": "one"}')
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    code, output = _resume_cli(run_dir)
    assert code == 2 and "Traceback" not in output
    line = output.strip().splitlines()[-1]
    root = run_dir / "checkpoints"
    assert line.startswith(f"Error: --resume: no intact checkpoint in {root}: {last.name}: ")
    assert f"{last.name}: {TRAIN_STATE_FILE} has " in line and "the manifest says" in line  # shorter now
    assert "new run.output_dir" in line
    assert before == {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}


def test_old_style_pickled_checkpoints_are_not_loaded(reference: Path, tmp_path: Path) -> None:
    """What older versions wrote (a pickled train state, no manifest) is refused, never unpickled."""
    run_dir = tmp_path / "old"
    _copy_stopped_run(reference, run_dir, last_step=24)
    for checkpoint in list_checkpoints(run_dir):
        for name in (TRAIN_STATE_FILE, EMA_FILE, MANIFEST_FILE):
            (checkpoint / name).unlink()
        (checkpoint / "custom_checkpoint_0.pkl").write_bytes(b"\x80\x04K\x00.")  # what older versions wrote
    code, output = _resume_cli(run_dir)
    assert code == 2
    line = output.strip().splitlines()[-1]
    assert f"{MANIFEST_FILE} is missing" in line and "older sat-toolkit" in line
    assert "new run.output_dir" in line
