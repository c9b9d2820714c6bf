"""Checkpoints that cannot hurt you: no code runs from them, damage falls back, only finite state.

Part A of issue 12. A resume reads only data (safetensors, JSON, torch files through
``weights_only=True``); a damaged newest checkpoint is set aside for the newest intact one
with a one-line warning; a NaN or inf in weights, buffers, optimiser state or EMA is never
written; a loss that explodes while staying finite is warned about (or stops the run).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result
from safetensors.torch import load_file
from test_engine import tiny_recipe

from sat_toolkit.cli import cli
from sat_toolkit.engine.checkpoint import (
    MANIFEST_FILE,
    checkpoint_problem,
    list_checkpoints,
    write_manifest,
)
from sat_toolkit.engine.trainer import train
from sat_toolkit.errors import SatError
from sat_toolkit.recipe import load_recipe

# Files accelerate reads back when they are present, besides the ones our checkpoints hold.
EXTRA_NAMES = (
    "custom_checkpoint_0.pkl",  # registered objects: torch.load(weights_only=False) in accelerate
    "pytorch_model.bin",  # the model, when model.safetensors is absent
    "sampler.bin",
    "dl_state_dict.bin",
    "scaler.pt",
    "random_states_0.pkl",  # accelerate's RNG pickle, which rng_state_N.json replaces
    "random_states_1.pkl",
)


class _Payload:
    """Unpickling this runs ``exec``, which creates ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _recipe(run_dir: Path, **sections: dict) -> dict:
    """tiny_recipe in one epoch of 20 steps, a checkpoint every 4, a small final evaluation."""
    base = {"train": {"epochs": 1}, "attack": {}}
    recipe = tiny_recipe(run_dir, **{**base, **sections})
    recipe["attack"]["eval"]["samples"] = 20
    return recipe


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run killed after 9 steps: checkpoints step-4 and step-8."""
    run_dir = tmp_path_factory.mktemp("stopped") / "run"
    train(load_recipe(_recipe(run_dir)), show_progress=False, stop_after_steps=9)
    assert [p.name for p in list_checkpoints(run_dir)] == ["step-00000004", "step-00000008"]
    return run_dir


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result]:
    """The same run, never stopped, through the CLI."""
    run_dir = tmp_path_factory.mktemp("full") / "run"
    return run_dir, _cli_run(run_dir, resume=False)


def _cli_run(run_dir: Path, resume: bool = True, **sections: dict) -> Result:
    recipe_file = run_dir.parent / f"{run_dir.name}.toml"
    recipe_file.write_text(load_recipe(_recipe(run_dir, **sections)).to_toml())
    flags = ["--no-progress", *(["--resume"] if resume else [])]
    return CliRunner().invoke(cli, ["run", str(recipe_file), *flags])


def _copy(stopped: Path, tmp_path: Path) -> tuple[Path, Path]:
    run_dir = tmp_path / "run"
    shutil.copytree(stopped, run_dir)
    return run_dir, run_dir / "checkpoints" / "step-00000008"


def _warnings(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("warning:")]


def _assert_fell_back(result: Result, run_dir: Path, damaged: Path) -> str:
    """Exit 0, one one-line warning naming the damaged checkpoint, resumed from step-4, finished."""
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    warnings = _warnings(result)
    assert len(warnings) == 1, result.stderr
    assert f"checkpoint {damaged} is damaged (" in warnings[0]
    assert "resuming from step-00000004, the newest intact one" in warnings[0]
    assert f"resumed from {run_dir / 'checkpoints' / 'step-00000004'} (step 4/20)" in result.stdout
    # Set aside for inspection, out of the way of keep_last and of the next --resume.
    assert (run_dir / "checkpoints" / "damaged-step-00000008").is_dir()
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 20
    return warnings[0]


def test_the_payload_is_live_when_unpickled_unsafely(tmp_path: Path) -> None:
    """The control: the planted files below would run code if anything loaded them unsafely."""
    marker = tmp_path / "marker"
    torch.save(_Payload(marker), tmp_path / "evil.bin")
    torch.load(tmp_path / "evil.bin", weights_only=False)
    assert marker.exists()


def _real_names(stopped: Path) -> list[str]:
    names = sorted(p.name for p in (stopped / "checkpoints" / "step-00000008").iterdir())
    assert MANIFEST_FILE in names and "model.safetensors" in names and "rng_state_0.json" in names
    return names


def _planted_cases() -> list[tuple[str, bool]]:
    """Every file name a real checkpoint holds (listed from a real run below) plus those accelerate
    would read; each with the manifest left as written and with it rewritten to match the plant
    (an attacker can recompute hashes: the loads must still refuse).
    """
    real = ["ema.safetensors", MANIFEST_FILE, "model.safetensors", "optimizer.bin", "recipe.toml",
            "rng_state_0.json", "scheduler.bin", "train_state.json"]  # fmt: skip
    cases = [(name, False) for name in (*real, *EXTRA_NAMES)]
    cases += [(name, True) for name in (*real, *EXTRA_NAMES) if name != MANIFEST_FILE]
    return cases


def test_the_planted_names_are_every_name_a_checkpoint_holds(stopped: Path) -> None:
    planted = {name for name, _ in _planted_cases()}
    assert set(_real_names(stopped)) <= planted


@pytest.mark.parametrize(("name", "consistent_manifest"), _planted_cases())
def test_a_crafted_pickle_under_any_name_runs_no_code_and_falls_back(
    stopped: Path, tmp_path: Path, name: str, consistent_manifest: bool
) -> None:
    run_dir, newest = _copy(stopped, tmp_path)
    marker = tmp_path / "marker"
    torch.save(_Payload(marker), newest / name)
    if consistent_manifest:
        write_manifest(newest)
    result = _cli_run(run_dir)
    assert not marker.exists(), f"code ran from {name}"
    warning = _assert_fell_back(result, run_dir, newest)
    if consistent_manifest and name in EXTRA_NAMES:
        if name.endswith((".bin", ".pkl", ".pt")):
            assert f"{name} holds objects other than tensors and plain data (refused unread" in warning
            assert "weights_only=False" not in warning  # torch's text offers to switch the protection off
        else:
            assert f"{name} does not load as data" in warning or f"{name} is not a file" in warning
    assert not marker.exists()


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda c: _truncate(c / "model.safetensors"), "model.safetensors has "),
        (lambda c: (c / "optimizer.bin").unlink(), "optimizer.bin is missing"),
        (lambda c: (c / "rng_state_0.json").write_bytes(b""), "rng_state_0.json has 0 bytes"),
        (lambda c: _flip_a_byte(c / "optimizer.bin"), "optimizer.bin differs from the manifest"),
        (lambda c: (c / MANIFEST_FILE).unlink(), f"{MANIFEST_FILE} is missing"),
        (lambda c: (c / "ema.safetensors").write_bytes(b""), "ema.safetensors has 0 bytes"),
        # Nested past what sat_toolkit.parsing reads: a decode error, not a RecursionError.
        (lambda c: (c / MANIFEST_FILE).write_text("[" * 100 + "]" * 100), f"{MANIFEST_FILE} is not JSON"),
    ],
    ids=[
        "truncated-model",
        "missing-optimizer",
        "empty-rng",
        "flipped-byte",
        "no-manifest",
        "empty-ema",
        "nested-manifest",
    ],
)
def test_a_damaged_newest_checkpoint_falls_back_to_the_intact_one(
    stopped: Path, tmp_path: Path, damage, problem: str
) -> None:
    run_dir, newest = _copy(stopped, tmp_path)
    damage(newest)
    warning = _assert_fell_back(_cli_run(run_dir), run_dir, newest)
    assert problem in warning


@pytest.mark.parametrize(
    "damage",
    [
        lambda c: _truncate(c / "model.safetensors"),
        lambda c: (c / "rng_state_0.json").write_bytes(b""),
    ],
    ids=["truncated-model", "empty-rng-state"],
)
def test_damage_with_a_matching_manifest_is_still_caught_by_the_loads(
    stopped: Path, tmp_path: Path, damage
) -> None:
    """A manifest rewritten after the damage: the file itself must still load as data."""
    run_dir, newest = _copy(stopped, tmp_path)
    damage(newest)
    write_manifest(newest)
    assert "does not load as data" in _assert_fell_back(_cli_run(run_dir), run_dir, newest)


@pytest.mark.parametrize(
    ("counter", "value", "problem"),
    [
        (
            "epoch",
            7,
            "does not load into this recipe's run (train_state.json is at epoch 7, past this run's last, 1)",
        ),
        (
            "global_step",
            99,
            "does not load into this recipe's run (train_state.json is at step 99, past this run's last, 20)",
        ),
        ("epoch", 99, "train_state.json says epoch 99 after only 8 steps"),  # an epoch takes a step at least
    ],
)
def test_a_train_state_past_the_run_length_falls_back_instead_of_finishing(
    stopped: Path, tmp_path: Path, counter: str, value: int, problem: str
) -> None:
    """A rewritten state (manifest rewritten too) whose position lies past the recipe's end.

    Resumed as it is, the training loop would not run a step and the run would report
    itself finished after 8 of its 20 steps.
    """
    run_dir, newest = _copy(stopped, tmp_path)
    if counter == "global_step":  # the directory must still be named after the state's step
        newest = newest.rename(newest.with_name(f"step-{value:08d}"))
    state = json.loads((newest / "train_state.json").read_text())
    state[counter] = value
    (newest / "train_state.json").write_text(json.dumps(state))
    write_manifest(newest)
    result = _cli_run(run_dir)
    assert result.exit_code == 0, result.output
    (warning,) = _warnings(result)
    assert f"checkpoint {newest} is damaged ({problem})" in warning
    assert "resuming from step-00000004" in warning
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 20


def test_the_fallback_resume_ends_where_the_uninterrupted_run_does(
    stopped: Path, uninterrupted: tuple[Path, Result], tmp_path: Path
) -> None:
    """Falling back to step-4 loses steps, not determinism: the final weights are bit-identical."""
    reference, result = uninterrupted
    assert result.exit_code == 0, result.output
    assert not _warnings(result), result.stderr  # a healthy run has nothing to warn about
    run_dir, newest = _copy(stopped, tmp_path)
    _truncate(newest / "model.safetensors")
    _assert_fell_back(_cli_run(run_dir), run_dir, newest)
    ours = load_file(str(run_dir / "model.safetensors"))
    theirs = load_file(str(reference / "model.safetensors"))
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_a_recipe_edited_between_kill_and_resume_is_refused_naming_the_change(
    stopped: Path, uninterrupted: tuple[Path, Result], tmp_path: Path
) -> None:
    """`run RUN/recipe.toml --resume` after editing that file (1 epoch -> 3) resumed without a
    word and re-sized the lr schedule under the checkpoint's feet (a stranger's walk)."""
    run_dir, newest = _copy(stopped, tmp_path)
    saved = run_dir / "recipe.toml"
    original = saved.read_text()
    here = original.replace(str(stopped), str(run_dir))  # the copy's own output_dir
    saved.write_text(here.replace("\nepochs = 1\n", "\nepochs = 3\n"))
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    result = CliRunner().invoke(cli, ["run", str(saved), "--resume", "--no-progress"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert result.output.strip() == (
        "Error: --resume: step-00000008 was trained with another recipe than this one "
        "(train.epochs: 1 -> 3); a resume continues the same run: restore the recipe (the checkpoint's copy: "
        f"{newest / 'recipe.toml'}) or start the changed one in a new run.output_dir"
    )
    assert before == {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}  # nothing written or set aside
    saved.write_text((newest / "recipe.toml").read_text().replace(str(stopped), str(run_dir)))  # restored
    resumed = CliRunner().invoke(cli, ["run", str(saved), "--resume", "--no-progress"])
    assert resumed.exit_code == 0, resumed.output
    reference, _ = uninterrupted
    ours, theirs = (
        load_file(str(run_dir / "model.safetensors")),
        load_file(str(reference / "model.safetensors")),
    )
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_no_intact_checkpoint_is_one_line_and_changes_nothing(stopped: Path, tmp_path: Path) -> None:
    run_dir, newest = _copy(stopped, tmp_path)
    for checkpoint in list_checkpoints(run_dir):
        _truncate(checkpoint / "model.safetensors")
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    result = _cli_run(run_dir)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    line, root = result.output.strip(), run_dir / "checkpoints"
    assert line.startswith(f"Error: --resume: no intact checkpoint in {root}: step-00000008:")
    assert "(and the older one is damaged too)" in line and f"delete {root}" in line
    assert before == {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}  # nothing written or moved


def test_resume_without_a_checkpoint_says_it_starts_from_step_0(tmp_path: Path) -> None:
    run_dir = tmp_path / "early"
    train(load_recipe(_recipe(run_dir)), show_progress=False, stop_after_steps=2)  # before step-4
    assert not list_checkpoints(run_dir)
    result = _cli_run(run_dir)
    assert result.exit_code == 0, result.output
    root = run_dir / "checkpoints"
    assert _warnings(result) == [f"warning: --resume: no checkpoint in {root}; starting from step 0"]


def test_resume_of_a_run_directory_that_does_not_exist_says_it_starts_from_step_0(tmp_path: Path) -> None:
    run_dir = tmp_path / "never-ran"
    result = _cli_run(run_dir, train={"epochs": 1})
    assert result.exit_code == 0, result.output
    root = run_dir / "checkpoints"
    assert _warnings(result) == [f"warning: --resume: no checkpoint in {root}; starting from step 0"]
    assert (run_dir / "metrics.json").is_file()


# -- finite state only ---------------------------------------------------------------------------
def _non_finite(path: Path) -> list[str]:
    tensors = load_file(str(path))
    return [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]


def test_a_non_finite_state_is_never_checkpointed_and_the_named_one_is_good(tmp_path: Path) -> None:
    """The issue's reproduction: lr 1e6, a checkpoint every 2 steps.

    SGD at lr 1e6 overflows BatchNorm's running_var to inf while the loss stays finite; before
    this fix every kept checkpoint held that inf and the error named one of them.
    """
    run_dir = tmp_path / "nan"
    result = _cli_run(
        run_dir, resume=False, optimizer={"name": "sgd", "lr": 1e6},
        checkpoint={"every_steps": 2, "keep_last": 1},
    )  # fmt: skip
    assert result.exit_code == 2 and "Traceback" not in result.output
    line = result.output.strip()
    assert len(line.splitlines()) == 1
    assert "holds NaN or inf" in line and "running_var" in line
    checkpoints = list_checkpoints(run_dir)
    assert checkpoints, "the steps before the overflow are checkpointed"
    assert f"the last good checkpoint is {checkpoints[-1]})" in line
    for checkpoint in checkpoints:
        assert not _non_finite(checkpoint / "model.safetensors"), checkpoint
        assert not _non_finite(checkpoint / "ema.safetensors"), checkpoint
        assert checkpoint_problem(checkpoint, expect_ema=True) is None


# -- the divergence guard --------------------------------------------------------------------------
def _diverging(run_dir: Path, mode: str) -> Result:
    """adamw at lr 0.01, multiplied by 1e4 from step 30 on: the loss jumps to thousands, stays finite."""
    return _cli_run(
        run_dir,
        resume=False,
        train={"epochs": 3, "log_every_steps": 2, "divergence": mode},
        schedule={"lr": {"name": "step", "period": 0.5, "gamma": 1e4}},
        checkpoint={"every_steps": 4, "keep_last": 1},
    )


def test_a_finite_divergence_warns_once_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    run_dir = tmp_path / "warn"
    result = _diverging(run_dir, "warn")
    assert result.exit_code == 0, result.output
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["final_train_loss"] > 23  # diverged, yet finite: what used to exit 0 silently
    warnings = _warnings(result)
    assert len(warnings) == 1, result.stderr
    good = run_dir / "checkpoints" / "step-00000028"  # the last one before the lr jump at step 30
    assert warnings[0].startswith("warning: step 32: the training loss is ")
    assert f"the run has diverged; the last good checkpoint is {good};" in warnings[0]
    # keep_last = 1, yet the last good checkpoint survived every later save.
    assert [p.name for p in list_checkpoints(run_dir)] == ["step-00000028", "step-00000060"]
    assert json.loads((good / "train_state.json").read_text())["divergence_warned_at"] == 0


def test_a_finite_divergence_stops_when_asked(tmp_path: Path) -> None:
    run_dir = tmp_path / "stop"
    result = _diverging(run_dir, "stop")
    assert result.exit_code == 2 and "Traceback" not in result.output
    line = result.output.strip()
    assert len(line.splitlines()) == 1
    good = run_dir / "checkpoints" / "step-00000028"
    assert line.startswith("Error: training stopped at step 32: the training loss is ")
    assert f"the last good checkpoint is {good};" in line and good.is_dir()
    assert not (run_dir / "model.safetensors").exists()


def test_the_divergence_guard_can_be_switched_off(tmp_path: Path) -> None:
    result = _diverging(tmp_path / "off", "off")
    assert result.exit_code == 0, result.output
    assert not _warnings(result)


# -- found in review: what a resume must not get wrong --------------------------------------------
def test_hidden_files_of_a_file_browser_do_not_make_a_checkpoint_damaged(
    stopped: Path, tmp_path: Path
) -> None:
    run_dir, newest = _copy(stopped, tmp_path)
    (newest / ".DS_Store").write_bytes(b"\0Bud1")
    assert checkpoint_problem(newest, expect_ema=True) is None
    result = _cli_run(run_dir)
    assert result.exit_code == 0, result.output
    assert not _warnings(result) and (run_dir / "checkpoints" / "step-00000020").is_dir()


def test_a_second_launch_into_a_running_run_is_refused(tmp_path: Path) -> None:
    """A run before its first checkpoint looks like a failed start; its lock says it is alive."""
    from sat_toolkit.recipe.rundir import check_run_dir, hold_run_lock

    run_dir = tmp_path / "live"
    recipe = load_recipe(_recipe(run_dir))
    train(recipe, show_progress=False, stop_after_steps=2)  # recipe.toml, no checkpoint yet
    assert check_run_dir(run_dir, recipe, resume=False) is False  # a failed start: rerun allowed
    lock = hold_run_lock(run_dir)  # ... unless a live run holds the directory
    try:
        with pytest.raises(SatError, match="another sat-toolkit run is working in it"):
            check_run_dir(run_dir, recipe, resume=True)
    finally:
        lock.close()
    assert check_run_dir(run_dir, recipe, resume=False) is False


def test_another_ranks_write_probe_does_not_make_an_empty_run_directory_foreign(tmp_path: Path) -> None:
    from sat_toolkit.recipe.rundir import check_run_dir

    run_dir = tmp_path / "empty"
    (run_dir / ".sat-toolkit-write-check-abc").mkdir(parents=True)
    assert check_run_dir(run_dir, load_recipe(_recipe(run_dir)), resume=False) is False


def test_an_rng_state_this_torch_cannot_take_is_skipped_with_a_warning(stopped: Path, tmp_path: Path) -> None:
    run_dir, newest = _copy(stopped, tmp_path)
    rng_path = newest / "rng_state_0.json"
    state = json.loads(rng_path.read_text())
    state["torch"] = state["torch"][:100]  # another torch build's generator size
    rng_path.write_text(json.dumps(state))
    write_manifest(newest)
    result = _cli_run(run_dir)
    assert result.exit_code == 0, result.output
    (warning,) = _warnings(result)
    assert warning.startswith(f"warning: {rng_path}: random generator state not restored (")
    assert (run_dir / "checkpoints" / "step-00000008").is_dir()  # resumed from it, not set aside


def test_a_malformed_rng_state_sets_the_checkpoint_aside(stopped: Path, tmp_path: Path) -> None:
    run_dir, newest = _copy(stopped, tmp_path)
    rng_path = newest / "rng_state_0.json"
    state = json.loads(rng_path.read_text())
    state["python"]["internal"] = state["python"]["internal"][:10]
    rng_path.write_text(json.dumps(state))
    write_manifest(newest)
    warning = _assert_fell_back(_cli_run(run_dir), run_dir, newest)
    assert "rng_state_0.json does not load as data (its Python state is malformed)" in warning


def test_a_resume_after_a_divergence_warning_still_keeps_the_checkpoint_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sat_toolkit.engine import window

    original = window.DivergenceGuard.check

    def diverges_at_step_40(self, reference, step, loss, num_classes):
        verdict = original(self, reference, step, loss, num_classes)
        return ("diverged", "forced by the test") if step == 40 else verdict

    monkeypatch.setattr(window.DivergenceGuard, "check", diverges_at_step_40)
    run_dir = tmp_path / "warned"
    recipe = load_recipe(_recipe(
        run_dir, train={"epochs": 3, "log_every_steps": 5}, checkpoint={"every_steps": 4, "keep_last": 1}
    ))  # fmt: skip
    train(recipe, show_progress=False, stop_after_steps=46)
    # The last window judged "ok" was at step 35: step-32 is the good one, kept past keep_last.
    assert [c.name for c in list_checkpoints(run_dir)] == ["step-00000032", "step-00000044"]
    train(recipe, resume=True, show_progress=False, stop_after_steps=10)
    assert [c.name for c in list_checkpoints(run_dir)] == ["step-00000032", "step-00000052"]


def test_the_divergence_guard_can_be_switched_on_resume_as_its_error_suggests(
    stopped: Path, tmp_path: Path
) -> None:
    run_dir, _ = _copy(stopped, tmp_path)
    result = _cli_run(run_dir, train={"epochs": 1, "divergence": "off"})
    assert result.exit_code == 0, result.output
    assert (run_dir / "metrics.json").is_file()


def test_a_checkpoint_that_is_a_link_elsewhere_is_set_aside_not_resumed_from(
    stopped: Path, tmp_path: Path
) -> None:
    """A step directory linked to another run's checkpoint was once resumed from silently."""
    run_dir, newest = _copy(stopped, tmp_path)
    elsewhere = tmp_path / "elsewhere" / "step-00000008"
    shutil.copytree(newest, elsewhere)
    shutil.rmtree(newest)
    newest.symlink_to(elsewhere, target_is_directory=True)
    before = {p.name: p.read_bytes() for p in elsewhere.iterdir()}
    warning = _assert_fell_back(_cli_run(run_dir), run_dir, newest)
    assert "a symbolic link, not the run's own directory" in warning
    assert (run_dir / "checkpoints" / "damaged-step-00000008").is_symlink()  # the link moved, not its target
    assert before == {p.name: p.read_bytes() for p in elsewhere.iterdir()}


@pytest.mark.parametrize("entry", ["lock_link", "lock_dir", "checkpoints_file", "checkpoints_link"])
def test_a_planted_entry_where_the_run_keeps_its_lock_or_checkpoints_is_one_line(
    stopped: Path, tmp_path: Path, entry: str
) -> None:
    """A .lock linked outside was followed (a file created there); a file or a directory of the
    wrong kind was a traceback, one of them only after the whole training."""
    run_dir, _ = _copy(stopped, tmp_path)
    victim = tmp_path / "victim"
    name, what = {
        "lock_link": (".lock", "is a symbolic link"),
        "lock_dir": (".lock", "is not a plain file (the run's lock)"),
        "checkpoints_file": ("checkpoints", "is not a directory (the run's checkpoints)"),
        "checkpoints_link": ("checkpoints", "is a symbolic link"),
    }[entry]
    planted = run_dir / name
    if planted.is_dir():
        shutil.move(planted, tmp_path / "moved")
    planted.unlink(missing_ok=True)
    if entry == "lock_link":
        planted.symlink_to(victim)
    elif entry == "checkpoints_link":
        planted.symlink_to(tmp_path / "moved", target_is_directory=True)
    elif entry == "lock_dir":
        planted.mkdir()
    else:
        planted.write_text("not a folder")
    before = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))
    result = _cli_run(run_dir)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    (line,) = result.stderr.strip().splitlines()
    assert f"{planted} {what}" in line
    assert not victim.exists() and before == sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))


def test_weights_of_another_shape_are_named_by_their_tensor_and_shapes(stopped: Path, tmp_path: Path) -> None:
    """Intact data that does not fit the model: the warning once kept only torch's header line."""
    from safetensors.torch import save_file

    run_dir, newest = _copy(stopped, tmp_path)
    weights = load_file(str(newest / "model.safetensors"))
    key = next(k for k, v in weights.items() if v.ndim == 4)
    weights[key] = torch.zeros(*(n + 1 for n in weights[key].shape))
    save_file(weights, str(newest / "model.safetensors"))
    write_manifest(newest)
    warning = _assert_fell_back(_cli_run(run_dir), run_dir, newest)
    assert "does not load into this recipe's run (Error(s) in loading state_dict for" in warning
    assert f"size mismatch for {key.split('.', 1)[-1]}" in warning or f"size mismatch for {key}" in warning


def test_every_file_of_a_run_is_as_readable_as_the_umask_allows(uninterrupted: tuple[Path, Result]) -> None:
    """safetensors creates its files 0600: the exported model and the checkpoints' weights were
    the files of a run a colleague on a shared machine could not read (a stranger's walk)."""
    from sat_toolkit.recipe.rundir import _umask

    run_dir, result = uninterrupted
    assert result.exit_code == 0, result.output
    expected = 0o666 & ~_umask()
    files = [p for p in run_dir.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert run_dir / "model.safetensors" in files and any(p.parent.name.startswith("step-") for p in files)
    assert {
        p.relative_to(run_dir).as_posix(): oct(p.stat().st_mode & 0o777)
        for p in files
        if p.stat().st_mode & 0o777 != expected
    } == {}
