"""What makes one tensor of a weights file unusable where the model expects another.

Shared by every route that reads weights into a model (a model file for ``eval``, an
``--arch`` weights file, ``model.init_from``): ``load_state_dict`` copies whatever it gets,
casting integers to floats and carrying NaN along, so a damaged or foreign file would be
evaluated or trained from without a word. :func:`first_misfit` finds the first tensor
whose shape or presence does not fit, the same way for every route; each caller words the
message, since only it knows which setting to change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal

import torch


@dataclasses.dataclass(frozen=True)
class Misfit:
    """The first way a weights file's tensors do not fit the model's.

    ``kind`` is checked in this order: ``"shape"`` (``key`` is the first tensor of the
    model's order with another shape; ``count`` of them differ), ``"missing"`` (``key`` is
    the first of the model's tensors the file lacks) or ``"unexpected"`` (the first of the
    file's tensors the model lacks). ``missing`` and ``unexpected`` list every such key.
    """

    kind: Literal["shape", "missing", "unexpected"]
    key: str
    count: int
    have: tuple[int, ...] | None
    want: tuple[int, ...] | None
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]


def first_misfit(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> Misfit | None:
    """Where ``state`` does not fit ``expected`` (the model's ``state_dict()``), or None.

    Shapes first: ``load_state_dict`` would raise a RuntimeError listing every tensor.
    """
    missing = tuple(key for key in expected if key not in state)
    unexpected = tuple(key for key in state if key not in expected)
    wrong = [key for key, want in expected.items() if key in state and state[key].shape != want.shape]
    if wrong:
        key = wrong[0]
        have, want = tuple(state[key].shape), tuple(expected[key].shape)
        return Misfit("shape", key, len(wrong), have, want, missing, unexpected)
    if missing:
        return Misfit("missing", missing[0], len(missing), None, None, missing, unexpected)
    if unexpected:
        return Misfit("unexpected", unexpected[0], len(unexpected), None, None, missing, unexpected)
    return None


def first_unusable(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> str | None:
    """:func:`unusable_tensor` of the first tensor, in the model's order, that is unusable."""
    found = (unusable_tensor(key, state[key], want) for key, want in expected.items() if key in state)
    return next(filter(None, found), None)


def unusable_tensor(key: str, value: torch.Tensor, expected: torch.Tensor) -> str | None:
    """Why ``value`` cannot stand in for the model's ``expected`` tensor ``key``, or None.

    A floating tensor must arrive as a floating tensor (fp16 or bf16 for fp32 is a lossless
    widening, fine; an integer or boolean tensor is not a weight) and hold only finite
    values; an integer buffer (BatchNorm's step count) must be an integer.
    """
    if expected.is_floating_point() != value.is_floating_point():
        return f"'{key}' is {_dtype(value)}, the model's is {_dtype(expected)}"
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        return f"'{key}' holds NaN or inf"
    return None


def _dtype(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")
