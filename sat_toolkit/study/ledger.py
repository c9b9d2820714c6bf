"""``<output_dir>/study.json``: what was run, when, how long it took and on what machine.

The run directories say *what* each cell computed; the ledger says how the study got
there: every invocation (exact command, jobs, threads, hardware, wall time) and every
attempt at every cell (seconds, outcome, the step it resumed from). The report's header
(total wall time, hardware, command) is read from here, so ``--report-only`` on another
machine still reports the machine the runs were made on. Only the study's main process
writes it, atomically.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

LEDGER_FILE = "study.json"


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
    """The study's record of invocations and cell attempts, saved after every change."""

    def __init__(self, output_dir: Path) -> None:
        self.path = Path(output_dir) / LEDGER_FILE
        self.data: dict[str, Any] = {"invocations": [], "cells": {}}
        if self.path.is_file():
            try:
                loaded = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                loaded = None  # a damaged ledger only costs the timing history
            if isinstance(loaded, dict):
                self.data.update(loaded)

    @property
    def invocations(self) -> list[dict[str, Any]]:
        return self.data["invocations"]

    def attempts(self, key: str) -> list[dict[str, Any]]:
        return self.data["cells"].get(key, [])

    def start_invocation(self, command: str, jobs: int, threads: int) -> dict[str, Any]:
        entry = {
            "command": command,
            "started": now(),
            "seconds": 0.0,
            "jobs": jobs,
            "threads_per_job": threads,
            "hardware": hardware(),
            "cells_run": 0,
        }
        self.invocations.append(entry)
        self.save()
        return entry

    def record_attempt(self, key: str, attempt: dict[str, Any]) -> None:
        self.data["cells"].setdefault(key, []).append({**attempt, "ended": now()})
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{LEDGER_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n", encoding="utf-8")
        tmp.replace(self.path)
