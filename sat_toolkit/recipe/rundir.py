"""Guard run directories: a run never silently overwrites a different run.

A run directory holds the resolved recipe that started it (``recipe.toml``). Before the
engine writes anything it calls :func:`check_run_dir`; a directory that holds a
different run (its recipe differs in anything that changes results) is refused, and so
is the same run without ``--resume``, unless it is a failed start: the same recipe with no
checkpoint and no results (the data was bad, or the loss went NaN before the first
checkpoint), which a plain rerun simply starts again. Keys that cannot change results
(logging, checkpoint cadence, loader workers, where the directory lives) may differ on
resume. The directory must be writable; that too is checked before any work starts.
"""

from __future__ import annotations

import os
import tempfile

try:
    import fcntl
except ImportError:  # Windows: no flock; the run lock is skipped
    fcntl = None  # type: ignore[assignment]
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from sat_toolkit import __version__
from sat_toolkit.errors import SatError
from sat_toolkit.parsing import TOMLDecodeError, loads_toml
from sat_toolkit.recipe.schema import Recipe

# A run directory's layout, declared here (torch-free) for the engine that writes it and
# for export, eval and study, which read it.
RECIPE_FILE = "recipe.toml"
CHECKPOINT_DIR = "checkpoints"
MODEL_FILE = "model.safetensors"
#: Written last by a finished run (and by a run the overfitting check stopped): its presence
#: is what marks a run finished.
METRICS_FILE = "metrics.json"
#: What a run that got anywhere leaves behind: checkpoints or the finished run's model and
#: metrics. A directory with none of them is a failed start.
PROGRESS_FILES: tuple[str, ...] = (CHECKPOINT_DIR, MODEL_FILE, METRICS_FILE)
RUN_IRRELEVANT_KEYS: tuple[str, ...] = (
    "logging",
    "checkpoint",
    "train.log_every_steps",
    "data.num_workers",
    "run.output_dir",
    # Monitoring only: a resume may switch the divergence guard (its own error suggests it).
    "train.divergence",
    "train.divergence_factor",
)


def _relevant(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if path in RUN_IRRELEVANT_KEYS:
            continue
        out[key] = _relevant(value, path + ".") if isinstance(value, Mapping) else value
    return out


def as_read_back(recipe: Recipe) -> dict[str, Any]:
    """The recipe as a later ``tomllib`` read of the saved file will see it (lists, not tuples)."""
    return loads_toml(recipe.to_toml())


def differences(saved: Mapping[str, Any], current: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``key: saved -> current`` for every run-relevant key that differs."""
    saved, current = _relevant(saved, prefix), _relevant(current, prefix)
    out = []
    for key in sorted(set(saved) | set(current), key=str):
        path = f"{prefix}{key}"
        a, b = saved.get(key, "<unset>"), current.get(key, "<unset>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out.extend(differences(a, b, path + "."))
        elif a != b:
            out.append(f"{path}: {_short(a)} -> {_short(b)}")
    return out


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, Mapping) else "{...}"
    return text if len(text) <= 40 else text[:37] + "..."


def as_umask_allows(path: Path) -> None:
    """Give a file the permissions the umask allows, as ``open()`` would (0644 under 022).

    safetensors creates its files 0600, so a model or checkpoint written with it was the one
    file of a run that a colleague on a shared machine could not read.
    """
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    """The process's umask, read without setting it: ``os.umask`` can only be read by setting
    it, and a study's cells write files from several threads at once (Linux's
    /proc/self/status has it; elsewhere the usual 022)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def read_saved_recipe(run_dir: str | Path) -> dict[str, Any] | None:
    """The recipe a run directory saved, as data; None where there is none or it cannot be
    read (damaged, not TOML). For callers that only look: a study's plan, ``--reuse``."""
    try:
        return _read_saved(Path(run_dir) / RECIPE_FILE)
    except SatError:
        return None


def _read_saved(path: Path) -> dict[str, Any]:
    try:
        return loads_toml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, TOMLDecodeError) as exc:
        raise SatError(
            f"{path} cannot be read ({exc}); pick another run.output_dir rather than overwrite it"
        ) from None


def check_writable(run_dir: str | Path) -> None:
    """Refuse a run.output_dir that cannot be created or written, before any work starts.

    The permission bits do not tell (root ignores them; a read-only mount does not), so
    this creates and removes an empty folder where the run would write.
    """
    run_dir = Path(run_dir)
    existing = next((p for p in (run_dir, *run_dir.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        what = "is a file" if existing == run_dir else f"cannot be created: {existing} is a file"
        raise SatError(
            f"run.output_dir {run_dir} {what}, not a directory; pick another run.output_dir "
            "(--set run.output_dir=DIR)"
        )
    refused = write_refused(existing)
    if refused is not None:
        raise SatError(
            f"run.output_dir {run_dir}: cannot write in {existing} ({refused.strerror or refused}); "
            "pick a writable run.output_dir (--set run.output_dir=DIR)"
        )


def write_refused(directory: Path) -> OSError | None:
    """Why nothing can be created in ``directory``, or None: tried, by creating and removing
    an empty folder, since the permission bits do not tell (root ignores them, even in
    /proc; a read-only mount does not show in them)."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".sat-toolkit-write-check-", dir=directory))
    except OSError as exc:
        return exc
    return None


LOCK_FILE = ".lock"


def _lock_file(run_dir: Path, create: bool) -> IO[str] | None:
    path = run_dir / LOCK_FILE
    _refuse_if_not_plain(path, "a plain file (the run's lock)", directory=False)
    if not create and not path.exists():
        return None
    if create:
        run_dir.mkdir(parents=True, exist_ok=True)
    # O_NOFOLLOW: a link planted between the check and here fails instead of being followed.
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0), 0o644)
    return os.fdopen(descriptor, "a+", encoding="utf-8")


def _refuse_if_not_plain(path: Path, what: str, *, directory: bool) -> None:
    """A symbolic link or the wrong kind of entry where the run keeps ``what``: one line, before
    anything follows the link out of the run directory or fails on it mid-run."""
    if path.is_symlink():
        raise SatError(f"{path} is a symbolic link, not {what}; remove it (nothing in a run is a link)")
    if path.exists() and path.is_dir() != directory:
        raise SatError(f"{path} is not {what}; move it out of the run directory")


def hold_run_lock(run_dir: str | Path) -> IO[str] | None:
    """Lock ``run_dir`` for this run (until the handle closes or the process ends).

    A second launch into the same directory then sees a run in progress instead of a
    "failed start" it may reuse. Only the launch's main process holds it; where the file
    system has no ``flock`` the lock is skipped.
    """
    if fcntl is None or os.environ.get("RANK", "0") != "0":
        return None
    handle = _lock_file(Path(run_dir), create=True)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise RunInProgress(Path(run_dir)) from None
    return handle


class RunInProgress(SatError):
    """Another live process holds the run directory's lock: the run is under way elsewhere.

    Its own type so that a study can tell "another invocation is running this cell" (skip
    it) from a cell that failed.
    """

    def __init__(self, run_dir: Path) -> None:
        super().__init__(
            f"{run_dir}: another sat-toolkit run is working in it (it holds {run_dir / LOCK_FILE}); "
            "wait for it to finish, or pick another run.output_dir"
        )


def _locked_by_another(run_dir: Path) -> bool:
    if fcntl is None or os.environ.get("RANK", "0") != "0":
        return False
    handle = _lock_file(run_dir, create=False)
    if handle is None:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def is_failed_start(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds no checkpoint and no results: nothing a rerun could lose."""
    run_dir = Path(run_dir)
    checkpoints = run_dir / PROGRESS_FILES[0]
    if checkpoints.is_dir():
        # A hidden entry is a checkpoint that was being written when the run died.
        if any(not p.name.startswith(".") for p in checkpoints.iterdir()):
            return False
    elif checkpoints.exists():
        return False
    return not any((run_dir / name).exists() for name in PROGRESS_FILES[1:])


def check_run_dir(run_dir: str | Path, recipe: Recipe, resume: bool) -> bool:
    """Whether the run continues an existing one (True) or starts fresh (False).

    Raises :class:`SatError` for a directory that cannot be written, for one that is not
    a run of this recipe, and for this recipe's run without ``resume`` (unless it is a
    failed start, which starts fresh). A missing or empty directory starts fresh, with or
    without ``resume``.
    """
    run_dir = Path(run_dir)
    check_writable(run_dir)
    if not run_dir.exists():
        return False
    if _locked_by_another(run_dir):  # a live run, perhaps before its first checkpoint
        raise RunInProgress(run_dir)
    _refuse_if_not_plain(run_dir / CHECKPOINT_DIR, "a directory (the run's checkpoints)", directory=True)
    if not any(not p.name.startswith(".") for p in run_dir.iterdir()):
        return False  # hidden entries: another rank's write probe, the run lock
    saved_path = run_dir / RECIPE_FILE
    if not saved_path.is_file():
        raise SatError(
            f"{run_dir} is not empty and holds no {RECIPE_FILE} (not a sat-toolkit run); "
            "pick another run.output_dir"
        )
    changed = differences(_read_saved(saved_path), as_read_back(recipe))
    if changed:
        shown = "; ".join(changed[:4]) + (f"; and {len(changed) - 4} more" if len(changed) > 4 else "")
        if is_failed_start(run_dir):
            # Never replaced silently: it may be a run still before its first checkpoint.
            raise SatError(
                f"{run_dir} holds a different run ({shown}) that has no checkpoint and no results; "
                f"if it stopped, remove it (rm -r {run_dir}), else pick another run.output_dir"
            )
        raise SatError(
            f"{run_dir} holds a different run ({shown}); pick another run.output_dir "
            "(e.g. --set run.output_dir=runs/<new-name>); --resume only continues the same recipe "
            f"(sat-toolkit run {saved_path} --resume continues the run that is there)"
        )
    if not resume:
        if is_failed_start(run_dir):
            return False  # the same recipe stopped before its first checkpoint: start it again
        from sat_toolkit.recipe.finished import read_finished_metrics

        if read_finished_metrics(run_dir)[0] is not None:  # finished: --resume has nothing to do
            raise SatError(
                f"{run_dir} already holds a finished run of this recipe (its results: metrics.json, "
                f"model.safetensors; sat-toolkit eval {run_dir}); to train it again, pick another "
                "run.output_dir"
            )
        raise SatError(
            f"{run_dir} already holds a run of this recipe; pass --resume to continue it, "
            "or pick another run.output_dir"
        )
    return True


def refuse_resume_elsewhere(recipe_path: str | Path, recipe: Recipe) -> None:
    """``--resume`` of a run directory's own recipe.toml must resume that directory.

    Its ``run.output_dir`` is as typed when the run started, often relative: from another
    directory (``cd runs/x && sat-toolkit run recipe.toml --resume``) it named a new
    directory, and the "resume" trained from step 0 in ``runs/x/runs/x``.
    """
    recipe_path = Path(recipe_path)
    run_dir = recipe_path.parent
    if recipe_path.name != RECIPE_FILE or not any((run_dir / name).exists() for name in PROGRESS_FILES):
        return
    named = Path(recipe.run.output_dir)  # as the trainer reads it: no ~ expansion
    if named.resolve() == run_dir.resolve():
        return
    here = run_dir.resolve()
    fix = f"--set run.output_dir={here}"
    if not named.is_absolute() and here.parts[-len(named.parts) :] == named.parts:
        started = Path(*here.parts[: -len(named.parts)])
        fix = (
            f"run it from {started}, where it was started (relative paths in it are read from there): "
            f"cd {started} && sat-toolkit run {named / RECIPE_FILE} --resume; or {fix}"
        )
    raise SatError(
        f"--resume: {recipe_path} is the recipe of the run in {here}, but its run.output_dir "
        f"'{recipe.run.output_dir}' names {named.absolute()} from here, which would start a new run; {fix}"
    )


def save_resolved_recipe(recipe: Recipe, run_dir: str | Path) -> Path:
    """Write ``<run_dir>/recipe.toml`` atomically; refuse to replace a different run's recipe.

    Rewriting the same run's recipe is allowed (a resumed run may change logging keys).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / RECIPE_FILE
    if path.exists():
        changed = differences(_read_saved(path), as_read_back(recipe))
        if changed:
            raise SatError(f"{path} belongs to a different run ({changed[0]}); not overwriting it")
    tmp = path.with_name(f".{RECIPE_FILE}.{os.getpid()}.tmp")
    tmp.write_text(
        recipe.to_toml(header=f"Resolved recipe written by sat-toolkit {__version__}.\nDo not edit."),
        encoding="utf-8",
    )
    os.replace(tmp, path)
    return path
