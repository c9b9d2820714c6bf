"""Crash-safe checkpoints on top of ``Accelerator.save_state`` / ``load_state``.

A checkpoint is written to a temporary sibling directory and renamed into place only when
complete, so a run killed mid-write never leaves a half checkpoint that ``--resume`` would
pick up. Checkpoints are named by global optimiser step (``step-00001234``); the newest
complete one wins.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from pathlib import Path
from typing import Any

from accelerate import Accelerator

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d{8})$")


@dataclasses.dataclass
class TrainState:
    """Where the run is: saved with every checkpoint so a resume lands on the same batch."""

    epoch: int = 0
    step_in_epoch: int = 0  # batches of the current epoch already consumed
    global_step: int = 0  # optimiser steps taken
    batches_seen: int = 0  # micro-batches consumed (differs with gradient accumulation)
    last_loss: float = float("nan")

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def checkpoint_root(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary directories are ignored)."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def latest_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def save_checkpoint(accelerator: Accelerator, run_dir: Path, state: TrainState, keep_last: int = 2) -> Path:
    """Write a checkpoint atomically and prune old ones; every process must call this."""
    root = checkpoint_root(run_dir)
    final = root / f"step-{state.global_step:08d}"
    temporary = root / f".tmp-step-{state.global_step:08d}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():  # same step saved twice (epoch end right after a periodic save)
            shutil.rmtree(final)
        os.replace(temporary, final)
        _fsync_dir(root)
        for old in list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
