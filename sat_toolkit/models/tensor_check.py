"""What makes one tensor of a weights file unusable where the model expects another.

Shared by every route that reads weights into a model (a model file for ``eval``, an
``--arch`` weights file, ``model.init_from``): ``load_state_dict`` copies whatever it gets,
casting integers to floats and carrying NaN along, so a damaged or foreign file would be
evaluated or trained from without a word. Shapes are each caller's own check: their
messages say which setting to change.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


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
