"""Crash-safe checkpoints on top of ``Accelerator.save_state`` / ``load_state``.

A checkpoint is written to a temporary sibling directory and renamed into place only when
complete, so a run killed mid-write never leaves a half checkpoint that ``--resume`` would
pick up. Checkpoints are named by global optimiser step (``step-00001234``); the newest
complete one wins.

Accelerate writes the model (safetensors), the optimiser and the lr scheduler (torch files
it reads back with ``weights_only=True``; the scheduler's holds only its step and rates).
Everything else is written as data only: ``train_state.json``, ``ema.safetensors`` and
each process's ``rng_state_N.json`` (which replaces accelerate's pickled
``random_states_N.pkl``; :mod:`sat_toolkit.engine.rng`). Registered objects (accelerate's
``custom_checkpoint_N.pkl``) would be read with ``torch.load(weights_only=False)``, so a
crafted checkpoint could run code on ``--resume``; nothing is registered that way.

Three more guarantees, because a checkpoint is only worth resuming from if it is intact
and finite:

* ``manifest.json`` (every file's size and sha256) is written last, inside the temporary
  directory, so it exists only when every file it names is complete. :func:`checkpoint_problem`
  checks it and then that every file loads as plain data (safetensors parsed and finite,
  torch files through accelerate's ``weights_only=True`` loader, the JSON validated); a
  resume skips a damaged checkpoint for the newest intact one. The manifest catches damage,
  not an attacker (who can rewrite it): the loads are what keep a crafted file harmless.
* :func:`save_checkpoint` refuses (:class:`NonFiniteStateError`) to write weights, buffers
  (BatchNorm's ``running_var`` overflows before any loss turns NaN), optimiser state or EMA
  holding NaN or inf, so every checkpoint on disk can be resumed from.
* Pruning by ``keep_last`` never removes the checkpoint the trainer still names as good.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pickle
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from accelerate import Accelerator
from accelerate.utils.constants import OPTIMIZER_NAME, SAFE_WEIGHTS_NAME, SCHEDULER_NAME

from sat_toolkit.engine.ema import EMA_FILE
from sat_toolkit.engine.rng import load_rng_state, rng_state_problem, save_rng_state
from sat_toolkit.errors import SatError, first_line
from sat_toolkit.parsing import loads_json
from sat_toolkit.recipe.rundir import CHECKPOINT_DIR, as_umask_allows

if TYPE_CHECKING:
    from sat_toolkit.engine.ema import WeightEMA
    from sat_toolkit.recipe import Recipe

TRAIN_STATE_FILE = "train_state.json"
TRAIN_STATE_FORMAT = 2  # 2: the divergence guard's reference and warning step
MANIFEST_FILE = "manifest.json"
#: The recipe the checkpoint was trained with (a run's own recipe.toml may be edited since).
RECIPE_COPY = "recipe.toml"
MANIFEST_FORMAT = 1
# The names Accelerator.save_state gives one model, optimiser and scheduler.
MODEL_FILE = SAFE_WEIGHTS_NAME
OPTIMIZER_FILE = f"{OPTIMIZER_NAME}.bin"
SCHEDULER_FILE = f"{SCHEDULER_NAME}.bin"
# Files every checkpoint of this engine holds (one model, one optimiser, one lr scheduler,
# rank 0's RNG state).
REQUIRED_FILES = (MODEL_FILE, OPTIMIZER_FILE, SCHEDULER_FILE, "rng_state_0.json", TRAIN_STATE_FILE)
DAMAGED_PREFIX = "damaged-"
_NAME = re.compile(r"^step-(\d{8})$")
_COUNTERS = ("epoch", "step_in_epoch", "global_step", "batches_seen", "divergence_warned_at")
_HASH_CHUNK = 1 << 20


class NonFiniteStateError(SatError):
    """The state to checkpoint holds NaN or inf; nothing is written, older checkpoints stay."""


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
    # The divergence guard's early loss windows and the step it warned at (0 = not yet), so a
    # resumed run compares with the same early level and does not warn twice.
    loss_reference: list[float] = dataclasses.field(default_factory=list)
    divergence_warned_at: int = 0

    def to_json(self) -> str:
        # NaN (no loss yet, no attack to validate with) is written as JSON's common NaN extension.
        return json.dumps({"format": TRAIN_STATE_FORMAT, **dataclasses.asdict(self)}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, path: Path) -> TrainState:
        """Parse and type-check ``train_state.json``; a bad file is a one-line :class:`SatError`."""
        try:
            data = loads_json(text)
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
        reference = data["loss_reference"]
        if not isinstance(reference, list) or not all(
            _is_number(value) and math.isfinite(value) for value in reference
        ):
            raise _bad_state(path, f"loss_reference must be a list of finite numbers, found {reference!r}")
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
            loss_reference=[float(value) for value in reference],
            divergence_warned_at=data["divergence_warned_at"],
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


def run_length(checkpoint: Path, recipe: Recipe) -> int | None:
    """How many optimiser steps the run ``checkpoint`` belongs to trains for in all, or None
    where that cannot be told without loading the data.

    For a study's time left, which must not count a cell resumed near its end as a whole
    one: ``train.steps`` where the recipe sets it, else ``train.epochs`` times the steps of
    an epoch, which the checkpoint's counters give once a whole epoch has passed (its
    batches seen, less those of the epoch under way, over the epochs done). None before
    that, and for a ``train_state.json`` that is missing or damaged (the resume itself says
    what is wrong with it).
    """
    if recipe.train.steps > 0:
        return recipe.train.steps
    path = Path(checkpoint) / TRAIN_STATE_FILE
    try:
        state = TrainState.from_json(path.read_text(), path)
    except (OSError, SatError):
        return None
    if state.epoch < 1:
        return None
    batches_per_epoch = (state.batches_seen - state.step_in_epoch) // state.epoch
    steps_per_epoch = recipe.optimizer.steps_per_epoch(batches_per_epoch)
    return recipe.train.total_steps(steps_per_epoch) if steps_per_epoch > 0 else None


def recipe_change(checkpoint: Path, recipe: Recipe) -> list[str]:
    """``key: checkpoint's -> recipe's`` for every run-relevant key in which ``recipe`` differs
    from the one ``checkpoint`` was trained with; empty where they agree or the checkpoint
    predates its copy. Resuming 40 epochs' checkpoints as a 5-epoch run re-sized the lr
    schedule without a word."""
    from sat_toolkit.parsing import loads_toml
    from sat_toolkit.recipe.rundir import as_read_back, differences

    path = Path(checkpoint) / RECIPE_COPY
    if not path.is_file():
        return []
    return differences(loads_toml(path.read_text(encoding="utf-8")), as_read_back(recipe))


def checkpoint_step(checkpoint: Path) -> int:
    """The optimiser step a checkpoint directory is named after."""
    match = _NAME.match(Path(checkpoint).name)
    if match is None:
        raise ValueError(f"{checkpoint} is not named step-XXXXXXXX")
    return int(match.group(1))


# -- finiteness ------------------------------------------------------------------------------
def _state_tensors(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, ema: WeightEMA | None
) -> Iterator[tuple[str, torch.Tensor]]:
    """Every floating tensor a checkpoint would hold, named as a user would look it up."""
    for name, tensor in model.state_dict().items():
        yield f"{MODEL_FILE}:{name}", tensor
    if ema is not None:
        for name, tensor in ema.module.state_dict().items():
            yield f"ema:{name}", tensor
    if optimizer is not None:
        for index, state in enumerate(optimizer.state_dict()["state"].values()):
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    yield f"{OPTIMIZER_FILE}:state[{index}].{key}", value


def first_non_finite(tensors: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the first tensor holding NaN or inf, or None; one host sync when all are finite."""
    named = [(name, t) for name, t in tensors if t.is_floating_point() or t.is_complex()]
    if not named:
        return None
    flags = torch.stack([torch.isfinite(t).all().to(named[0][1].device) for _, t in named])
    if bool(flags.all()):
        return None
    return named[int((~flags).nonzero()[0])][0]


def non_finite_state(
    accelerator: Accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    ema: WeightEMA | None = None,
) -> str | None:
    """The first non-finite tensor of the training state, or None; every process must call this.

    The verdict is agreed over all processes (a flag is summed), so either every rank saves
    or every rank stops: one rank alone raising would leave the others waiting forever.
    """
    name = first_non_finite(_state_tensors(model, optimizer, ema))
    flag = torch.tensor([0.0 if name is None else 1.0], device=accelerator.device)
    if float(accelerator.reduce(flag, reduction="sum")) == 0.0:
        return None
    return name or "a tensor on another process"


# -- writing ---------------------------------------------------------------------------------
def save_checkpoint(
    accelerator: Accelerator,
    run_dir: Path,
    state: TrainState,
    keep_last: int = 2,
    ema: WeightEMA | None = None,
    *,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    protect: Path | None = None,
    last_good: Path | None = None,
    recipe_toml: str | None = None,
) -> Path:
    """Write a checkpoint atomically and prune old ones; every process must call this.

    ``recipe_toml`` (the run's resolved recipe) is kept in the checkpoint as
    :data:`RECIPE_COPY`: the run directory's recipe.toml can be edited between a kill and
    ``--resume``, and the copy is what the resume holds it to (:func:`recipe_change`).

    The train state, the EMA and last the manifest go into the temporary directory before
    the rename, so a checkpoint that ``--resume`` can see always holds them. With ``model``
    (and ``optimizer``) given, a state holding NaN or inf is refused with
    :class:`NonFiniteStateError` before anything is written, naming ``last_good`` (default:
    the newest checkpoint). ``protect`` (the checkpoint from before a loss rise the caller
    may still have to name) survives pruning whatever ``keep_last`` says.
    """
    root = checkpoint_root(run_dir)
    final = root / f"step-{state.global_step:08d}"
    if model is not None:
        bad = non_finite_state(accelerator, model, optimizer, ema)
        if bad is not None:
            previous = last_good or latest_checkpoint(run_dir)
            kept = f"the last good checkpoint is {previous}" if previous else "no checkpoint was written"
            raise NonFiniteStateError(
                f"training stopped at step {state.global_step}: {bad} holds NaN or inf, so {final.name} "
                f"is not written ({kept}); lower optimizer.lr, or check the data and the attack's eps"
            )
    temporary = root / f".tmp-step-{state.global_step:08d}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    save_rng_state(temporary, accelerator.process_index)  # JSON in place of accelerate's pickle
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        # Every rank holds the same train state and EMA (DDP keeps the weights in sync).
        (temporary / TRAIN_STATE_FILE).write_text(state.to_json(), encoding="utf-8")
        if ema is not None:
            ema.save(temporary)
        if recipe_toml is not None:
            (temporary / RECIPE_COPY).write_text(recipe_toml, encoding="utf-8")
        for written in temporary.iterdir():
            if written.is_file():
                as_umask_allows(written)
        write_manifest(temporary)  # last: it vouches for every file written above
        if final.exists():  # same step saved twice (epoch end right after a periodic save)
            shutil.rmtree(final)
        os.replace(temporary, final)
        _fsync_dir(root)
        kept = list_checkpoints(run_dir)
        for old in kept[:-keep_last] if keep_last > 0 else []:
            if protect is None or old != Path(protect):
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(directory: Path) -> Path:
    """Record every file's size and sha256 in ``manifest.json`` (flushed to disk first)."""
    directory = Path(directory)
    files = {}
    for path in sorted(directory.iterdir()):
        if path.name == MANIFEST_FILE or path.name.startswith("."):
            continue
        with open(path, "rb") as handle:  # the data must be on disk before the manifest vouches for it
            os.fsync(handle.fileno())
        files[path.name] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    manifest = directory / MANIFEST_FILE
    manifest.write_text(
        json.dumps({"format": MANIFEST_FORMAT, "files": files}, indent=2, sort_keys=True) + "\n",
        encoding="utf-8",
    )
    with open(manifest, "rb") as handle:
        os.fsync(handle.fileno())
    return manifest


# -- checking --------------------------------------------------------------------------------
def checkpoint_problem(checkpoint: Path, expect_ema: bool) -> str | None:
    """What makes a checkpoint unsafe to resume from, in a few words, or None when intact.

    Reads only: the manifest must list exactly the files present with their sizes and
    hashes, every file this engine needs must be there, and every file must load as plain
    data (safetensors with finite tensors, torch files through accelerate's
    ``weights_only=True`` loader, the validated train state named after its step). A crafted
    pickle fails the load (an ``UnpicklingError``) without running.
    """
    checkpoint = Path(checkpoint)
    if checkpoint.is_symlink():  # the run would resume from, and prune, whatever it points at
        return "a symbolic link, not the run's own directory"
    problem = _manifest_problem(checkpoint)
    if problem:
        return problem
    required = [*REQUIRED_FILES, *([EMA_FILE] if expect_ema else [])]
    missing = [name for name in required if not (checkpoint / name).is_file()]
    if missing:
        return f"{missing[0]} is missing"
    for path in sorted(p for p in checkpoint.iterdir() if not p.name.startswith(".")):
        problem = _load_problem(path)
        if problem:
            return f"{path.name} {problem}"
    try:
        state = read_train_state(checkpoint)
    except SatError as error:
        return f"{TRAIN_STATE_FILE} is invalid ({error.message.split('; ')[0].split(': ', 1)[-1]})"
    if state.global_step != checkpoint_step(checkpoint):
        return f"{TRAIN_STATE_FILE} says step {state.global_step}, not {checkpoint_step(checkpoint)}"
    if state.epoch > state.global_step:  # every epoch takes at least one optimiser step
        return f"{TRAIN_STATE_FILE} says epoch {state.epoch} after only {state.global_step} steps"
    return None


def _manifest_problem(checkpoint: Path) -> str | None:
    path = checkpoint / MANIFEST_FILE
    if not path.is_file():
        return f"{MANIFEST_FILE} is missing (an incomplete checkpoint, or written by an older sat-toolkit)"
    try:
        manifest = loads_json(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return f"{MANIFEST_FILE} is not JSON"
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return f"{MANIFEST_FILE} is not a format-{MANIFEST_FORMAT} manifest"
    # Hidden files are the file system's or a file browser's (.DS_Store, NFS's .nfsXXXX), never
    # the engine's and never read by accelerate: they do not make a checkpoint damaged.
    present = {
        p.name: p for p in checkpoint.iterdir() if p.name != MANIFEST_FILE and not p.name.startswith(".")
    }
    for name, path in sorted(present.items()):
        if name not in files:
            return f"{name} is not in the manifest"
        if path.is_symlink() or not path.is_file():
            return f"{name} is not a plain file"
    for name, entry in sorted(files.items()):
        if name not in present:
            return f"{name} is missing"
        well_formed = isinstance(entry, dict) and _is_int(entry.get("size"))
        if not (well_formed and isinstance(entry.get("sha256"), str)):
            return f"{MANIFEST_FILE} entry for {name} is malformed"
        size = present[name].stat().st_size
        if size != entry["size"]:
            return f"{name} has {size} bytes, the manifest says {entry['size']}"
        if _sha256(present[name]) != entry["sha256"]:
            return f"{name} differs from the manifest (sha256)"
    return None


def _load_problem(path: Path) -> str | None:
    """Why one checkpoint file does not load as plain data, or None."""
    suffix = path.suffix
    try:
        if suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                bad = first_non_finite((key, handle.get_tensor(key)) for key in handle.keys())  # noqa: SIM118
            return None if bad is None else f"holds NaN or inf in {bad}"
        if suffix in (".bin", ".pkl", ".pt", ".pth"):
            from accelerate.utils import load

            load(path, map_location="cpu")  # weights_only=True: a crafted object fails, it does not run
            return None
        if suffix == ".json":
            if path.name.startswith("rng_state_"):
                problem = rng_state_problem(path)
                return None if problem is None else f"does not load as data ({problem})"
            loads_json(path.read_text(encoding="utf-8"))
            return None
        if path.name == RECIPE_COPY:
            from sat_toolkit.parsing import loads_toml

            loads_toml(path.read_text(encoding="utf-8"))
            return None
    except pickle.UnpicklingError:  # torch's weights_only refusal, whose text suggests turning it off
        return "holds objects other than tensors and plain data (refused unread: loading them could run code)"
    except Exception as error:  # any failure to parse means the file cannot be trusted
        return f"does not load as data ({first_line(error, with_type=True)})"
    return "is not a file this engine writes"


def set_aside(checkpoint: Path) -> Path:
    """Rename a damaged checkpoint out of ``list_checkpoints``' sight (kept for inspection).

    Left in place it would count towards ``keep_last`` and push intact checkpoints out.
    """
    checkpoint = Path(checkpoint)
    target = checkpoint.with_name(DAMAGED_PREFIX + checkpoint.name)
    index = 1
    while target.exists():
        index += 1
        target = checkpoint.with_name(f"{DAMAGED_PREFIX}{checkpoint.name}-{index}")
    os.replace(checkpoint, target)
    return target


# -- reading ---------------------------------------------------------------------------------
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
    anything is overwritten. Callers check :func:`checkpoint_problem` before: accelerate
    alone would skip a corrupt RNG file silently and fail on others with a traceback.
    """
    state = read_train_state(checkpoint)
    if ema is not None:
        ema.load(checkpoint)
    accelerator.load_state(str(checkpoint))  # finds no RNG pickle, so leaves the generators alone
    load_rng_state(checkpoint, accelerator.process_index)
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
