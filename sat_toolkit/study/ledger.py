"""``<output_dir>/study.json``: what was run, when, how long it took and on what machine.

The run directories say *what* each cell computed; the ledger says how the study got
there: every invocation (exact command, jobs, threads, hardware, wall time) and every
attempt at every cell (seconds, outcome, the step it resumed from). The report's header
(total wall time, hardware, command) is read from here, so ``--report-only`` on another
machine still reports the machine the runs were made on. Only an invocation's main
process writes it, atomically, merging its records into those other invocations of the
same study wrote meanwhile.

A study is usually stopped by killing it (a session ends, a machine is taken back), and a
killed process runs no cleanup. So an attempt is on record from the moment it starts, as
``interrupted``, and a heartbeat rewrites the invocation's and the running attempts'
seconds every minute: what a kill leaves on disk is the truth to within that minute,
instead of an invocation of 0 s and no trace of the hours its cells ran.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import platform
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no flock; concurrent invocations may then lose records
    fcntl = None  # type: ignore[assignment]

from sat_toolkit.errors import SatError, first_line
from sat_toolkit.parsing import loads_json

LEDGER_FILE = "study.json"
LOCK_FILE = ".study.json.lock"
#: How often a running invocation rewrites its seconds (the most a kill can lose).
HEARTBEAT_SECONDS = 60.0
#: An attempt's outcome while it runs, and for good if its process is killed.
INTERRUPTED = "interrupted"


def available_cores() -> int:
    """CPU cores this process may use (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU's marketing name, e.g. 'Intel(R) Xeon(R) Processor'; best effort."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_features() -> str:
    """The vector units that set a CPU's training speed, e.g. 'AVX512, native bf16'.

    A VM often names its CPU only 'AMD EPYC', which does not tell a Zen 1 from a Zen 4,
    whose fp32 steps of the Fashion-MNIST small_cnn differ 2.6x (and bf16 is emulated on
    the one, native on the other): a study's wall time means little without this.
    """
    import torch

    from sat_toolkit.devices import native_bf16

    bf16 = "native bf16" if native_bf16(torch.device("cpu")) else "no native bf16"
    return f"{torch.backends.cpu.get_cpu_capability()}, {bf16}"


def hardware() -> dict[str, Any]:
    """What the report states about the machine: CPU, cores, torch and Python versions."""
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "unknown"
    return {
        "cpu": cpu_model(),
        "cpu_features": cpu_features(),
        "cores": available_cores(),
        "torch": torch_version,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class Ledger:
    """The study's record of invocations and cell attempts, saved after every change.

    Several invocations may run one study at once (two terminals, or two machines sharing
    the output directory): each saves by merging its own records into what is on disk,
    under a lock, so none overwrites another's. An invocation's records carry its ``id``.
    """

    def __init__(self, output_dir: Path) -> None:
        self.path = Path(output_dir) / LEDGER_FILE
        #: Why the file on disk is not a ledger, or None: a report then does without the
        #: timing history, and the runner refuses to write over it (its records would go).
        self.damaged: str | None = None
        self.data: dict[str, Any] = self._read()
        self.id = uuid.uuid4().hex[:12]  # this invocation's, on every record it adds
        self._invocation: dict[str, Any] | None = None
        self._attempts: list[tuple[str, dict[str, Any]]] = []
        self._running: dict[int, float] = {}  # number of an attempt still running -> its start (perf_counter)
        self._started = time.perf_counter()
        self._begun = 0  # attempts this invocation began: the next one's number
        self._mutex = threading.Lock()  # the heartbeat thread saves too

    def _read(self) -> dict[str, Any]:
        data: dict[str, Any] = {"invocations": [], "cells": {}}
        if not self.path.exists():
            return data
        try:
            loaded = loads_json(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            self.damaged = first_line(error)
            return data
        self.damaged = _shape_problem(loaded)
        if self.damaged is None:
            data.update(loaded)
        return data

    def refuse_if_damaged(self) -> None:
        """Stop before a run would replace a damaged ledger, and say how to go on."""
        if self.damaged:
            raise SatError(
                f"{self.path} is damaged ({self.damaged}); running the study would replace it and "
                "lose its records: restore it, or move it away to start a new record (the report's "
                "wall time and the time estimates then forget the earlier invocations)"
            )

    @property
    def invocations(self) -> list[dict[str, Any]]:
        return self.data["invocations"]

    def attempts(self, key: str) -> list[dict[str, Any]]:
        return self.data["cells"].get(key, [])

    def start_invocation(
        self, command: str, jobs: int, threads: int, machine: dict[str, Any] | None = None
    ) -> None:
        """Put this invocation on record; every save brings its seconds up to date.
        ``machine``: :func:`hardware`, where the caller has read it already."""
        self._started = time.perf_counter()
        self._invocation = {
            "id": self.id,
            "command": command,
            "started": now(),
            "seconds": 0.0,
            "jobs": jobs,
            "threads_per_job": threads,
            "hardware": machine or hardware(),
            "cells_run": 0,
        }
        self.save()

    def begin_attempt(self, key: str, **fields: Any) -> dict[str, Any]:
        """Put an attempt on record as it starts (``interrupted`` until :meth:`end_attempt`)."""
        attempt = {
            **fields,
            "outcome": INTERRUPTED,
            "seconds": 0.0,
            "started": now(),
            "invocation": self.id,
        }
        with self._mutex:
            self._begun += 1
            attempt["attempt"] = self._begun  # with the invocation id, its name in the merge
            self._attempts.append((key, attempt))
            self._running[self._begun] = time.perf_counter()
        self.save()
        return attempt

    def end_attempt(self, attempt: dict[str, Any], **fields: Any) -> None:
        """Record how an attempt ended (``outcome``, ``seconds`` and what else it reports)."""
        with self._mutex:
            self._running.pop(attempt["attempt"], None)
            attempt.update(fields, ended=now())
            if self._invocation is not None:
                self._invocation["cells_run"] += 1
        self.save()

    def drop_attempt(self, attempt: dict[str, Any]) -> None:
        """Take back an attempt that did not run here (another process had the cell)."""
        with self._mutex:
            self._running.pop(attempt["attempt"], None)
            self._attempts = [(key, a) for key, a in self._attempts if a is not attempt]
        self.save()

    def running_for(self) -> dict[str, float]:
        """Cell key -> seconds its attempt still running has run so far (for the study's time left)."""
        clock = time.perf_counter()
        with self._mutex:
            return {
                key: clock - self._running[attempt["attempt"]]
                for key, attempt in self._attempts
                if attempt["attempt"] in self._running
            }

    @contextlib.contextmanager
    def heartbeat(self) -> Iterator[None]:
        """Save every ``HEARTBEAT_SECONDS`` while the block runs, so a kill loses at most that."""
        stop = threading.Event()

        def beat() -> None:
            # Ctrl-C must land on the main thread, which stops the study. The kernel hands it
            # to any thread that does not block it (the main one blocks it while a worker
            # starts); landed here, it only flagged the main thread, asleep waiting for a
            # cell, and under load a study once ran to its end and exited 0 after a Ctrl-C.
            if hasattr(signal, "pthread_sigmask"):
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            while not stop.wait(HEARTBEAT_SECONDS):
                self.save()

        thread = threading.Thread(target=beat, name="study-ledger-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.save()

    def save(self) -> None:
        """Merge this invocation's records, with their seconds so far, into the file as it is now."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._mutex, self._locked():
            clock = time.perf_counter()
            for _, attempt in self._attempts:
                if attempt["attempt"] in self._running:
                    attempt["seconds"] = round(clock - self._running[attempt["attempt"]], 2)
            data = self._read()
            if self._invocation is not None:  # replaced where an earlier save put it, else appended
                self._invocation["seconds"] = round(clock - self._started, 2)
                invocations = data["invocations"]
                ids = [entry.get("id") for entry in invocations]
                if self.id in ids:
                    invocations[ids.index(self.id)] = self._invocation
                else:
                    invocations.append(self._invocation)
            ours = {attempt["attempt"]: attempt for _, attempt in self._attempts}
            placed = set()
            for key in list(data["cells"]):  # ours replaced where an earlier save put them; taken back: gone
                records = []
                for record in data["cells"][key]:
                    if record.get("invocation") != self.id:
                        records.append(record)
                    elif record.get("attempt") in ours:
                        records.append(ours[record["attempt"]])
                        placed.add(record["attempt"])
                data["cells"][key] = records
                if not records:
                    del data["cells"][key]
            for key, attempt in self._attempts:  # the rest appended, in the order they began
                if attempt["attempt"] not in placed:
                    data["cells"].setdefault(key, []).append(attempt)
            tmp = self.path.with_name(f".{LEDGER_FILE}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
            tmp.replace(self.path)
            self.data = data

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold ``.study.json.lock`` while reading and replacing the ledger (no-op without flock)."""
        if fcntl is None:
            yield
            return
        with open(self.path.with_name(LOCK_FILE), "a", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _shape_problem(loaded: Any) -> str | None:
    """What makes decoded JSON not a ledger (invocations and cell attempts), or None."""
    if not isinstance(loaded, dict):
        return f"a JSON {type(loaded).__name__}, not an object"
    invocations, cells = loaded.get("invocations", []), loaded.get("cells", {})
    if not isinstance(invocations, list) or not all(isinstance(i, dict) for i in invocations):
        return "'invocations' is not a list of objects"
    if not isinstance(cells, dict) or not all(
        isinstance(tried, list) and all(isinstance(a, dict) for a in tried) for tried in cells.values()
    ):
        return "'cells' is not an object of attempt lists"
    for index, invocation in enumerate(invocations):
        problem = _fields_problem(invocation, _INVOCATION_FIELDS, required=True)
        problem = problem or _fields_problem(invocation["hardware"], _HARDWARE_FIELDS, required=True)
        if problem:
            return f"invocations[{index}]{problem}"
    for key, tried in cells.items():
        for index, attempt in enumerate(tried):
            problem = _fields_problem(attempt, _ATTEMPT_FIELDS, required=False)
            if problem:
                return f"cells.{key}[{index}]{problem}"
    return None


def _seconds(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < math.inf


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _text(value: Any) -> bool:
    return isinstance(value, str)


#: What the report and the estimates read from each record, and what each must be: a hand
#: edit ("seconds": "fast", NaN) crashed ``--report-only`` with a TypeError before.
_INVOCATION_FIELDS = {
    "command": (_text, "a string"),
    "started": (_text, "a string"),
    "seconds": (_seconds, "a number of seconds"),
    "jobs": (_count, "a count"),
    "threads_per_job": (_count, "a count"),
    "hardware": (lambda value: isinstance(value, dict), "an object"),
}
_HARDWARE_FIELDS = {
    "cpu": (_text, "a string"),
    "cores": (_count, "a count"),
    "torch": (_text, "a string"),
    "python": (_text, "a string"),
}
_ATTEMPT_FIELDS = {"seconds": (_seconds, "a number of seconds"), "outcome": (_text, "a string")}


def _fields_problem(record: dict[str, Any], fields: dict[str, Any], *, required: bool) -> str | None:
    """``.key is ...`` for the first field of ``record`` that is not what ``fields`` says."""
    for key, (valid, what) in fields.items():
        if key not in record:
            if required:
                return f" has no '{key}'"
            continue
        if not valid(record[key]):
            return f".{key} is {record[key]!r}, not {what}"
    return None


def wall_clock_seconds(invocations: list[dict[str, Any]]) -> float:
    """Wall time the invocations covered together: overlapping ones (run side by side) count once."""
    spans = []
    for entry in invocations:
        try:
            start = datetime.datetime.fromisoformat(entry["started"]).timestamp()
        except (KeyError, TypeError, ValueError):
            continue
        spans.append((start, start + float(entry.get("seconds", 0.0))))
    total, reach = 0.0, -math.inf
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total
