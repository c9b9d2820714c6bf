"""Models the toolkit did not train: a timm architecture plus someone's weights file.

``sat-toolkit eval WEIGHTS --arch resnet18 --mean ... --std ...`` evaluates a model
trained anywhere. The weights are read as data only: a ``.safetensors`` file, or a
``torch.save``'d state dict loaded with ``weights_only=True`` (a pickle that holds
anything but tensors and plain containers is refused, never executed). The usual
wrappers are unpacked: ``{"state_dict": ...}`` / ``{"model": ...}`` checkpoints, DDP's
``module.`` and ``torch.compile``'s ``_orig_mod.`` prefixes.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from sat_toolkit.data.info import checked_statistics
from sat_toolkit.errors import SatError, first_line
from sat_toolkit.models.normalize import Normalize, NormalizedModel

if TYPE_CHECKING:
    from sat_toolkit.activations.factory import ActivationSpec
from sat_toolkit.models.tensor_check import first_misfit, first_unusable

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
#: Keys under which training scripts commonly nest the weights in a checkpoint dict.
_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net", "module", "ema")
_PREFIXES = ("module.", "_orig_mod.")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, unwrapped to a flat ``name -> tensor`` state dict."""
    path = Path(path)
    if not path.is_file():
        raise SatError(f"{path}: no such weights file")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise SatError(f"{path}: expected a weights file ({', '.join(WEIGHT_SUFFIXES)})")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types for bad files
            raise SatError(f"{path}: not a readable safetensors file ({exc})") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise SatError(
                f"{path} holds objects other than tensors, which are refused because loading them could "
                "run code; save model.state_dict() with torch.save or safetensors instead"
            ) from None
        except Exception as exc:
            text = str(exc)
            if "TorchScript" in text or "weights_only" in text:  # never relay "retry with weights_only=False"
                raise SatError(
                    f"{path} is a TorchScript archive or holds objects other than tensors; it is refused "
                    "because loading it could run code: save model.state_dict() (torch.save or safetensors)"
                ) from None
            raise SatError(f"{path}: not a readable torch file ({first_line(exc, with_type=True)})") from None
    return _flatten(state, path)


def _flatten(state: Any, path: Path) -> dict[str, torch.Tensor]:
    while isinstance(state, Mapping) and not _all_tensors(state):
        nested = next((key for key in _NESTED_KEYS if isinstance(state.get(key), Mapping)), None)
        if nested is None:
            raise SatError(
                f"{path}: found no state dict (a mapping of parameter names to tensors) in it; "
                f"top-level keys: {', '.join(map(str, list(state)[:8]))}"
            )
        state = state[nested]
    if not isinstance(state, Mapping) or not state:
        raise SatError(
            f"{path}: expected a state dict (parameter name -> tensor), got {type(state).__name__}"
        )
    flat = {str(key): value for key, value in state.items()}
    for prefix in _PREFIXES:
        if all(key.startswith(prefix) for key in flat):
            flat = {key[len(prefix) :]: value for key, value in flat.items()}
    return flat


def _all_tensors(state: Mapping[str, Any]) -> bool:
    return bool(state) and all(isinstance(value, torch.Tensor) for value in state.values())


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model`` exactly, or say in one line what does not fit."""
    own = model.state_dict()
    misfit = first_misfit(state, own)
    if misfit is not None and misfit.kind == "shape":
        raise SatError(
            f"{source}: weight '{misfit.key}' has shape {misfit.have} but the model expects "
            f"{misfit.want}; check --arch, --num-classes and the dataset's channels"
        )
    if misfit is not None:
        found = ", ".join(part for part in (
            f"missing {list(misfit.missing[:3])}" if misfit.missing else "",
            f"unexpected {list(misfit.unexpected[:3])}" if misfit.unexpected else "",
        ) if part)  # fmt: skip
        raise SatError(f"{source}: weights do not fit the model ({found}); check --arch and the keys' prefix")
    unusable = first_unusable(state, own)
    if unusable:
        raise SatError(f"{source}: {unusable}, so the weights would give meaningless results")
    model.load_state_dict(state, strict=True)


def build_timm_model(
    architecture: str,
    arch_kwargs: Mapping[str, Any],
    *,
    num_classes: int,
    channels: int,
    mean: Sequence[float],
    std: Sequence[float],
    activation: ActivationSpec | None = None,
) -> NormalizedModel:
    """``architecture`` as timm defines it (random init), normalisation first; with
    ``activation``, built as :func:`~sat_toolkit.activations.create_timm_model` builds it.

    The weights alone cannot say which: a SiLU-trained resnet18's state dict is a ReLU
    resnet18's, and scored as one it gave numbers that meant nothing without a word.
    """
    import timm

    from sat_toolkit.activations.surgery import create_timm_model
    from sat_toolkit.models.timm_model import TimmModel

    TimmModel(architecture, **arch_kwargs)  # the same checks and hints as a recipe's [model]
    mean, std = checked_statistics(mean, std, channels, names=("--mean", "--std"))
    try:
        if activation is None:
            body = timm.create_model(
                architecture, pretrained=False, num_classes=num_classes, in_chans=channels, **arch_kwargs
            )
        else:
            body, _ = create_timm_model(
                architecture, activation, num_classes=num_classes, in_chans=channels, **arch_kwargs
            )
    except (TypeError, ValueError, AssertionError) as exc:
        raise SatError(f"--arch {architecture}: {exc}") from None
    model = NormalizedModel(Normalize(mean, std), body)
    model.normalization = {"mean": list(mean), "std": list(std)}  # as given, not float32-rounded
    return model


def check_forward(model: nn.Module, architecture: str, input_shape: tuple[int, ...]) -> None:
    """One image through the model, so a wrong input size is a one-line error, not a traceback mid-suite."""
    try:
        with torch.no_grad():
            model.eval()(torch.rand(1, *input_shape))
    except Exception as exc:
        size, failure = "x".join(str(v) for v in input_shape), first_line(exc, with_type=True)
        raise SatError(
            f"--arch {architecture} fails on the dataset's {size} images ({failure}); "
            "make the two agree: --arch NAME:img_size=... (and patch_size) where the architecture takes "
            "them, or --data NAME:image_size=... to serve the images at the size the weights expect"
        ) from None
