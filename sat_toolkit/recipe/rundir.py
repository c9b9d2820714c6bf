"""Guard run directories: a run never silently overwrites a different run.

A run directory holds the resolved recipe that started it (``recipe.toml``). Before the
engine writes anything it calls :func:`check_run_dir`; a directory that holds a
different run (its recipe differs in anything that changes results) is refused, and so
is the same run without ``--resume``. Keys that cannot change results (logging,
checkpoint cadence, loader workers, where the directory lives) may differ on resume.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sat_toolkit import __version__
from sat_toolkit.errors import SatError
from sat_toolkit.recipe.schema import Recipe
from sat_toolkit.recipe.toml_io import TOMLDecodeError, tomllib

RECIPE_FILE = "recipe.toml"
RUN_IRRELEVANT_KEYS: tuple[str, ...] = (
    "logging",
    "checkpoint",
    "train.log_every_steps",
    "data.num_workers",
    "run.output_dir",
)


def _relevant(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if path in RUN_IRRELEVANT_KEYS:
            continue
        out[key] = _relevant(value, path + ".") if isinstance(value, Mapping) else value
    return out


def _as_read_back(recipe: Recipe) -> dict[str, Any]:
    """The recipe as a later ``tomllib`` read of the saved file will see it (lists, not tuples)."""
    return tomllib.loads(recipe.to_toml())


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


def _read_saved(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, TOMLDecodeError) as exc:
        raise SatError(
            f"{path} cannot be read ({exc}); pick another run.output_dir rather than overwrite it"
        ) from None


def check_run_dir(run_dir: str | Path, recipe: Recipe, resume: bool) -> bool:
    """Whether the run continues an existing one (True) or starts fresh (False).

    Raises :class:`SatError` for a directory that is not a run of this recipe, and for
    this recipe's run without ``resume``. A missing or empty directory starts fresh,
    with or without ``resume``.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        return False
    if not run_dir.is_dir():
        raise SatError(f"run.output_dir {run_dir} is a file, not a directory; pick another run.output_dir")
    if not any(run_dir.iterdir()):
        return False
    saved_path = run_dir / RECIPE_FILE
    if not saved_path.is_file():
        raise SatError(
            f"{run_dir} is not empty and holds no {RECIPE_FILE} (not a sat-toolkit run); "
            "pick another run.output_dir"
        )
    changed = differences(_read_saved(saved_path), _as_read_back(recipe))
    if changed:
        shown = "; ".join(changed[:4]) + (f"; and {len(changed) - 4} more" if len(changed) > 4 else "")
        raise SatError(
            f"{run_dir} holds a different run ({shown}); pick another run.output_dir "
            "(e.g. --set run.output_dir=runs/<new-name>); --resume only continues the same recipe"
        )
    if not resume:
        raise SatError(
            f"{run_dir} already holds a run of this recipe; pass --resume to continue it, "
            "or pick another run.output_dir"
        )
    return True


def save_resolved_recipe(recipe: Recipe, run_dir: str | Path) -> Path:
    """Write ``<run_dir>/recipe.toml`` atomically; refuse to replace a different run's recipe.

    Rewriting the same run's recipe is allowed (a resumed run may change logging keys).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / RECIPE_FILE
    if path.exists():
        changed = differences(_read_saved(path), _as_read_back(recipe))
        if changed:
            raise SatError(f"{path} belongs to a different run ({changed[0]}); not overwriting it")
    tmp = path.with_name(f".{RECIPE_FILE}.{os.getpid()}.tmp")
    tmp.write_text(
        recipe.to_toml(header=f"Resolved recipe written by sat-toolkit {__version__}.\nDo not edit."),
        encoding="utf-8",
    )
    os.replace(tmp, path)
    return path
