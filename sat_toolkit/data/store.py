"""The canonical store: a Hugging Face ``datasets.Dataset`` of raw pixels and labels.

Schema: ``image`` is a fixed-size nested list ``[C][H][W]`` of ``uint8`` raw pixel
values (not yet scaled to [0, 1]); ``label`` is a ``ClassLabel``. Keeping the raw values
keeps the store exact and 4x smaller than float32; the scale (255, or 16 for digits)
is applied once, when a split is converted to tensors.

Both directions go through Arrow buffers directly. ``Dataset.from_dict`` on a nested
array and ``with_format("torch")`` both walk Python lists (seconds for 60k images, and
the torch formatter widens uint8 to int64), while building the fixed-size list arrays
from one flat buffer and reading them back with ``with_format("arrow")`` costs
milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import numpy as np
import pyarrow as pa
import torch


def image_features(shape: tuple[int, int, int], class_names: Sequence[str]) -> datasets.Features:
    """The store's schema for images of ``shape = (C, H, W)``."""
    channels, height, width = shape
    pixel = datasets.Value("uint8")
    image = datasets.List(datasets.List(datasets.List(pixel, length=width), length=height), length=channels)
    return datasets.Features({"image": image, "label": datasets.ClassLabel(names=list(class_names))})


def build_store(
    images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], split: str
) -> datasets.Dataset:
    """A ``datasets.Dataset`` holding ``images`` (uint8, N x C x H x W) and ``labels`` (N)."""
    if not isinstance(images, np.ndarray) or not isinstance(labels, np.ndarray):
        raise ValueError(
            f"images and labels must be numpy arrays, got {type(images).__name__} and "
            f"{type(labels).__name__} (a torch tensor: pass tensor.numpy())"
        )
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be a uint8 array N x C x H x W, got {images.dtype} {images.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    _, channels, height, width = images.shape
    flat = pa.array(np.ascontiguousarray(images).reshape(-1), type=pa.uint8())
    rows = pa.FixedSizeListArray.from_arrays(flat, width)
    planes = pa.FixedSizeListArray.from_arrays(rows, height)
    column = pa.FixedSizeListArray.from_arrays(planes, channels)
    features = image_features((channels, height, width), class_names)
    table = pa.table({"image": column, "label": pa.array(labels.astype(np.int64), type=pa.int64())})
    table = table.cast(features.arrow_schema)
    return datasets.Dataset(
        datasets.table.InMemoryTable(table),
        info=datasets.DatasetInfo(features=features),
        split=datasets.NamedSplit(split),
    )


def store_to_tensors(store: datasets.Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images uint8 N x C x H x W, labels int64 N)``, contiguous and owning their memory.

    Respects any ``select``/``shuffle`` applied to the store (the Arrow formatter
    resolves the indices mapping).
    """
    image_type = store.features["image"]
    shape = (image_type.length, image_type.feature.length, image_type.feature.feature.length)
    table = store.with_format("arrow")[:]
    column = table.column("image").combine_chunks()
    if len(column) == 0:
        return torch.empty((0, *shape), dtype=torch.uint8), torch.empty(0, dtype=torch.int64)
    values = column.flatten().flatten().flatten().to_numpy(zero_copy_only=False)
    images = torch.from_numpy(values.reshape(-1, *shape).copy())
    labels = torch.from_numpy(table.column("label").to_numpy().astype(np.int64, copy=True))
    return images, labels
