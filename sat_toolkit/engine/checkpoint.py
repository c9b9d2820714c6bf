"""Crash-safe checkpoints on top of ``Accelerator.save_state`` / ``load_state``.

A checkpoint is written to a temporary sibling directory and renamed into place only when
complete, so a run killed mid-write never leaves a half checkpoint that ``--resume`` would
pick up. Checkpoints are named by global optimiser step (``step-00001234``); the newest
complete one wins.

Accelerate writes the model (safetensors), the optimiser and the RNG states (torch files it
reads back with ``weights_only=True``). Our own state is written beside them as
``train_state.json`` and ``ema.safetensors``, never as a pickle: accelerate reads registered
objects with ``torch.load(weights_only=False)``, so a crafted checkpoint could run code on
``--resume``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accelerate import Accelerator

from sat_toolkit.errors import SatError

if TYPE_CHECKING:
    from sat_toolkit.engine.ema import WeightEMA

CHECKPOINT_DIR = "checkpoints"
TRAIN_STATE_FILE = "train_state.json"
TRAIN_STATE_FORMAT = 1
_NAME = re.compile(r"^step-(\d{8})$")
_COUNTERS = ("epoch", "step_in_epoch", "global_step", "batches_seen")


@dataclasses.dataclass
class TrainState:
    """Where the run is and what it has measured so far: saved with every checkpoint, so a
    resume lands on the same batch and ``metrics.json`` still lists every validation.
    """

    epoch: int = 0
    step_in_epoch: int = 0  # batches of the current epoch already consumed
    global_step: int = 0  # optimiser steps taken
    batches_seen: int = 0  # micro-batches consumed (differs with gradient accumulation)
    last_loss: float = float("nan")
    # One entry per validation ({"epoch", "step", "samples", "clean_accuracy", ...}).
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def to_json(self) -> str:
        # NaN (no loss yet, no attack to validate with) is written as JSON's common NaN extension.
        return json.dumps({"format": TRAIN_STATE_FORMAT, **dataclasses.asdict(self)}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, path: Path) -> TrainState:
        """Parse and type-check ``train_state.json``; a bad file is a one-line :class:`SatError`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise _bad_state(path, f"not JSON ({error})") from error
        if not isinstance(data, dict):
            raise _bad_state(path, f"expected a JSON object, found {type(data).__name__}")
        if data.get("format") != TRAIN_STATE_FORMAT:
            raise _bad_state(path, f"format is {data.get('format')!r}, expected {TRAIN_STATE_FORMAT}")
        expected = {"format", *(field.name for field in dataclasses.fields(cls))}
        if set(data) != expected:
            missing, unknown = sorted(expected - set(data)), sorted(set(data) - expected)
            raise _bad_state(path, f"missing keys {missing}, unknown keys {unknown}")
        for key in _COUNTERS:
            if not _is_int(data[key]) or data[key] < 0:
                raise _bad_state(path, f"{key} must be a non-negative integer, found {data[key]!r}")
        if not _is_number(data["last_loss"]):
            raise _bad_state(path, f"last_loss must be a number, found {data['last_loss']!r}")
        history = data["history"]
        if not isinstance(history, list):
            raise _bad_state(path, f"history must be a list, found {type(history).__name__}")
        for index, entry in enumerate(history):
            problem = _history_problem(entry)
            if problem:
                raise _bad_state(path, f"history[{index}] {problem}")
        return cls(
            epoch=data["epoch"],
            step_in_epoch=data["step_in_epoch"],
            global_step=data["global_step"],
            batches_seen=data["batches_seen"],
            last_loss=float(data["last_loss"]),
            history=history,
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _history_problem(entry: Any) -> str | None:
    """What is wrong with one validation record, or None."""
    if not isinstance(entry, dict):
        return f"must be an object, found {type(entry).__name__}"
    for key in ("epoch", "step"):
        if not _is_int(entry.get(key)):
            return f"{key} must be an integer, found {entry.get(key)!r}"
    for key, value in entry.items():
        if not (value is None or isinstance(value, (str, bool)) or _is_number(value)):
            return f"{key} must be a number, string, boolean or null, found {type(value).__name__}"
    return None


def _bad_state(path: Path, problem: str) -> SatError:
    return SatError(
        f"{path}: {problem}; the checkpoint is damaged: delete {path.parent} to resume from the "
        "checkpoint before it, or start afresh in a new run.output_dir"
    )


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


def save_checkpoint(
    accelerator: Accelerator,
    run_dir: Path,
    state: TrainState,
    keep_last: int = 2,
    ema: WeightEMA | None = None,
) -> Path:
    """Write a checkpoint atomically and prune old ones; every process must call this.

    The train state and the EMA go into the temporary directory before the rename, so a
    checkpoint that ``--resume`` can see always holds them.
    """
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
        # Every rank holds the same train state and EMA (DDP keeps the weights in sync).
        (temporary / TRAIN_STATE_FILE).write_text(state.to_json(), encoding="utf-8")
        if ema is not None:
            ema.save(temporary)
        if final.exists():  # same step saved twice (epoch end right after a periodic save)
            shutil.rmtree(final)
        os.replace(temporary, final)
        _fsync_dir(root)
        for old in list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def read_train_state(checkpoint: Path) -> TrainState:
    """The validated ``train_state.json`` of a checkpoint directory."""
    path = Path(checkpoint) / TRAIN_STATE_FILE
    if not path.is_file():
        if any(Path(checkpoint).glob("custom_checkpoint_*.pkl")):
            raise SatError(
                f"{path}: missing; {checkpoint} was written by an older sat-toolkit that pickled the "
                "train state, which this version does not load (a pickle can run code): resume it "
                "with the version that wrote it, or start afresh in a new run.output_dir"
            )
        raise SatError(
            f"{path}: missing, so {checkpoint} cannot say where the run stopped: delete {checkpoint} "
            "to resume from the checkpoint before it, or start afresh in a new run.output_dir"
        )
    return TrainState.from_json(path.read_text(encoding="utf-8"), path)


def load_checkpoint(accelerator: Accelerator, checkpoint: Path, ema: WeightEMA | None = None) -> TrainState:
    """Load weights, optimiser, RNG (accelerate) and the EMA; return the train state.

    The train state is read and checked first, so a damaged checkpoint is refused before
    anything is overwritten.
    """
    state = read_train_state(checkpoint)
    if ema is not None:
        ema.load(checkpoint)
    accelerator.load_state(str(checkpoint))
    return state


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
