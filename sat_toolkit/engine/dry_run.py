"""``sat-toolkit run RECIPE --dry-run``: every piece of a recipe, a couple of steps, no data.

A dry run swaps the recipe's dataset for the ``synthetic`` plugin with the same number of
classes, channels and resolution (or a reduced resolution on request), trains two
optimiser steps (at most two accumulated micro-batches each, then a checkpoint), and
evaluates four images with every evaluation attack cut to two steps.
Everything else (model at full size, activation, attacks, optimiser, schedules, logging,
export) is the recipe's own, so CI can check that each shipped recipe builds and runs
without its data or a GPU.

The run directory is a fresh temporary directory, deleted when the dry run ends, whether
it succeeds or fails (an exception, Ctrl-C): a full-size model's checkpoint is large
(EfficientNet-L1's dry run writes 4 GB), and a dry run is only ever a check. ``keep``
leaves it for inspection.
"""

from __future__ import annotations

import contextlib
import copy
import re
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sat_toolkit.errors import SatError

if TYPE_CHECKING:
    from sat_toolkit.engine.trainer import RunSummary

DRY_RUN_STEPS = 2
DRY_RUN_EVAL_SAMPLES = 4
_DEFAULT_CLASSES = 1000  # an ImageNet-style recipe whose class count lives in its data folder


def _eval_attack_for_dry_run(spec: Mapping[str, Any]) -> dict[str, Any]:
    cheap = dict(spec)
    if "steps" in cheap or cheap.get("name") in ("pgd", "apgd", "apgd_ce", "apgd_dlr", "apgd_t"):
        cheap["steps"] = min(int(cheap.get("steps", DRY_RUN_STEPS)), DRY_RUN_STEPS)
    if cheap.get("name") == "square" or "queries" in cheap:
        cheap["queries"] = min(int(cheap.get("queries", 10)), 10)
    if cheap.get("name") == "apgd_t" or "n_target_classes" in cheap:
        cheap["n_target_classes"] = 1
    return cheap


def dry_run_recipe(raw: Mapping[str, Any], image_size: int | None = None, *, output_dir: str) -> dict:
    """The raw recipe table rewritten for a dry run (validated afterwards like any recipe).

    ``output_dir`` is required: creating a directory here would leave one behind for every
    caller that only wants the table.
    """
    recipe = copy.deepcopy(dict(raw))
    data = dict(recipe.get("data") or {})
    if "name" not in data:
        raise SatError("data.name: missing; a dry run keeps everything but the data, so the recipe needs it")
    # One look at the real dataset (a plugin may read an index or a header to answer it).
    info = _source_info(data)
    size = image_size or data.get("image_size") or (int(info.image_size[0]) if info is not None else 224)
    batch = int(data.get("batch_size", 128))
    optimizer = dict(recipe.get("optimizer") or {})
    # Two optimiser steps, but at most two micro-batches each: accumulation is exercised
    # without paying for a full global batch of a large model on a CPU.
    accumulation = min(int(optimizer.get("grad_accumulation", 1)), 2)
    optimizer["grad_accumulation"] = accumulation
    recipe["optimizer"] = optimizer
    recipe["data"] = {
        "name": "synthetic",
        "num_classes": int(data.get("num_classes", _DEFAULT_CLASSES if info is None else info.num_classes)),
        "image_size": int(size),
        "channels": int(data.get("channels", info.channels if info is not None else 3)),
        "train_size": batch * accumulation * DRY_RUN_STEPS,
        "test_size": DRY_RUN_EVAL_SAMPLES,
        "batch_size": batch,
        "eval_batch_size": DRY_RUN_EVAL_SAMPLES,
        # A handful of generated images needs no worker processes (a recipe may ask for 16).
        "num_workers": min(int(data.get("num_workers", 0)), 1),
    }
    # The model normalises as the real run's would: with the data's statistics, or the recipe's.
    statistics = {"mean": info.mean, "std": info.std} if info is not None else data
    for key in ("mean", "std"):
        if statistics.get(key) is not None:
            recipe["data"][key] = list(statistics[key])
    train = dict(recipe.get("train") or {})
    train.update({"steps": DRY_RUN_STEPS, "epochs": 1, "validate_every_epochs": 0, "log_every_steps": 1})
    recipe["train"] = train
    # One checkpoint, at the end of the (single) epoch: large models write gigabytes each.
    recipe["checkpoint"] = {"every_steps": 0, "keep_last": 1}
    attack = dict(recipe.get("attack") or {})
    evaluation = dict(attack.get("eval") or {})
    for label, value in list(evaluation.items()):
        if isinstance(value, Mapping):
            evaluation[label] = _eval_attack_for_dry_run(value)
        elif label == "attacks" and isinstance(value, list):
            evaluation[label] = [_eval_attack_for_dry_run(v) if isinstance(v, Mapping) else v for v in value]
    evaluation["samples"] = DRY_RUN_EVAL_SAMPLES
    attack["eval"] = evaluation
    recipe["attack"] = attack
    run = dict(recipe.get("run") or {})
    run["output_dir"] = str(output_dir)
    recipe["run"] = run
    return recipe


def _source_info(data: Mapping[str, Any]) -> Any | None:
    """The real dataset's info when it can be had (digits, a local copy, ...); None without it.

    Absent data is the point of a dry run; data that is there and does not fit the recipe
    (a CIFAR-100 copy under a CIFAR-10 recipe) is what the real run would stop at, so it
    stops the dry run too rather than be replaced by synthetic data.
    """
    from sat_toolkit.data import create_dataset

    keys = {k: v for k, v in data.items() if k not in ("batch_size", "eval_batch_size", "num_workers")}
    try:
        return create_dataset(keys).info()
    except SatError:
        path = keys.get("path")
        if isinstance(path, str) and path and Path(path).expanduser().exists():
            raise
        return None
    except Exception:
        return None


def _read_raw(source: str | Path | Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    from sat_toolkit.recipe.overrides import apply_overrides
    from sat_toolkit.recipe.toml_io import read_file

    raw = dict(source) if isinstance(source, Mapping) else read_file(source)
    raw, _ = apply_overrides(raw, overrides)
    return raw


def dry_run(
    source: str | Path | Mapping[str, Any],
    overrides: Iterable[str] = (),
    *,
    image_size: int | None = None,
    keep: bool = False,
    show_progress: bool = True,
) -> RunSummary:
    """Dry-run a recipe in a temporary directory; a ``RunSummary``.

    The directory is deleted when this returns or raises, unless ``keep``; so with the
    default, ``summary.run_dir`` no longer exists and ``summary.metrics`` is what is left.
    """
    from sat_toolkit.engine.trainer import train
    from sat_toolkit.evaluation.robust import non_finite_counted_wrong
    from sat_toolkit.recipe import load_recipe

    _check_all_but_the_data_files(source, overrides)
    raw = _read_raw(source, overrides)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", str((raw.get("run") or {}).get("name", "run")))[:40]
    directory = tempfile.mkdtemp(prefix=f"sat-dry-run-{name}-")
    try:
        with _termination_unwinds(), non_finite_counted_wrong():  # 2 steps make no model to measure
            recipe = load_recipe(dry_run_recipe(raw, image_size=image_size, output_dir=directory))
            return train(recipe, show_progress=show_progress)
    except BaseException:
        if keep:  # the caller sees only the error; say where its files are
            print(f"the failed dry run's files are kept in {directory}", file=sys.stderr)
        raise
    finally:
        if not keep:
            _remove_run_dir(Path(directory))


def _check_all_but_the_data_files(source: str | Path | Mapping[str, Any], overrides: Iterable[str]) -> None:
    """Validate the recipe as ``recipe validate`` would, except that its files may be absent.

    The dry run replaces ``[data]`` by synthetic images, so without this a misspelt data
    key, an unknown dataset or an out-of-range value there would pass the dry run and stop
    the real run. Only "no such file or directory" is forgiven: absent data is the point.
    """
    from sat_toolkit.recipe import RecipeError, load_recipe

    try:
        load_recipe(source, overrides)
    except RecipeError as error:
        kept = [problem for problem in error.problems if not problem.missing_file]
        if kept:
            raise RecipeError(kept, error.source) from None


@contextlib.contextmanager
def _termination_unwinds() -> Iterator[None]:
    """SIGTERM (``timeout``, a cancelled CI job) exits through ``finally``, as Ctrl-C does.

    Python's default for SIGTERM ends the process at once, leaving the dry run's temporary
    directory behind. Only the main thread can set a handler; elsewhere nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _remove_run_dir(directory: Path) -> None:
    """Delete a dry run's directory; say so when that fails, since what it holds can be gigabytes."""
    shutil.rmtree(directory, ignore_errors=True)
    if directory.exists():
        print(f"could not delete the dry run's files in {directory}; delete them by hand", file=sys.stderr)
