"""Each process's random-number-generator state as JSON, so a checkpoint holds no pickle of it.

accelerate saves Python's, NumPy's and torch's generator states as a torch pickle
(``random_states_N.pkl``). It reads that file back with ``weights_only=True``, which stops a
crafted object from running, but a resumable run should not need a pickle at all: the
states are only integers and bytes. :func:`save_rng_state` replaces accelerate's file by
``rng_state_N.json``; :func:`load_rng_state` validates and restores it.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sat_toolkit.errors import SatError, first_line
from sat_toolkit.parsing import loads_json

RNG_FORMAT = 1


def rng_file(directory: Path, process_index: int) -> Path:
    return Path(directory) / f"rng_state_{process_index}.json"


def accelerate_rng_file(directory: Path, process_index: int) -> Path:
    """The pickle ``Accelerator.save_state`` writes, which :func:`save_rng_state` replaces."""
    return Path(directory) / f"random_states_{process_index}.pkl"


def save_rng_state(directory: Path, process_index: int) -> Path:
    """Write this process's generator states as JSON and remove accelerate's pickle of them."""
    version, internal, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "format": RNG_FORMAT,
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
        "numpy": {
            "name": name,
            "keys": [int(k) for k in keys],
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state().tolist(),
        "cuda": [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }
    path = rng_file(directory, process_index)
    path.write_text(json.dumps(state) + "\n", encoding="utf-8")
    accelerate_rng_file(directory, process_index).unlink(missing_ok=True)
    return path


def _byte_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and 0 <= v < 256 for v in value)


def _problem(state: Any) -> str | None:
    """What is wrong with a decoded RNG state, or None."""
    if not isinstance(state, dict) or state.get("format") != RNG_FORMAT:
        return f"not a format-{RNG_FORMAT} RNG state"
    python, numpy_state = state.get("python"), state.get("numpy")
    if not (
        isinstance(python, dict)
        and isinstance(python.get("version"), int)
        and isinstance(python.get("internal"), list)
        and len(python["internal"]) == 625  # Mersenne Twister: 624 words and the position
        and all(isinstance(v, int) for v in python["internal"])
        and (python.get("gauss") is None or isinstance(python.get("gauss"), float))
    ):
        return "its Python state is malformed"
    if not (
        isinstance(numpy_state, dict)
        and isinstance(numpy_state.get("name"), str)
        and isinstance(numpy_state.get("keys"), list)
        and len(numpy_state["keys"]) == 624
        and all(isinstance(v, int) and 0 <= v < 2**32 for v in numpy_state["keys"])
        and isinstance(numpy_state.get("position"), int)
        and 0 <= numpy_state["position"] <= 624
        and isinstance(numpy_state.get("has_gauss"), int)
        and isinstance(numpy_state.get("cached_gaussian"), (int, float))
    ):
        return "its NumPy state is malformed"
    if not _byte_list(state.get("torch")):
        return "its torch state is malformed"
    cuda = state.get("cuda")
    if not isinstance(cuda, list) or not all(_byte_list(s) for s in cuda):
        return "its CUDA state is malformed"
    return None


def _read(path: Path) -> tuple[Any, str | None]:
    """The decoded state at ``path`` and what is wrong with it (None when it loads)."""
    try:
        state = loads_json(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, f"is not JSON ({error})"
    return state, _problem(state)


def rng_state_problem(path: Path) -> str | None:
    """Why ``path`` is not a loadable RNG state, or None (used when vetting a checkpoint)."""
    return _read(path)[1]


def load_rng_state(directory: Path, process_index: int) -> bool:
    """Restore this process's generators from ``directory``; False when it could not.

    A checkpoint written by fewer processes has no state for the extra ranks, and a state
    another torch build or GPU count cannot take is skipped with a warning: the engine
    reseeds torch every micro-batch from the run's position, so only Python's and NumPy's
    generators (data augmentation) would differ, which is no reason to refuse a resume.
    """
    path = rng_file(directory, process_index)
    if not path.is_file():
        return False
    state, problem = _read(path)
    if problem:
        raise SatError(f"{path}: {problem}; delete this checkpoint to resume from the one before it")
    python, numpy_state = state["python"], state["numpy"]
    try:
        random.setstate((python["version"], tuple(python["internal"]), python["gauss"]))
        np.random.set_state(
            (
                numpy_state["name"],
                np.array(numpy_state["keys"], dtype=np.uint32),
                numpy_state["position"],
                numpy_state["has_gauss"],
                float(numpy_state["cached_gaussian"]),
            )
        )
        torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
        if state["cuda"] and torch.cuda.is_available():
            visible = state["cuda"][: torch.cuda.device_count()]
            torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in visible])
    except (ValueError, TypeError, RuntimeError, IndexError) as error:
        warning = f"warning: {path}: random generator state not restored ({first_line(error)})"
        print(warning, file=sys.stderr, flush=True)
        return False
    return True
