"""A dry run deletes its temporary directory when it ends, succeeds or fails, unless kept.

EfficientNet-L1's dry run writes 4 GB (its EMA alone is 1 GB); before this, every dry run
left its directory in /tmp.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

import sat_toolkit
from sat_toolkit.cli import cli
from sat_toolkit.engine import dry_run as dry_run_module
from sat_toolkit.errors import SatError

QUICKSTART = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml"
DELETED = "dry run ok: 2 steps; its files were deleted (--keep keeps them)"


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The system temp directory, redirected to an empty folder this test can inspect."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


@pytest.fixture
def removed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Path, set[str]]]:
    """Every directory the dry run deleted, with the files it held just before."""
    seen: list[tuple[Path, set[str]]] = []
    real: Callable[[Path], None] = dry_run_module._remove_run_dir

    def spy(directory: Path) -> None:
        seen.append((directory, {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}))
        real(directory)

    monkeypatch.setattr(dry_run_module, "_remove_run_dir", spy)
    return seen


def _dry_run_dirs(root: Path) -> list[Path]:
    """Dry-run directories under ``root`` (torch may put its own caches beside them)."""
    return sorted(root.glob("sat-dry-run-*"))


def _boom(*args: object, **kwargs: object) -> None:
    raise RuntimeError("boom: the final evaluation failed")


def test_a_successful_dry_run_deletes_its_directory(temp_root: Path, removed: list) -> None:
    result = CliRunner().invoke(cli, ["run", str(QUICKSTART), "--dry-run", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == DELETED
    [(directory, files)] = removed
    assert directory.parent == temp_root and directory.name.startswith("sat-dry-run-quickstart-")
    # It did write a full run (checkpoint, export, metrics) before deleting it.
    assert {
        "metrics.json",
        "model.safetensors",
        "recipe.toml",
        "checkpoints/step-00000002/train_state.json",
    } <= files
    assert _dry_run_dirs(temp_root) == []


def test_keep_keeps_the_directory_and_says_where(temp_root: Path, removed: list) -> None:
    result = CliRunner().invoke(cli, ["run", str(QUICKSTART), "--dry-run", "--keep", "--no-progress"])
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("dry run ok: 2 steps; its files are kept in ")
    kept = Path(last.split("its files are kept in ")[1])
    assert removed == [] and _dry_run_dirs(temp_root) == [kept]
    assert json.loads((kept / "metrics.json").read_text())["steps"] == 2

    summary = sat_toolkit.run(QUICKSTART, dry_run=True, keep=True, show_progress=False)
    assert (summary.run_dir / "model.safetensors").is_file() and summary.run_dir.parent == temp_root


def test_the_python_api_deletes_the_directory_and_keeps_the_metrics(temp_root: Path, removed: list) -> None:
    summary = sat_toolkit.run(QUICKSTART, dry_run=True, show_progress=False)
    assert summary.metrics["steps"] == 2 and "evaluation" in summary.metrics
    assert not summary.run_dir.exists() and [d for d, _ in removed] == [summary.run_dir]
    assert _dry_run_dirs(temp_root) == []


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt], ids=["exception", "ctrl-c"])
def test_a_failing_dry_run_deletes_its_directory(
    temp_root: Path, removed: list, monkeypatch: pytest.MonkeyPatch, error: type[BaseException]
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise error("the final evaluation failed")

    monkeypatch.setattr("sat_toolkit.engine.trainer.final_evaluation", fail)
    with pytest.raises(error, match="the final evaluation failed"):
        sat_toolkit.run(QUICKSTART, dry_run=True, show_progress=False)
    [(_, files)] = removed
    assert "checkpoints/step-00000002/model.safetensors" in files  # training had written its checkpoint
    assert _dry_run_dirs(temp_root) == []


def test_a_failing_dry_run_on_the_cli_deletes_its_directory(
    temp_root: Path, removed: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sat_toolkit.engine.trainer.final_evaluation", _boom)
    result = CliRunner().invoke(cli, ["run", str(QUICKSTART), "--dry-run", "--no-progress"])
    assert result.exit_code != 0 and isinstance(result.exception, RuntimeError)
    assert len(removed) == 1 and _dry_run_dirs(temp_root) == []


def test_a_recipe_error_in_a_dry_run_leaves_nothing(temp_root: Path, removed: list) -> None:
    result = CliRunner().invoke(cli, ["run", str(QUICKSTART), "--dry-run", "--set", "optimizer.lr=-1"])
    assert result.exit_code == 2 and "optimizer.lr" in result.output
    assert removed == [] and _dry_run_dirs(temp_root) == []  # refused before the directory is made


def test_a_failing_dry_run_with_keep_keeps_it_and_says_where(
    temp_root: Path, removed: list, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sat_toolkit.engine.trainer.final_evaluation", _boom)
    with pytest.raises(RuntimeError, match="boom"):
        sat_toolkit.run(QUICKSTART, dry_run=True, keep=True, show_progress=False)
    [kept] = _dry_run_dirs(temp_root)
    assert removed == [] and (kept / "checkpoints" / "step-00000002").is_dir()
    assert f"the failed dry run's files are kept in {kept}" in capsys.readouterr().err


def test_keep_without_dry_run_is_one_line_with_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["run", str(QUICKSTART), "--keep", "--set", f"run.output_dir={tmp_path / 'r'}"]
    )
    assert result.exit_code == 2
    assert (
        result.output.strip() == "Error: --keep only applies with --dry-run (a real run keeps its directory)"
    )
    assert not (tmp_path / "r").exists()
    with pytest.raises(SatError, match="keep=True only applies with dry_run=True"):
        sat_toolkit.run(QUICKSTART, keep=True)


def test_a_terminated_dry_run_deletes_its_directory(tmp_path: Path) -> None:
    """SIGTERM (what `timeout` and a cancelled CI job send) unwinds like Ctrl-C: Python's
    default ended the process at once and left the directory in the temp folder."""
    import os
    import signal
    import subprocess
    import sys
    import time

    root = tmp_path / "tmp"
    root.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "sat_toolkit", "run", str(QUICKSTART), "--dry-run", "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(root), "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 120
    while not list(root.glob("sat-dry-run-*/recipe.toml")):  # training has begun
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert _dry_run_dirs(root) == []
