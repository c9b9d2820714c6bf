"""Does a split hold what the engine needs: ``(float32 image of info().input_shape in [0, 1],
int label in 0 .. num_classes - 1)`` items?

One check for two callers: :func:`sat_toolkit.testing.check_dataset` (a plugin author's
test) and the training run, which holds a plugin dataset's splits to it before the first
step. Without it an off-by-one label or a float64 image surfaces as a traceback from deep
inside the loss or the attack, which names neither the dataset nor the fix.

Items are sampled (decoding every image of a large split would cost minutes), spread over
the split, first and last included; labels a split exposes as a whole (``labels`` or
``targets``, as :class:`TensorImageDataset` and torchvision datasets do, or the second
tensor of a ``TensorDataset(images, labels)``) are checked in full, which catches a rare
out-of-range label that sampling can miss.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from sat_toolkit.data.info import DatasetInfo
from sat_toolkit.errors import first_line

#: Items of each split the training run checks before its first step.
PREFLIGHT_ITEMS = 64


def split_problems(dataset: Any, info: DatasetInfo, where: str, items: int = PREFLIGHT_ITEMS) -> list[str]:
    """What is wrong with ``dataset`` (what ``load(split)`` returned): every problem of the
    first sampled item that has any, then an out-of-range label in the exposed labels; [] if
    nothing is."""
    try:
        size = len(dataset)
    except Exception as exc:
        return [f"{where} returned a dataset without len(): {first_line(exc, with_type=True)}"]
    if size == 0:
        return [f"{where} is empty"]
    problems: list[str] = []
    for index in spread_indices(size, items):
        problems = item_problems(dataset, index, info, f"{where}[{index}]")
        if problems:
            break
    labels = _label_array_problem(dataset, size, info, where)
    if labels and not any(": label " in p or ": the label " in p for p in problems):  # said once
        problems.append(labels)
    return problems


def spread_indices(size: int, count: int) -> list[int]:
    """At most ``count`` indices of ``range(size)``: the first ones, then evenly spread, the last."""
    if size <= count:
        return list(range(size))
    head = list(range(max(count // 4, 1)))
    spread = np.linspace(head[-1] + 1, size - 1, count - len(head)).round().astype(int).tolist()
    return list(dict.fromkeys([*head, *spread]))


def item_problems(dataset: Any, index: int, info: DatasetInfo, where: str) -> list[str]:
    """What is wrong with ``dataset[index]``: its image's problem and its label's, if any."""
    try:
        item = dataset[index]
    except Exception as exc:
        return [f"{where} raised {first_line(exc, with_type=True)}"]
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        return [f"{where} is {type(item).__name__}; yield (image, label) pairs"]
    image, label = item
    problems = []
    if not isinstance(image, torch.Tensor) or image.dtype != torch.float32:
        what = image.dtype if isinstance(image, torch.Tensor) else type(image).__name__
        problems.append(f"{where}: the image is {what}; yield a float32 tensor C x H x W")
    elif tuple(image.shape) != tuple(info.input_shape):
        problems.append(
            f"{where}: the image has shape {tuple(image.shape)} but info() says {tuple(info.input_shape)}"
        )
    elif not bool(torch.isfinite(image).all()) or float(image.min()) < 0 or float(image.max()) > 1:
        problems.append(f"{where}: image values lie outside [0, 1]; scale pixels to [0, 1]")
    if isinstance(label, torch.Tensor):
        label = label.item() if label.numel() == 1 and not label.is_floating_point() else label
    if isinstance(label, np.integer):
        label = int(label)
    if isinstance(label, bool) or not isinstance(label, int):
        problems.append(f"{where}: the label is {label!r}; yield an int (or an int64 scalar tensor)")
    elif not 0 <= label < info.num_classes:
        problems.append(f"{where}: label {label} is outside 0 .. {info.num_classes - 1} (info().num_classes)")
    return problems


def _label_array_problem(dataset: Any, size: int, info: DatasetInfo, where: str) -> str | None:
    """Every label at once, where the split exposes them as an integer array of its length."""
    exposed = {attribute: getattr(dataset, attribute, None) for attribute in ("labels", "targets")}
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        exposed["tensors[1]"] = dataset.tensors[1]
    for attribute, labels in exposed.items():
        if isinstance(labels, (torch.Tensor, np.ndarray, list)) and len(labels) == size:
            try:
                array = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(np.asarray(labels))
            except (TypeError, ValueError, RuntimeError):
                return None  # not numbers: the sampled items say what is wrong
            if (
                array.is_floating_point()
                or array.is_complex()
                or array.dtype == torch.bool
                or array.dim() != 1
            ):
                return None  # not an array of class indices: the sampled items say what is wrong
            low, high = int(array.min()), int(array.max())
            if low < 0 or high >= info.num_classes:
                bad = high if high >= info.num_classes else low
                index = int((array == bad).nonzero()[0])
                return (
                    f"{where}[{index}]: label {bad} is outside 0 .. {info.num_classes - 1} "
                    f"(info().num_classes; {where}.{attribute} ranges over {low} .. {high})"
                )
            return None
    return None
