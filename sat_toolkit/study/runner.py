"""Run a study's cells: skip the finished, resume the interrupted, optionally side by side.

Before the first cell, the plan comes with an estimate of the whole study's time
(:mod:`~sat_toolkit.study.probing`: the finished cells on record, else timed probes), and
after each finished cell with the time left (:mod:`~sat_toolkit.study.eta`).

Cells run in this process (``jobs=1``) or in a pool of ``jobs`` spawned processes, each
with ``max(1, cores // jobs)`` torch threads (at most ``OMP_NUM_THREADS`` where it is set)
so that parallel cells share the CPU instead of oversubscribing it. A cell's own output
(the trainer's prints, warnings) goes to ``<output_dir>/logs/<label>-seed<k>.log``; the
console gets one line per cell event.
A failed cell does not stop the others: the study reports it at the end (exit code 2)
after writing the report of what did finish.

Several invocations may run one study at once, e.g. from two machines that share the
output directory: a cell whose run another process holds (its run directory's lock) is
skipped, not failed, and the ledger merges every invocation's records.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sat_toolkit.devices import emulated_bf16_warning
from sat_toolkit.errors import SatError
from sat_toolkit.study.eta import StudyEta, evaluation_seconds, pace_of
from sat_toolkit.study.grid import LOG_DIR, PlannedCell, cells, plan, read_metrics, study_recipes
from sat_toolkit.study.ledger import Ledger, available_cores, hardware
from sat_toolkit.study.probing import first_estimate, torch_threads
from sat_toolkit.study.report import write_report
from sat_toolkit.study.reuse import reuse_finished
from sat_toolkit.study.spec import StudySpec

Echo = Callable[[str], Any]


@dataclasses.dataclass(frozen=True)
class CellTask:
    """What a worker needs to run one cell (picklable: the recipe as a resolved dict)."""

    key: str
    recipe: dict[str, Any]
    threads: int
    log_path: str


@dataclasses.dataclass(frozen=True)
class CellOutcome:
    """How one attempt at a cell ended."""

    key: str
    seconds: float
    error: str | None = None
    elsewhere: str | None = None  # what another process did with the cell meanwhile: not tried here
    clean_accuracy: float | None = None
    robust_accuracy: float | None = None


@dataclasses.dataclass
class StudyRun:
    """What :func:`run_study` did: the plan, every attempt's outcome, the report files."""

    planned: list[PlannedCell]
    outcomes: list[CellOutcome]
    report: dict[str, Path] | None
    seconds: float

    @property
    def failed(self) -> list[CellOutcome]:
        return [o for o in self.outcomes if o.error is not None]

    @property
    def elsewhere(self) -> list[CellOutcome]:
        """Cells another invocation was running, left to it."""
        return [o for o in self.outcomes if o.elsewhere]


def default_command() -> str:
    """The command line of this process, as the report should quote it."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("sat-toolkit", "__main__.py"):
        argv[0] = "sat-toolkit"
    return shlex.join(argv)


def threads_per_job(jobs: int, cores: int | None = None) -> int:
    """The cores this process may use shared among ``jobs``, capped by ``OMP_NUM_THREADS``.

    The cap is the user's: on a busy machine one thread per process is often faster than
    two that stall each other, and a study must not undo an ``OMP_NUM_THREADS=1`` it was
    started under (each cell's environment is set from the result).
    """
    share = max(1, (cores or available_cores()) // jobs)
    asked = os.environ.get("OMP_NUM_THREADS", "").strip()
    return min(share, int(asked)) if asked.isdigit() and int(asked) > 0 else share


def oversubscribed(workers: int, cores: int) -> str | None:
    """Why more workers than cores mislead: the estimate times a cell alone on its threads."""
    if workers <= cores:
        return None
    return (
        f"{workers} jobs on {cores} core(s): the cells share them, so each runs slower than alone "
        f"(and than any estimate, which times a cell alone); --jobs {cores} finishes as soon as this"
    )


def _set_threads(threads: int) -> None:
    import torch

    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def _init_worker(threads: int) -> None:
    """Pool initializer: fix the thread count before the worker trains anything, and let
    Ctrl-C interrupt it from now on (:func:`_workers_start_deaf` kept it out while Python
    started; one that came meanwhile is dropped here: the study stops its workers itself).
    """
    if hasattr(signal, "pthread_sigmask"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # discards the pending one
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        signal.signal(signal.SIGINT, signal.default_int_handler)
    _set_threads(threads)
    from tqdm import tqdm

    # tqdm's default lock is a multiprocessing one, a named semaphore: a worker the study
    # terminates on Ctrl-C left it behind ("resource_tracker: There appear to be 2 leaked
    # semaphore objects") under the interrupt's one line. A worker draws no bar to share.
    tqdm.set_lock(threading.RLock())
    with contextlib.suppress(RuntimeError):  # only allowed before any parallel work
        import torch

        torch.set_num_interop_threads(1)


@contextlib.contextmanager
def _workers_start_deaf() -> Iterator[None]:
    """Processes started in the body begin with Ctrl-C blocked (a blocked signal stays
    blocked across fork and exec) until :func:`_init_worker`, and an interrupt of this
    process waits for the body to end: a worker half started (forked, not yet sent what to
    run) would die with a traceback of its bootstrap.

    Ctrl-C reaches every process of the terminal's group: without this, each worker still
    importing torch printed such a traceback under the study's one line.
    """
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread (run_study called from another)
        return
    interrupted: list[int] = []
    handler = signal.signal(signal.SIGINT, lambda number, _frame: interrupted.append(number))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        signal.signal(signal.SIGINT, handler)
    if interrupted:
        raise KeyboardInterrupt


def execute_cell(task: CellTask) -> CellOutcome:
    """Train and evaluate one cell, its output appended to its log; never raises on failure.

    Runs in a worker process or in the study's own process (the same code either way, so
    ``--jobs`` cannot change what a cell computes beyond the thread count).
    """
    from sat_toolkit.engine.trainer import train
    from sat_toolkit.errors import SatError
    from sat_toolkit.recipe import check_run_dir, load_recipe
    from sat_toolkit.recipe.rundir import RunInProgress

    Path(task.log_path).parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    # Line-buffered: each epoch's validation line reaches the log as it is printed, so a
    # cell that trains for hours shows its progress there (`tail -f`), not only at its end.
    with open(task.log_path, "a", buffering=1, encoding="utf-8") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):  # fmt: skip
        try:
            recipe = load_recipe(task.recipe)
            run_dir = Path(recipe.run.output_dir)
            # Looked at afresh, not as planned: another invocation of the study may have
            # finished, started or stopped this cell since.
            if read_metrics(run_dir) is not None:
                print(f"== {task.key}: not run here, another process finished it", flush=True)
                return CellOutcome(task.key, time.perf_counter() - started, elsewhere="finished it")
            resume = check_run_dir(run_dir, recipe, resume=True)
            print(
                f"== {task.key}: {'resume' if resume else 'start'}, {task.threads} torch threads", flush=True
            )
            summary = train(recipe, resume=resume, show_progress=False)
        except RunInProgress as exc:
            print(f"== {task.key}: not run here: {exc.format_message()}", flush=True)
            return CellOutcome(task.key, time.perf_counter() - started, elsewhere="is running it")
        except Exception as exc:  # reported per cell; the study goes on with the others
            traceback.print_exc()
            message = exc.format_message() if isinstance(exc, SatError) else f"{type(exc).__name__}: {exc}"
            return CellOutcome(task.key, time.perf_counter() - started, error=message)
    evaluation = summary.metrics.get("evaluation") or {}
    return CellOutcome(
        task.key,
        time.perf_counter() - started,
        clean_accuracy=evaluation.get("clean_accuracy"),
        robust_accuracy=evaluation.get("robust_accuracy"),
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def run_study(
    spec: StudySpec,
    *,
    jobs: int = 1,
    command: str | None = None,
    echo: Echo = print,
    cores: int | None = None,
    report: bool = True,
    probe: bool = True,
    only: tuple[str, ...] = (),
    reuse: Sequence[Path] = (),
) -> StudyRun:
    """Run every unfinished cell of ``spec`` (of those ``only`` names: labels or
    ``label/seedK``, see :func:`~sat_toolkit.study.grid.select`), then write the report.

    A new cell whose exact recipe already finished under one of the ``reuse`` directories
    takes that run instead of training (:mod:`~sat_toolkit.study.reuse`).

    ``probe=False`` skips the timed probe behind the first estimate (see the module).

    Raises :class:`SatError` (after the report) when a cell failed, naming the cells and
    their logs. ``command`` is quoted in the report (default: this process's argv).
    """
    if jobs < 1:
        raise SatError(f"--jobs must be >= 1, got {jobs}")
    started = time.perf_counter()
    command = command or default_command()
    planned, reused = reuse_finished(plan(spec, only), reuse, command)
    todo = [p for p in planned if p.status in ("resume", "new")]
    workers = max(1, min(jobs, len(todo)))
    threads = threads_per_job(workers, cores)
    counts = {s: sum(p.status == s for p in planned) for s in ("done", "running", "resume", "new")}
    running = f"{counts['running']} running in another process, " if counts["running"] else ""
    copied = f" ({len(reused)} of them reused)" if reused else ""
    size = (
        f"{len(planned)} of {len(cells(spec))} cells (--only {' '.join(only)})"
        if only
        else f"{len(planned)} cells ({len(planned) // len(spec.seeds)} settings x {len(spec.seeds)} seeds)"
    )
    echo(
        f"study {spec.name}: {size} in {spec.output_dir}; {counts['done']} finished{copied}, {running}"
        f"{counts['resume']} to resume, {counts['new']} new; {workers} job(s) x {threads} torch thread(s)"
    )
    if crowded := oversubscribed(workers, cores or available_cores()):
        echo(f"warning: {crowded}")
    slow = {emulated_bf16_warning(p.recipe.optimizer.mixed_precision) for p in todo} - {None}
    for warning in slow:
        echo(f"warning: {warning}")
    for p in planned:
        if p.cell.key in reused:
            origin = reused[p.cell.key]
            echo(f"reused   {p.cell.label} seed {p.cell.seed} (the same recipe, trained in {origin})")
        elif p.status == "done":
            echo(f"skipped  {p.cell.label} seed {p.cell.seed} (finished)")
        elif p.status == "running":
            echo(f"skipped  {p.cell.label} seed {p.cell.seed} (another process is running it)")
    if not todo:  # nothing to run: the ledger records invocations that ran cells only
        written = write_report(spec, echo=echo) if report else None
        return StudyRun(planned, [], written, time.perf_counter() - started)
    ledger = Ledger(spec.output_dir)
    ledger.refuse_if_damaged()  # before any cell trains
    logs = spec.output_dir / LOG_DIR
    if logs.exists() and not logs.is_dir():
        raise SatError(f"{logs} is not a directory; the study writes each cell's log in it: move it away")
    # before this invocation adds to it; only cells timed on this kind of machine and threads
    machine = hardware()
    eta = StudyEta.from_ledger(
        ledger.data["cells"], workers, ledger.invocations, pace=pace_of(machine, threads)
    )
    eta.trained = {p.cell.key: p.trained for p in todo if p.trained}
    for cell in cells(spec):
        if cell.key in eta.measured and (seconds := evaluation_seconds(read_metrics(cell.run_dir))):
            eta.evaluated[cell.key] = seconds
    lines, uneven = first_estimate(eta, study_recipes(spec, planned), todo, threads, probe=probe)
    for line in lines:
        echo(line)
    ledger.start_invocation(command, workers, threads, machine)
    outcomes: list[CellOutcome] = []
    attempts: dict[str, dict[str, Any]] = {}  # the ledger's records of the cells running now
    started_keys: set[str] = set()

    def begin(index: int, p: PlannedCell) -> CellTask:
        started_keys.add(p.cell.key)
        attempts[p.cell.key] = ledger.begin_attempt(p.cell.key, resumed_from_step=p.step, threads=threads)
        how = f"resuming from {p.resume_point}" if p.status == "resume" else "new"
        echo(
            f"[{index:>{len(str(len(todo)))}}/{len(todo)}] started  {p.cell.label} seed {p.cell.seed} ({how})"
        )
        return CellTask(p.cell.key, p.recipe.to_dict(), threads, str(p.cell.log_path))

    def end(index: int, p: PlannedCell, outcome: CellOutcome) -> None:
        outcomes.append(outcome)
        attempt = attempts.pop(p.cell.key)
        prefix = f"[{index:>{len(str(len(todo)))}}/{len(todo)}]"
        if outcome.elsewhere:
            ledger.drop_attempt(attempt)
            echo(f"{prefix} skipped  {p.cell.label} seed {p.cell.seed}: another process {outcome.elsewhere}")
            return
        ended = {"outcome": "failed", "error": outcome.error} if outcome.error else {"outcome": "finished"}
        ledger.end_attempt(attempt, seconds=round(outcome.seconds, 2), **ended)
        if outcome.error:
            echo(
                f"{prefix} FAILED   {p.cell.label} seed {p.cell.seed} after {outcome.seconds:.1f} s: "
                f"{outcome.error} (log: {p.cell.log_path})"
            )
        else:
            echo(
                f"{prefix} finished {p.cell.label} seed {p.cell.seed} in {outcome.seconds:.1f} s: "
                f"clean {_fmt(outcome.clean_accuracy)}, robust {_fmt(outcome.robust_accuracy)}"
            )
            if p.status == "new":  # a resumed cell ran only part of the work
                eta.record(p.cell.key, outcome.seconds, evaluation_seconds(read_metrics(p.cell.run_dir)))
        waiting = [q.cell.key for q in todo if q.cell.key not in started_keys]
        if line := eta.describe(waiting, ledger.running_for()):
            echo(f"{prefix} {line}{uneven}")

    with ledger.heartbeat():
        if workers == 1:
            _run_here(todo, threads, begin, end)
        else:
            _run_pool(todo, workers, threads, begin, end)

    finished_any = any(read_metrics(p.cell.run_dir) is not None for p in planned)
    written = write_report(spec, echo=echo) if report and finished_any else None
    result = StudyRun(planned, outcomes, written, time.perf_counter() - started)
    elsewhere = {o.key for o in result.elsewhere} | {p.cell.key for p in planned if p.status == "running"}
    if left := [
        p.cell.key for p in planned if p.cell.key in elsewhere and read_metrics(p.cell.run_dir) is None
    ]:
        echo(
            f"{len(left)} cell(s) left to the other process running them ({', '.join(left)}); "
            "once they finish, --report-only reports them"
        )
    if result.failed:
        keys = ", ".join(o.key for o in result.failed)
        raise SatError(
            f"{len(result.failed)} of {len(todo)} cells failed ({keys}); see their logs in "
            f"{spec.output_dir / LOG_DIR}; fix and run the study again to retry only those"
        )
    return result


def _run_here(
    todo: list[PlannedCell],
    threads: int,
    begin: Callable[[int, PlannedCell], CellTask],
    end: Callable[[int, PlannedCell, CellOutcome], None],
) -> None:
    """Sequentially, in this process, with the thread count restored afterwards."""
    with torch_threads(threads):
        for index, p in enumerate(todo, 1):
            end(index, p, execute_cell(begin(index, p)))


def _run_pool(
    todo: list[PlannedCell],
    workers: int,
    threads: int,
    begin: Callable[[int, PlannedCell], CellTask],
    end: Callable[[int, PlannedCell, CellOutcome], None],
) -> None:
    """Side by side in spawned processes; a cell is submitted only when a worker is free,
    so "started" is printed when it really starts."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    def new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(threads,),
        )

    queue = deque(enumerate(todo, 1))
    running: dict[Future[CellOutcome], tuple[int, PlannedCell, float]] = {}
    pool = new_pool()
    try:
        while queue or running:
            while queue and len(running) < workers:
                index, p = queue.popleft()
                task = begin(index, p)
                with _workers_start_deaf():  # the pool starts a worker on submit when it needs one
                    future = pool.submit(execute_cell, task)
                running[future] = (index, p, time.perf_counter())
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                index, p, submitted = running.pop(future)
                try:
                    outcome = future.result()
                except BrokenProcessPool as exc:  # a worker died (killed, out of memory)
                    died_after = time.perf_counter() - submitted
                    outcome = CellOutcome(p.cell.key, died_after, error=f"worker process died: {exc}")
                end(index, p, outcome)
            if any(isinstance(f.exception(), BrokenProcessPool) for f in done if not f.cancelled()):
                pool.shutdown(wait=False)  # its other cells failed with it; carry on with a fresh pool
                pool = new_pool()
    except BaseException:
        # Ctrl-C or an error here: stop the cells now. A worker is not left to finish its
        # cell (or to start one it already took); its run resumes from its last checkpoint.
        processes = list((getattr(pool, "_processes", None) or {}).values())  # no public handle
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(timeout=30)
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
