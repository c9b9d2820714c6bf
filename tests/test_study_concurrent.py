"""One study run by several invocations at once (two terminals, two machines sharing the
output directory): each cell runs once, none fails for being busy, no ledger record is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_study import STUDY, write_study

from sat_toolkit.commands.study import study_command
from sat_toolkit.recipe.rundir import hold_run_lock
from sat_toolkit.study import ledger as study_ledger
from sat_toolkit.study import load_study, plan, run_study
from sat_toolkit.study import runner as study_runner
from sat_toolkit.study.ledger import Ledger, wall_clock_seconds

ONE_SEED = STUDY.replace("seeds = [0, 1]", "seeds = [0]")


def test_two_invocations_saving_one_ledger_keep_each_others_records(tmp_path: Path) -> None:
    first, second = Ledger(tmp_path), Ledger(tmp_path)  # both read the same (empty) file
    first.start_invocation("sat-toolkit study a.toml", jobs=1, threads=2)
    second.start_invocation("sat-toolkit study a.toml", jobs=2, threads=1)
    first.end_attempt(first.begin_attempt("relu/seed0"), seconds=5.0, outcome="finished")
    second.end_attempt(second.begin_attempt("silu/seed0"), seconds=7.0, outcome="failed")
    second.end_attempt(second.begin_attempt("silu/seed0"), seconds=8.0, outcome="finished")
    first.end_attempt(first.begin_attempt("relu/seed1"), seconds=6.0, outcome="finished")

    saved = json.loads((tmp_path / "study.json").read_text())
    assert [i["jobs"] for i in saved["invocations"]] == [1, 2]
    assert {key: [a["seconds"] for a in attempts] for key, attempts in saved["cells"].items()} == {
        "relu/seed0": [5.0],
        "silu/seed0": [7.0, 8.0],
        "relu/seed1": [6.0],
    }
    assert saved["cells"]["silu/seed0"][0]["invocation"] == second.id != first.id
    assert Ledger(tmp_path).data == saved  # what a later invocation reads


def test_wall_time_counts_invocations_that_ran_side_by_side_once() -> None:
    def at(seconds_after: int, seconds: float) -> dict[str, object]:
        return {"started": f"2026-12-05T10:00:{seconds_after:02d}+00:00", "seconds": seconds}

    # 0-30 and 10-40 overlap (40 s together), 50-55 stands alone: 45 s, not 30 + 30 + 5
    assert wall_clock_seconds([at(10, 30.0), at(0, 30.0), at(50, 5.0)]) == 45.0
    assert wall_clock_seconds([at(0, 30.0), at(5, 10.0)]) == 30.0  # one inside another
    assert wall_clock_seconds([{"seconds": 3.0}]) == 0.0  # a record without a start adds nothing


def test_a_cell_another_process_runs_is_left_to_it_not_failed(tmp_path: Path) -> None:
    spec = load_study(write_study(tmp_path, tmp_path / "out", ONE_SEED))
    busy = spec.output_dir / "silu" / "seed0"
    lock = hold_run_lock(busy)  # as the other invocation's trainer holds it
    assert [p.status for p in plan(spec)] == ["new", "running"]
    listed = CliRunner().invoke(study_command, [str(spec.path), "--dry-run"])
    assert f"silu seed 0: running in another process ({busy})" in listed.output
    lines: list[str] = []
    try:
        result = run_study(spec, echo=lines.append)  # no SatError: nothing failed
    finally:
        lock.close()
    assert "skipped  silu seed 0 (another process is running it)" in lines
    assert lines[-1].startswith("1 cell(s) left to the other process running them (silu/seed0)")
    assert [o.key for o in result.outcomes] == ["relu/seed0"]
    ledger = json.loads((spec.output_dir / "study.json").read_text())
    assert list(ledger["cells"]) == ["relu/seed0"]

    lines.clear()
    run_study(spec, echo=lines.append)  # the other process has gone: this one runs it now
    assert any(line.startswith("[1/1] finished silu seed 0") for line in lines)


def test_a_cell_taken_or_finished_since_the_plan_is_not_run_again(tmp_path: Path) -> None:
    spec = load_study(write_study(tmp_path, tmp_path / "out", ONE_SEED))
    relu = next(p for p in plan(spec) if p.cell.label == "relu")

    def task() -> study_runner.CellTask:
        return study_runner.CellTask(relu.cell.key, relu.recipe.to_dict(), 1, str(tmp_path / "relu.log"))

    lock = hold_run_lock(relu.cell.run_dir)
    try:
        assert study_runner.execute_cell(task()).elsewhere == "is running it"
    finally:
        lock.close()
    assert study_runner.execute_cell(task()).error is None  # trains it
    again = study_runner.execute_cell(task())
    assert again.elsewhere == "finished it" and again.error is None


@pytest.mark.slow
def test_two_study_commands_at_once_split_the_cells(tmp_path: Path) -> None:
    """The user's path: the same `sat-toolkit study` in two terminals at the same time."""
    study = write_study(tmp_path, tmp_path / "out", STUDY.replace("train.epochs=1", "train.epochs=3"))
    command = [sys.executable, "-m", "sat_toolkit", "study", str(study)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    both = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=600)[0] for process in both]
    assert [process.returncode for process in both] == [0, 0], "\n".join(outputs)
    # the invocation that ends last finds every cell finished: it leaves none to the other
    assert any("left to the other process" not in output for output in outputs), "\n".join(outputs)

    ledger = json.loads((tmp_path / "out" / "study.json").read_text())
    finished = {key: [a["outcome"] for a in attempts] for key, attempts in ledger["cells"].items()}
    assert finished == dict.fromkeys(["relu/seed0", "silu/seed0", "relu/seed1", "silu/seed1"], ["finished"])
    assert sum(i["cells_run"] for i in ledger["invocations"]) == 4
    for key in finished:
        label, seed = key.split("/")
        assert json.loads((tmp_path / "out" / label / seed / "metrics.json").read_text())["evaluation"]


def test_a_killed_study_leaves_its_time_and_its_running_cell_on_record(tmp_path: Path) -> None:
    """A study is mostly stopped by a kill, which runs no cleanup: what is on disk while a
    cell runs is what the ledger keeps, and the report must still count that time."""
    spec = load_study(write_study(tmp_path, tmp_path / "out", ONE_SEED))
    ledger_path = spec.output_dir / "study.json"
    left_by_a_kill: list[dict] = []

    def cell_that_is_killed(task: study_runner.CellTask) -> study_runner.CellOutcome:
        time.sleep(0.5)  # ten heartbeats; the bounds below leave room for a late one
        left_by_a_kill.append(json.loads(ledger_path.read_text()))
        raise KeyboardInterrupt  # the study stops here; the file above is what SIGKILL leaves

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(study_ledger, "HEARTBEAT_SECONDS", 0.05)
        patch.setattr(study_runner, "execute_cell", cell_that_is_killed)
        with pytest.raises(KeyboardInterrupt):
            run_study(spec, jobs=1, echo=lambda line: None, command="sat-toolkit study first")

    killed = left_by_a_kill[0]
    [invocation] = killed["invocations"]
    assert 0.25 <= invocation["seconds"] < 5 and invocation["cells_run"] == 0
    [attempt] = killed["cells"]["relu/seed0"]
    assert attempt["outcome"] == "interrupted" and attempt["resumed_from_step"] == 0
    assert 0.25 <= attempt["seconds"] <= invocation["seconds"]
    assert attempt["invocation"] == invocation["id"] and list(killed["cells"]) == ["relu/seed0"]

    ledger_path.write_text(json.dumps(killed))  # exactly as the kill left it
    run_study(spec, jobs=1, echo=lambda line: None, command="sat-toolkit study second")
    ledger = json.loads(ledger_path.read_text())
    assert [a["outcome"] for a in ledger["cells"]["relu/seed0"]] == ["interrupted", "finished"]
    assert [a["outcome"] for a in ledger["cells"]["silu/seed0"]] == ["finished"]
    first, second = ledger["invocations"]
    assert first == invocation and second["cells_run"] == 2
    report = json.loads((spec.output_dir / "report.json").read_text())
    assert report["wall_seconds"]["invocations"] == 2  # the killed one counts
    assert report["commands"] == ["sat-toolkit study first", "sat-toolkit study second"]
    attempts = [a for records in ledger["cells"].values() for a in records]
    assert report["wall_seconds"]["cells"] == pytest.approx(sum(a["seconds"] for a in attempts), abs=0.01)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads thread masks from /proc (Linux)")
def test_the_ledger_heartbeat_leaves_ctrl_c_to_the_main_thread(tmp_path: Path) -> None:
    """The kernel gives a Ctrl-C to any thread that does not block it. Taken by the
    heartbeat thread, it only flagged the main thread, asleep waiting for a cell: once a
    study ran to its end and exited 0 after one (the test below, under load)."""
    import threading

    def blocks_sigint(thread: threading.Thread) -> bool:
        status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
        blocked = int(next(line for line in status.splitlines() if line.startswith("SigBlk:")).split()[1], 16)
        return bool(blocked & (1 << (signal.SIGINT - 1)))

    with Ledger(tmp_path).heartbeat():
        beat = next(t for t in threading.enumerate() if t.name == "study-ledger-heartbeat")
        deadline = time.monotonic() + 10
        while not blocks_sigint(beat) and time.monotonic() < deadline:
            time.sleep(0.01)  # the thread blocks it as it starts
        assert blocks_sigint(beat)
    assert not blocks_sigint(threading.main_thread())


def test_a_study_worker_holds_no_named_semaphore_a_terminate_would_leak() -> None:
    """Workers killed on Ctrl-C left tqdm's multiprocessing lock behind: "resource_tracker:
    There appear to be 2 leaked semaphore objects" followed the interrupt's one line."""
    probe = (
        "import multiprocessing\n"
        "multiprocessing.set_start_method('spawn')\n"  # as in a worker: named semaphores
        "from multiprocessing import resource_tracker as tracker\n"
        "from sat_toolkit.study.runner import _init_worker\n"
        "_init_worker(1)\n"
        "made = []\n"
        "tracker.register = lambda name, kind: made.append(kind)\n"
        "from tqdm.auto import tqdm\n"
        "tqdm(total=1, disable=True).close()\n"  # as a cell's bar, show_progress=False
        "print(made)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.slow
@pytest.mark.parametrize("when", ["workers starting", "cells training"])
def test_ctrl_c_stops_a_study_with_one_line_that_says_how_to_continue(tmp_path: Path, when: str) -> None:
    """The user's Ctrl-C reaches the whole process group: the study and its --jobs 2 workers.

    It prints the command that continues the study and exits 130, as `run` does; a worker
    still starting prints no traceback of its bootstrap, and none is left running.
    """
    study = write_study(tmp_path, tmp_path / "out", STUDY.replace("train.epochs=1", "train.epochs=40"))
    command = [sys.executable, "-m", "sat_toolkit", "study", str(study), "--jobs", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    assert process.stdout is not None
    lines = []
    for line in process.stdout:  # the parent prints "started" just before each worker starts
        lines.append(line)
        if line.startswith("[2/4] started"):
            break
    if when == "cells training":
        logs = tmp_path / "out" / "logs"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(
            "torch threads" in (logs / f"{label}-seed0.log").read_text(errors="replace")
            for label in ("relu", "silu")
            if (logs / f"{label}-seed0.log").exists()
        ):
            time.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, "".join(lines) + out + err
    assert "Traceback" not in err and "Aborted!" not in err, err
    assert err.strip().splitlines()[-1] == (
        "interrupted; finished cells are kept and the interrupted ones resume from their last checkpoint: "
        f"continue the study with: sat-toolkit study {study} --jobs 2"
    )
    deadline = time.monotonic() + 30  # no worker outlives the study (allowing time to exit)
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        survivors = subprocess.run(
            ["ps", "-o", "pid,args", "-g", str(process.pid)], capture_output=True, text=True
        )
        pytest.fail(f"processes of the study still run 30 s after it exited:\n{survivors.stdout}")
