"""Serve a small in-memory dataset from contiguous tensors, one batch per index.

The store (a ``datasets.Dataset``) is the canonical copy; training reads from tensors
converted once from it. An adversarial step costs several forward/backward passes, so
data loading must stay negligible: per-example Python work (``__getitem__`` + collate,
128 times a batch) is already small, and the batched paths below avoid it entirely.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import datasets
import torch
from torch.utils.data import DataLoader, Dataset

from sat_toolkit.data.store import store_to_tensors

Index = int | Sequence[int] | torch.Tensor | slice


class TensorImageDataset(Dataset):
    """Float32 images in [0, 1] and int64 labels, held as contiguous tensors.

    ``dataset[i]`` gives ``(image C x H x W, label)`` like any map-style dataset;
    ``dataset[[i, j, ...]]`` (a list or an index tensor) gives a whole batch
    ``(images B x C x H x W, labels B)`` with one ``index_select`` per tensor, which is
    what :func:`make_loader` and :func:`iterate_batches` use. Integer and slice indices
    return views (as ``TensorDataset`` does); list and tensor indices return copies.

    Pixels are scaled to float32 once, at construction, not per batch: a gather is then
    the only per-batch work, and small elementwise ops (whose intra-op threads stall when
    other processes share the cores) stay out of the loop. Fashion-MNIST costs 188 MB.

    Attributes:
        images: ``N x C x H x W`` float32 in [0, 1].
        labels: ``N`` int64.
        store: the ``datasets.Dataset`` (raw pixels) these tensors came from, or None.
    """

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, store: datasets.Dataset | None = None
    ) -> None:
        if images.ndim != 4 or not images.is_floating_point():
            raise ValueError(f"images must be float N x C x H x W, got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        self.images = images.to(torch.float32).contiguous()
        self.labels = labels.to(torch.int64).contiguous()
        self.store = store

    @classmethod
    def from_store(cls, store: datasets.Dataset, pixel_max: float = 255.0) -> TensorImageDataset:
        """Convert a store (see :mod:`sat_toolkit.data.store`) once: raw pixels / ``pixel_max``.

        A true division, so a pixel ``k`` becomes exactly ``float32(k) / pixel_max``.
        """
        if not pixel_max > 0:
            raise ValueError(f"pixel_max must be > 0, got {pixel_max}")
        raw, labels = store_to_tensors(store)
        return cls(raw.to(torch.float32).div_(pixel_max), labels, store=store)

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, index: Index) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(index, (int, slice)):
            return self.images[index], self.labels[index]
        index = torch.as_tensor(index, dtype=torch.int64)
        if index.ndim == 0:
            return self.images[index], self.labels[index]
        return self.images.index_select(0, index), self.labels.index_select(0, index)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]


def _batch_order(
    size: int, batch_size: int, shuffle: bool, drop_last: bool, generator: torch.Generator | None
) -> Sequence[torch.Tensor]:
    order = torch.randperm(size, generator=generator) if shuffle else torch.arange(size)
    batches = list(order.split(batch_size))
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def iterate_batches(
    dataset: TensorImageDataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    drop_last: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images, labels)`` batches by tensor indexing: the fastest path, no DataLoader.

    Good for evaluation loops and single-process training; ``shuffle`` draws a new
    permutation from ``generator`` on each call.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for index in _batch_order(len(dataset), batch_size, shuffle, drop_last, generator):
        yield dataset[index]


class BatchFetcher(Dataset):
    """Wraps a :class:`TensorImageDataset` so a ``DataLoader`` fetches a batch in one call.

    ``DataLoader`` hands the whole list of a batch's indices to ``__getitems__`` when a
    dataset has one; this returns the finished batch, and :func:`make_loader` pairs it
    with a pass-through ``collate_fn``. It is a wrapper, not a method of the dataset, so
    that a plain ``DataLoader(dataset)`` with the default collate keeps working.
    """

    def __init__(self, dataset: TensorImageDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.dataset[index]

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.dataset[indices]


def keep_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``collate_fn`` for :class:`BatchFetcher`: the batch is already collated."""
    return batch


def make_loader(
    dataset: TensorImageDataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    drop_last: bool = False,
    generator: torch.Generator | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A ``DataLoader`` that fetches each batch with one indexing call.

    A standard loader in every other respect (``batch_size``, ``shuffle``, a
    ``BatchSampler`` made by PyTorch), so ``accelerate.prepare`` can shard it and
    ``len(loader)`` is the number of batches. With the same ``generator`` seed it yields
    exactly what ``DataLoader(dataset, batch_size, shuffle=True, generator=g)`` yields.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return DataLoader(
        BatchFetcher(dataset),
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        generator=generator,
        collate_fn=keep_batch,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,  # a new epoch does not restart the workers
        pin_memory=pin_memory,
    )
