"""Training data loaders that accelerate can shard and that fetch a batch in one indexing op.

A plain ``DataLoader(dataset, batch_size, shuffle=True)`` fetches examples one by one and
collates them: most of the data time for small in-memory images. PyTorch's fetcher calls
``dataset.__getitems__(indices)`` when it exists, so :class:`BatchFetch` forwards the
whole index list to the tensor dataset's batched indexing, and :func:`keep_batch` passes
the ready batch through collation untouched. The loader itself stays an ordinary
``batch_size``/``shuffle`` loader, which accelerate knows how to shard and reseed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset


class BatchFetch(Dataset):
    """A map-style view of a dataset that supports ``dataset[list_of_indices]``."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index]

    def __getitems__(self, indices: list[int]) -> Any:
        return self.dataset[indices]


def keep_batch(batch: Any) -> Any:
    """Collation for batches that are already tensors (module-level: workers pickle it)."""
    return batch


def training_loader(dataset: Any, batch_size: int, num_workers: int = 0) -> DataLoader:
    """Shuffled, full batches only (a ragged last batch would change BatchNorm statistics).

    In-memory tensor datasets are fetched a batch at a time; datasets that decode or
    generate images per item (image folders, synthetic data) go through the ordinary
    per-item path, so that work spreads over the loader's worker processes.
    """
    from sat_toolkit.data.tensor_dataset import TensorImageDataset

    batched = isinstance(dataset, TensorImageDataset)
    return DataLoader(
        BatchFetch(dataset) if batched else dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=keep_batch if batched else None,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


def take_samples(dataset: Any, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` for ``indices``: one indexing call where the dataset allows it."""
    from sat_toolkit.data.tensor_dataset import TensorImageDataset

    if isinstance(dataset, TensorImageDataset):
        return dataset[indices]
    images, labels = zip(*(dataset[int(i)] for i in indices), strict=True)
    return torch.stack(images), torch.as_tensor(labels, dtype=torch.int64)
