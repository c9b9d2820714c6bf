"""Start a model from a local weights file (fine-tuning), read as data only.

``model.init_from = "weights.safetensors"`` loads a safetensors file into a freshly built
body before training: a ``state_dict`` saved by timm or
``safetensors.torch.save_file(model.state_dict(), ...)``, or a ``model.safetensors`` a
sat-toolkit run exported (its ``body.`` prefix and normalisation buffers are handled).
Nothing is unpickled, so a crafted file cannot run code. Fine-tuning on a dataset with
another number of classes keeps the new, randomly initialised classifier with
``init_head = false``. Every mismatch is one line naming the first tensor and both shapes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from sat_toolkit.errors import SatError, first_line
from sat_toolkit.models.tensor_check import first_misfit, first_unusable

#: The prefix a sat-toolkit export puts before the body's tensors (NormalizedModel.body).
EXPORT_PREFIX = "body."
#: The key a mistake is filed under.
KEY = "model.init_from"


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a missing, foreign or damaged file is one SatError."""
    from safetensors.torch import load_file

    file = Path(path).expanduser()
    if not file.is_file():
        raise SatError(f"{KEY}: no such file: '{path}' (point it at a .safetensors weights file)")
    try:
        return load_file(str(file), device="cpu")
    except Exception as exc:  # safetensors' own error types for truncated or foreign files
        if _looks_pickled(file):
            raise SatError(
                f"{KEY}: '{path}' is a pickled torch file, which could run code when read; convert it "
                "once with safetensors.torch.save_file(torch.load(path, weights_only=True), "
                "'weights.safetensors')"
            ) from None
        raise SatError(f"{KEY}: '{path}' is not a readable safetensors file ({first_line(exc)})") from None


def _looks_pickled(file: Path) -> bool:
    """torch.save's zip archive or a bare pickle (protocol 2+), judged from the first bytes only.

    Asked only after safetensors refused the file: a safetensors header length can start
    with the same bytes.
    """
    with file.open("rb") as handle:
        head = handle.read(4)
    return head == b"PK\x03\x04" or (
        head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
    )


def classifier_prefixes(body: nn.Module) -> tuple[str, ...]:
    """The state-dict prefixes of the classifier head (timm names it in ``pretrained_cfg``)."""
    cfg = getattr(body, "pretrained_cfg", None) or getattr(body, "default_cfg", None) or {}
    names = cfg.get("classifier", ())
    names = (names,) if isinstance(names, str) else tuple(names)
    return tuple(f"{name}." for name in names)


def load_initial_weights(body: nn.Module, path: str | Path, *, head: bool = True) -> None:
    """Copy ``path``'s tensors into ``body``: every tensor must be there with its shape.

    With ``head = False`` the classifier's tensors are left as built (and may be absent from
    or differ in the file): the usual start for fine-tuning on new classes.
    """
    state = read_weights(path)
    if any(key.startswith(EXPORT_PREFIX) for key in state):  # a sat-toolkit export: take its body
        state = {k.removeprefix(EXPORT_PREFIX): v for k, v in state.items() if k.startswith(EXPORT_PREFIX)}
    expected = body.state_dict()
    head_prefixes = classifier_prefixes(body)
    skipped = () if head else head_prefixes  # str.startswith(()) is False: nothing skipped
    wanted = {k: v for k, v in expected.items() if not k.startswith(skipped)}
    state = {k: v for k, v in state.items() if not k.startswith(skipped)}
    misfit = first_misfit(state, wanted)
    if misfit is not None and misfit.kind == "shape":
        hint = (
            " (a classifier for another number of classes: model.init_head = false trains a new one)"
            if misfit.key.startswith(head_prefixes)
            else "; is it the same architecture?"
        )
        raise SatError(
            f"{KEY}: '{path}' does not fit the model: '{misfit.key}' has shape {misfit.have}, "
            f"the model needs {misfit.want}{hint}"
        )
    if misfit is not None:
        what = (
            f"lacks '{misfit.key}' ({misfit.count} of the model's {len(wanted)} tensors missing)"
            if misfit.kind == "missing"
            else f"has '{misfit.key}', which the model lacks ({misfit.count} unexpected tensors)"
        )
        raise SatError(f"{KEY}: '{path}' does not fit the model: it {what}; is it the same architecture?")
    unusable = first_unusable(state, expected)
    if unusable:
        raise SatError(f"{KEY}: '{path}': {unusable}; training from it would start broken")
    with torch.no_grad():
        for key, value in state.items():
            expected[key].copy_(value.to(expected[key].dtype))
