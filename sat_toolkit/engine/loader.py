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
    """Shuffled, full batches only (a ragged last batch would change BatchNorm statistics)."""
    return DataLoader(
        BatchFetch(dataset),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=keep_batch,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )
