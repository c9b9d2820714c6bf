"""Training data loaders that accelerate can shard and that fetch a batch in one indexing op.

In-memory tensor datasets go through :func:`sat_toolkit.data.make_loader` (one indexing
call per batch instead of per-example fetch + collate, most of the data time for small
images); datasets that decode or generate images per item (image folders, synthetic data)
use the ordinary per-item path, so that work spreads over the loader's worker processes.
Either way the loader is an ordinary ``batch_size``/``shuffle`` loader, which accelerate
knows how to shard and reseed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader

from sat_toolkit.data.tensor_dataset import TensorImageDataset, make_loader


def training_loader(dataset: Any, batch_size: int, num_workers: int = 0) -> DataLoader:
    """Shuffled, full batches only (a ragged last batch would change BatchNorm statistics)."""
    if isinstance(dataset, TensorImageDataset):
        return make_loader(dataset, batch_size, shuffle=True, drop_last=True, num_workers=num_workers)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


def take_samples(dataset: Any, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` for ``indices``: one indexing call where the dataset allows it."""
    if isinstance(dataset, TensorImageDataset):
        return dataset[indices]
    images, labels = zip(*(dataset[int(i)] for i in indices), strict=True)
    return torch.stack(images), torch.as_tensor(labels, dtype=torch.int64)
