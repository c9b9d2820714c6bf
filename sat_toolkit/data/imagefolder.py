"""``imagefolder``: images in a local directory tree, ``<path>/<split>/<class>/<image>``.

The ImageNet layout (``train/n01440764/*.JPEG``, ``val/n01440764/*.JPEG``; the official
validation archive is flat and has to be sorted into class folders first). Classes are
the train split's sub-folders, sorted alphabetically, so label ``k`` is the k-th folder
name on every machine; the test split must use the same folder names (it may lack some).

Nothing is decoded up front: ``load(split)`` lists the files, and each image is read,
decoded and augmented in ``__getitem__``, i.e. in the ``DataLoader`` workers. The file
list is kept as one NumPy byte-string array rather than a Python list of strings: it
pickles compactly for spawned workers and, in forked workers, does not turn into
per-worker copies through reference counting (a million ``str`` objects would).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from PIL import Image

from sat_toolkit.data.base import SPLITS, Limit
from sat_toolkit.data.info import DatasetInfo
from sat_toolkit.data.transforms import (
    Augmentation,
    AugmentationParam,
    ChannelsParam,
    ColorJitterParam,
    CropPaddingParam,
    DecodedImageDataset,
    ImageSizeParam,
    LightingParam,
    MeanParam,
    StdParam,
    Transform,
    check_image_params,
    normalisation_stats,
    pil_mode,
)
from sat_toolkit.errors import SatError
from sat_toolkit.params import Param

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
LAYOUT = "<path>/<split>/<class>/<image>.jpg|.jpeg|.png"
#: ``limit_train`` / ``limit_test`` take a seeded sample, not the first N files (which
#: would be the first few classes only).
LIMIT_SEED = 0


def list_classes(split_dir: Path) -> list[str]:
    """Sub-folder names of ``split_dir``, sorted; hidden folders are skipped."""
    with os.scandir(split_dir) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def list_images(split_dir: Path, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(relative paths as bytes, labels int64)`` of every image file, in a fixed order.

    Classes in ``classes`` order, files sorted by name within a class; folders of
    ``split_dir`` that are not in ``classes`` are an error (their label would be unknown).
    """
    index = {name: label for label, name in enumerate(classes)}
    unknown = [name for name in list_classes(split_dir) if name not in index]
    if unknown:
        raise SatError(
            f"dataset 'imagefolder': {split_dir} has class folder '{unknown[0]}' that the train split "
            f"lacks ({len(unknown)} such); every class needs a folder in the train split"
        )
    paths: list[str] = []
    labels: list[int] = []
    for name in classes:
        folder = split_dir / name
        if not folder.is_dir():
            continue
        with os.scandir(folder) as entries:
            files = sorted(
                e.name for e in entries if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)
            )
        paths.extend(f"{name}/{file}" for file in files)
        labels.extend([index[name]] * len(files))
    return np.array([os.fsencode(p) for p in paths], dtype=np.bytes_), np.array(labels, dtype=np.int64)


def seeded_subset(size: int, limit: int | None) -> np.ndarray | None:
    """Sorted indices of a seeded ``limit``-sample of ``range(size)``; None for all of it."""
    if limit is None or limit >= size:
        return None
    order = torch.randperm(size, generator=torch.Generator().manual_seed(LIMIT_SEED))[:limit]
    return np.sort(order.numpy())


class ImageFolderSplit(DecodedImageDataset):
    """One split of an image folder: relative paths, labels, and the split's transform."""

    def __init__(
        self, root: Path, paths: np.ndarray, labels: np.ndarray, transform: Transform, channels: int
    ) -> None:
        super().__init__(transform, channels)
        self.root = str(root)
        self.paths = paths
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, index: int) -> str:
        return os.path.join(self.root, os.fsdecode(self.paths[index]))

    def describe(self, index: int) -> str:
        return self.path(index)

    def load_image(self, index: int) -> Image.Image:
        path = self.path(index)
        try:
            with Image.open(path) as image:
                # Decode inside the ``with``: convert() returns an image that owns its pixels.
                return image.convert(pil_mode(self.channels))
        except OSError as exc:
            raise SatError(f"dataset 'imagefolder': cannot decode {path} ({exc})") from None

    def label(self, index: int) -> int:
        return int(self.labels[index])

    def check_files(self) -> None:
        """Read every image's header (a few hundred bytes each, no pixels) before training.

        A non-image or truncated-header file would otherwise surface in a loader worker,
        after the run directory was written; found here, the error comes before anything
        is. Threads, because the work is file I/O (an ImageNet listing has 1.3M files).
        """

        def problem(index: int) -> tuple[str, str] | None:
            path = self.path(index)
            try:
                with Image.open(path) as image:
                    width, height = image.size
            except Exception as exc:  # PIL raises OSError, SyntaxError, DecompressionBombError...
                return path, str(exc) or type(exc).__name__
            return None if width and height else (path, "the image has no pixels")

        with ThreadPoolExecutor(max_workers=min(32, 4 * (os.cpu_count() or 1))) as pool:
            problems = [p for p in pool.map(problem, range(len(self))) if p is not None]
        if problems:
            path, why = problems[0]
            more = f" ({len(problems) - 1} more such files)" if len(problems) > 1 else ""
            raise SatError(
                f"dataset 'imagefolder': {path} is not a readable image ({why}){more}; "
                "replace or remove it and run again"
            )


class ImageFolder:
    """Images from ``<path>/<split>/<class>/*``, augmented as the recipe chooses (ImageNet-style by default).

    Args:
        path: the root folder holding one folder per split.
        image_size: side of the square images served (the crop size).
        train_split: folder name of the training split.
        test_split: folder name served as the ``"test"`` split (ImageNet's is ``val``).
        channels: 3 (RGB) or 1 (grey); every image is converted to it.
        augmentation, color_jitter, lighting, crop_padding: see :class:`Augmentation`.
        mean, std: per-channel statistics of the training pixels; default ImageNet's.
        classes: the class folder names in label order; by default the train split's
            folders, sorted. Set it to evaluate on a machine that has only the test split.
        limit_train: keep a seeded sample of N training images.
        limit_test: keep a seeded sample of N test images.
    """

    name = "imagefolder"
    description = "local image tree <path>/<split>/<class>/*.jpg|png; decoded and augmented in workers"

    def __init__(
        self,
        path: Annotated[str | os.PathLike[str], Param(local="folder")],
        image_size: ImageSizeParam = 224,
        train_split: str = "train",
        test_split: str = "val",
        channels: ChannelsParam = 3,
        augmentation: AugmentationParam = "imagenet",
        color_jitter: ColorJitterParam = None,
        lighting: LightingParam = None,
        crop_padding: CropPaddingParam = None,
        mean: MeanParam = None,
        std: StdParam = None,
        classes: Sequence[str] | None = None,
        limit_train: Limit = None,
        limit_test: Limit = None,
    ) -> None:
        self.path = Path(path).expanduser()
        self.image_size = image_size
        self.channels = channels
        self.augmentation = Augmentation.checked(
            self.name,
            augmentation,
            self.image_size,
            self.channels,
            color_jitter=color_jitter,
            lighting=lighting,
            crop_padding=crop_padding,
        )
        self.mean, self.std = mean, std
        self.statistics = normalisation_stats(channels, mean, std, dataset=self.name)
        for key, value in (("train_split", train_split), ("test_split", test_split)):
            if not isinstance(value, str) or not value or "/" in value:
                raise SatError(f"dataset 'imagefolder': {key} must be a folder name, got {value!r}")
        self.train_split = train_split
        self.test_split = test_split
        if classes is not None and (isinstance(classes, str) or len(set(classes)) != len(classes)):
            raise SatError("dataset 'imagefolder': classes must be a list of distinct folder names")
        self.classes = None if classes is None else [str(c) for c in classes]
        self.limit_train = limit_train
        self.limit_test = limit_test
        if not self.path.is_dir():
            raise SatError(
                f"dataset 'imagefolder': path '{self.path}' is not a folder; expected the layout {LAYOUT} "
                f"with splits '{self.train_split}' and '{self.test_split}'"
            )
        self._cache: dict[str, ImageFolderSplit] = {}
        self._class_names: list[str] | None = None

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        check_image_params(cls, params)

    def params(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "image_size": self.image_size,
            "train_split": self.train_split,
            "test_split": self.test_split,
            "channels": self.channels,
            **self.augmentation.params(),
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
            "classes": self.classes,
            "limit_train": self.limit_train,
            "limit_test": self.limit_test,
        }

    def split_dir(self, split: str) -> Path:
        """The folder serving ``split`` ("train" or "test"); an error names the layout if absent."""
        if split not in SPLITS:
            raise SatError(f"dataset 'imagefolder': unknown split {split!r}; use one of {', '.join(SPLITS)}")
        folder = self.path / (self.train_split if split == "train" else self.test_split)
        if not folder.is_dir():
            present = ", ".join(list_classes(self.path)) or "none"
            raise SatError(
                f"dataset 'imagefolder': no '{folder.name}' folder for the {split} split in '{self.path}' "
                f"(sub-folders there: {present}); expected the layout {LAYOUT}"
            )
        return folder

    def class_names(self) -> list[str]:
        """Label order: ``classes`` if given, else the train split's class folders, sorted."""
        if self._class_names is None:
            if self.classes is not None:
                names = list(self.classes)
            else:
                folder = self.split_dir("train")
                names = list_classes(folder)
                if not names:
                    raise SatError(
                        f"dataset 'imagefolder': '{folder}' has no class folders; "
                        f"expected the layout {LAYOUT}"
                    )
            if len(names) < 2:
                raise SatError(f"dataset 'imagefolder': need at least 2 classes, found {names}")
            self._class_names = names
        return self._class_names

    def info(self) -> DatasetInfo:
        """Classes from the folder names (a directory listing, nothing decoded); the recipe's
        statistics, else ImageNet's."""
        names = self.class_names()
        mean, std = self.statistics
        return DatasetInfo(
            num_classes=len(names),
            channels=self.channels,
            image_size=(self.image_size, self.image_size),
            mean=mean,
            std=std,
            class_names=tuple(names),
        )

    def load(self, split: str) -> ImageFolderSplit:
        """The split's file list (cached); images are decoded only when indexed."""
        if split not in self._cache:
            folder = self.split_dir(split)
            paths, labels = list_images(folder, self.class_names())
            if len(labels) == 0:
                raise SatError(
                    f"dataset 'imagefolder': no images ({', '.join(IMAGE_EXTENSIONS)}) in '{folder}'; "
                    f"expected the layout {LAYOUT}"
                )
            keep = seeded_subset(len(labels), self.limit_train if split == "train" else self.limit_test)
            if keep is not None:
                paths, labels = paths[keep], labels[keep]
            transform = self.augmentation.transform(split)
            self._cache[split] = ImageFolderSplit(folder, paths, labels, transform, self.channels)
        return self._cache[split]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items() if v is not None)
        return f"ImageFolder({args})"
