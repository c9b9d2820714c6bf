"""``<output_dir>/study.json``: what was run, when, how long it took and on what machine.

The run directories say *what* each cell computed; the ledger says how the study got
there: every invocation (exact command, jobs, threads, hardware, wall time) and every
attempt at every cell (seconds, outcome, the step it resumed from). The report's header
(total wall time, hardware, command) is read from here, so ``--report-only`` on another
machine still reports the machine the runs were made on. Only an invocation's main
process writes it, atomically, merging its records into those other invocations of the
same study wrote meanwhile.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import platform
import uuid
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no flock; concurrent invocations may then lose records
    fcntl = None  # type: ignore[assignment]

LEDGER_FILE = "study.json"
LOCK_FILE = ".study.json.lock"


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


def hardware() -> dict[str, Any]:
    """What the report states about the machine: CPU, cores, torch and Python versions."""
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "unknown"
    return {
        "cpu": cpu_model(),
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
        self.data: dict[str, Any] = self._read()
        self.id = uuid.uuid4().hex[:12]  # this invocation's, on every record it adds
        self._invocation: dict[str, Any] | None = None
        self._attempts: list[tuple[str, dict[str, Any]]] = []

    def _read(self) -> dict[str, Any]:
        data: dict[str, Any] = {"invocations": [], "cells": {}}
        if self.path.is_file():
            try:
                loaded = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                loaded = None  # a damaged ledger only costs the timing history
            if isinstance(loaded, dict):
                data.update(loaded)
        return data

    @property
    def invocations(self) -> list[dict[str, Any]]:
        return self.data["invocations"]

    def attempts(self, key: str) -> list[dict[str, Any]]:
        return self.data["cells"].get(key, [])

    def start_invocation(self, command: str, jobs: int, threads: int) -> dict[str, Any]:
        """This invocation's entry; the caller updates it in place and saves."""
        self._invocation = {
            "id": self.id,
            "command": command,
            "started": now(),
            "seconds": 0.0,
            "jobs": jobs,
            "threads_per_job": threads,
            "hardware": hardware(),
            "cells_run": 0,
        }
        self.save()
        return self._invocation

    def record_attempt(self, key: str, attempt: dict[str, Any]) -> None:
        self._attempts.append((key, {**attempt, "ended": now(), "invocation": self.id}))
        self.save()

    def save(self) -> None:
        """Merge this invocation's records into the file as it is now, atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            data = self._read()
            if self._invocation is not None:  # replaced where an earlier save put it, else appended
                invocations = data["invocations"]
                ids = [entry.get("id") for entry in invocations]
                if self.id in ids:
                    invocations[ids.index(self.id)] = self._invocation
                else:
                    invocations.append(self._invocation)
            for key, attempt in self._attempts:  # appended once, in the order they ended
                if attempt not in data["cells"].setdefault(key, []):
                    data["cells"][key].append(attempt)
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
