"""Trained models as one self-describing file: weights plus the config that rebuilds them.

``model.safetensors`` holds the state dict (normalisation buffers included) and, in the
safetensors metadata, the model's ``sat_config`` (architecture, activation and dataset
shape; see :mod:`sat_toolkit.models.config`). Loading rebuilds the architecture from that
config, never from code paths that could drift, and refuses a file whose weights do not
fit the rebuilt model. Saving records which package provided each plugin the rebuild
needs (``sat_config["plugins"]``), so a file shared without its plugin names what to install.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sat_toolkit.errors import SatError, first_line
from sat_toolkit.parsing import loads_json
from sat_toolkit.recipe.rundir import MODEL_FILE

CONFIG_KEY = "sat_config"


def save_model(model: nn.Module, sat_config: dict[str, Any], path: str | Path) -> Path:
    """Write ``model``'s weights and ``sat_config`` to ``path`` atomically.

    ``sat_config["plugins"]`` is (re)computed here, from the installed plugins that the
    config's model and activation name, so every saved model carries it; the caller's
    dict is not changed.
    """
    from safetensors.torch import save_file

    from sat_toolkit.plugins.provenance import sat_config_plugins
    from sat_toolkit.recipe.rundir import as_umask_allows

    sat_config = {**sat_config, "plugins": sat_config_plugins(sat_config)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().contiguous().cpu() for key, value in model.state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp")
    # One metadata key, canonical JSON: safetensors writes its metadata map in an order that
    # varies from process to process, so with two keys the same weights gave different bytes.
    save_file(state, str(tmp), metadata={CONFIG_KEY: json.dumps(sat_config, sort_keys=True)})
    as_umask_allows(tmp)
    tmp.replace(path)
    return path


def resolve_model_file(location: str | Path) -> Path:
    """A run directory (its ``model.safetensors``) or a ``.safetensors`` file."""
    location = Path(location)
    if location.is_dir():
        candidate = location / MODEL_FILE
        if not candidate.is_file() and not (location / "recipe.toml").is_file():
            raise SatError(
                f"{location} is not a run directory (no recipe.toml, no {MODEL_FILE}); give a run "
                "directory or a .safetensors model file"
            )
        if not candidate.is_file():
            raise SatError(
                f"{location} has no {MODEL_FILE}; is the run finished? "
                f"(an interrupted run continues with 'sat-toolkit run {location / 'recipe.toml'} --resume')"
            )
        return candidate
    if location.is_file():
        if location.suffix != ".safetensors":
            raise SatError(f"{location}: expected a run directory or a .safetensors model file")
        return location
    raise SatError(f"{location}: no such run directory or model file")


def read_sat_config(path: str | Path) -> dict[str, Any]:
    """The ``sat_config`` stored in a model file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for bad files
        raise SatError(f"{path}: not a readable safetensors file ({exc})") from None
    if CONFIG_KEY not in metadata:
        raise SatError(
            f"{path} carries no sat_config: it was not exported by sat-toolkit; to evaluate weights "
            "trained elsewhere, name its architecture (sat-toolkit eval FILE --arch NAME --mean M --std S)"
        )
    try:
        config = loads_json(metadata[CONFIG_KEY])
    except json.JSONDecodeError as exc:
        raise SatError(
            f"{path}: its sat_config metadata is not JSON ({exc}); "
            "the file is damaged: export it again, or evaluate the weights with --arch NAME --mean M --std S"
        ) from None
    if not isinstance(config, dict):
        raise SatError(
            f"{path}: its sat_config metadata is JSON but not an object; "
            "the file is damaged: export it again, or evaluate the weights with --arch NAME --mean M --std S"
        )
    return config


def _normalization_edited(state: dict[str, torch.Tensor], rebuilt: dict[str, torch.Tensor]) -> str | None:
    """Where the stored normalisation differs from the one the file's sat_config describes.

    The model runs with the stored tensors while reports (and ``eval``'s banner) state the
    config's mean and std: a file whose two disagree would be measured with one
    normalisation and recorded with another.
    """
    for key, want in rebuilt.items():
        if key.rsplit(".", 2)[-2:] not in (["normalize", "mean"], ["normalize", "std"]) or key not in state:
            continue
        have = state[key]
        if have.shape == want.shape and torch.allclose(have.float(), want, rtol=1e-6, atol=0.0):
            continue
        which = key.rsplit(".", 1)[-1]

        def shown(values: torch.Tensor) -> str:
            return "[" + ", ".join(f"{v:.6g}" for v in values.flatten().tolist()) + "]"

        return f"its weights normalise with {which} {shown(have)}, its sat_config says {shown(want)}"
    return None


def load_model(location: str | Path, device: str | None = None) -> nn.Module:
    """The trained model from a run directory or model file, in eval mode.

    The returned module takes images in [0, 1] (normalisation is inside it) and returns
    logits; its ``sat_config`` attribute says what it is.
    """
    from safetensors.torch import load_file

    from sat_toolkit.models.config import rebuild_model
    from sat_toolkit.models.tensor_check import first_misfit, first_unusable

    path = resolve_model_file(location)
    config = read_sat_config(path)
    try:
        model = rebuild_model(config)
    except SatError as exc:
        raise SatError(f"{path}: {exc.message}") from None
    except Exception as exc:  # a hand-edited or damaged config: a wrong type, a width of 10**12
        raise SatError(
            f"{path}: its sat_config does not describe a model this toolkit can rebuild "
            f"({first_line(exc, with_type=True)}); export it again"
        ) from None
    name = config["model"].get("name", "model") if isinstance(config["model"], dict) else "model"
    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for truncated files
        raise SatError(
            f"{path}: the weights cannot be read ({exc}); the file is damaged: export it again"
        ) from None
    expected = model.state_dict()
    misfit = first_misfit(state, expected)
    if misfit is not None and misfit.kind == "shape":
        raise SatError(
            f"{path}: weights do not fit the rebuilt {name}: '{misfit.key}' has shape {misfit.have}, "
            f"the model needs {misfit.want} ({misfit.count} of {len(state)} tensors differ); "
            "the file's sat_config does not match its weights: export it again"
        )
    if misfit is not None:
        listed = misfit.missing if misfit.kind == "missing" else misfit.unexpected
        raise SatError(f"{path}: weights do not fit the rebuilt {name} ({misfit.kind} {list(listed[:3])})")
    unusable = first_unusable(state, expected)
    if unusable:
        raise SatError(f"{path}: {unusable}, so the weights would give meaningless results; export it again")
    edited = _normalization_edited(state, expected)
    if edited:
        raise SatError(f"{path}: {edited}; the file was edited or damaged: export it again")
    model.load_state_dict(state, strict=True)
    model.sat_config = config
    if device is not None:
        model.to(device)
    return model.eval()
