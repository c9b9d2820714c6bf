"""``synthetic``: random images at ImageNet scale, for dry runs without any data on disk.

A dry run should exercise everything a real run does (shapes, 1000 classes, the
DataLoader, the model at full resolution, checkpoints) in minutes and without a
download. Images are generated in ``__getitem__`` (in the workers, like decoding) and
are a pure function of ``(seed, split, index)``: the same index gives the same image
in any process, in any order, with any number of workers.

Each image is half a per-class colour and half uniform noise, so the classes are
separable and a dry run's loss can fall; the label is drawn from the same seeded
stream. ``DatasetInfo`` reports the ImageNet statistics, as the real datasets do, so a
model built for a dry run is built exactly like the real one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from sat_toolkit.data.base import SPLITS
from sat_toolkit.data.info import DatasetInfo
from sat_toolkit.data.transforms import (
    ChannelsParam,
    ImageSizeParam,
    MeanParam,
    StdParam,
    normalisation_stats,
    single_threaded,
)
from sat_toolkit.errors import SatError
from sat_toolkit.params import Param

_SPLIT_IDS = {"train": 0, "test": 1}
_CLASS_STREAM = 2  # a third stream, for the per-class colours


def _generator(*key: int) -> torch.Generator:
    """A torch generator seeded from a tuple of ints (NumPy's SeedSequence mixes them well)."""
    state = np.random.SeedSequence(list(key)).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


class SyntheticImages(Dataset):
    """``size`` seeded random images of one split; int, list or tensor indices."""

    def __init__(
        self, size: int, num_classes: int, image_size: int, channels: int, seed: int, split: str
    ) -> None:
        self.size = size
        self.num_classes = num_classes
        self.shape = (channels, image_size, image_size)
        self.seed = seed
        self.split_id = _SPLIT_IDS[split]

    def __len__(self) -> int:
        return self.size

    def class_colour(self, label: int) -> torch.Tensor:
        """The per-class colour in [0, 1], one value per channel."""
        return torch.rand(self.shape[0], generator=_generator(self.seed, _CLASS_STREAM, label))

    def _item(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -self.size <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} images")
        index %= self.size
        generator = _generator(self.seed, self.split_id, index)
        label = int(torch.randint(self.num_classes, (), generator=generator))
        noise = torch.rand(self.shape, generator=generator)
        image = noise.mul_(0.5).add_(0.5 * self.class_colour(label).view(-1, 1, 1))
        return image, torch.tensor(label, dtype=torch.int64)

    def __getitem__(self, index: int | Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(index, torch.Tensor) and index.ndim == 0:
            index = int(index)
        with single_threaded():  # small tensor ops: see transforms.single_threaded
            if isinstance(index, (Sequence, torch.Tensor, np.ndarray)):
                items = [self._item(int(i)) for i in index]
                if not items:
                    raise IndexError("empty index list")
                images, labels = zip(*items, strict=True)
                return torch.stack(images), torch.stack(labels)
            return self._item(int(index))


class Synthetic:
    """Seeded random images for dry runs (nothing read, nothing downloaded).

    Args:
        num_classes: number of labels (1000 mimics ImageNet).
        image_size: side of the square images.
        channels: 1 or 3.
        train_size: images in the training split.
        test_size: images in the test split.
        seed: changes every image and label.
        mean, std: the normalisation reported to the model (a dry run passes the recipe's);
            default ImageNet's.
    """

    name = "synthetic"
    description = "seeded random images (per-class colour + noise) at any size, for dry runs; no data needed"

    def __init__(
        self,
        num_classes: Annotated[int, Param(ge=2)] = 1000,
        image_size: ImageSizeParam = 224,
        channels: ChannelsParam = 3,
        train_size: Annotated[int, Param(ge=1)] = 1024,
        test_size: Annotated[int, Param(ge=1)] = 256,
        seed: Annotated[int, Param(ge=0)] = 0,
        mean: MeanParam = None,
        std: StdParam = None,
    ) -> None:
        self.num_classes = num_classes
        self.image_size = image_size
        self.channels = channels
        self.train_size = train_size
        self.test_size = test_size
        self.seed = seed
        self.mean, self.std = mean, std
        self.statistics = normalisation_stats(channels, mean, std, dataset=self.name)

    def params(self) -> dict[str, Any]:
        return {
            "num_classes": self.num_classes,
            "image_size": self.image_size,
            "channels": self.channels,
            "train_size": self.train_size,
            "test_size": self.test_size,
            "seed": self.seed,
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
        }

    def info(self) -> DatasetInfo:
        mean, std = self.statistics
        return DatasetInfo(
            num_classes=self.num_classes,
            channels=self.channels,
            image_size=(self.image_size, self.image_size),
            mean=mean,
            std=std,
        )

    def load(self, split: str) -> SyntheticImages:
        if split not in SPLITS:
            raise SatError(f"dataset 'synthetic': unknown split {split!r}; use one of {', '.join(SPLITS)}")
        size = self.train_size if split == "train" else self.test_size
        return SyntheticImages(size, self.num_classes, self.image_size, self.channels, self.seed, split)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"Synthetic({args})"
