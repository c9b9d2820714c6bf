"""``hub``: an image-classification dataset from the Hugging Face hub or a local save.

Two sources; a recipe names at least one:

* ``id``: a hub dataset id (``"ILSVRC/imagenet-1k"``, ``"uoft-cs/cifar10"``), loaded with
  ``datasets.load_dataset``. The local HF cache is used when it has the data, even
  offline; when it does not and ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` is set, the
  error says so instead of surfacing a connection error.
* ``path``: a folder written by ``DatasetDict.save_to_disk``; read memory-mapped, never
  touches the network. Given with ``id``, it is a local copy of that hub dataset and is
  read instead: a recipe names its dataset by ``id`` and a machine without the network
  adds ``--set data.path=...``.

The image column must be a ``datasets.Image`` feature: rows are decoded lazily, one at
a time, in ``__getitem__``, i.e. in the ``DataLoader`` workers. The label column is a
``ClassLabel`` (names become ``class_names``) or an integer column. Its class count is
the ``ClassLabel``'s; for integers, the recipe's ``num_classes`` or else the largest
training label + 1, which costs one pass over the label column (a class below it without
a training image, as 1-based labels leave class 0, is refused). A recipe that declares
``num_classes`` also lets a dry run build the real head without the data.

``mean`` and ``std`` give the training images' own statistics (CIFAR's); without them the
model normalises with ImageNet's.

``test_split`` defaults to the first of ``validation``, ``val``, ``test`` that exists:
hub datasets such as ImageNet-1k publish an unlabelled ``test`` split next to the
labelled ``validation`` one; an unlabelled split (label -1) is an error, not zeros.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import datasets
import numpy as np
from PIL import Image

from sat_toolkit.data.base import SPLITS, Limit
from sat_toolkit.data.fashion_mnist import hub_offline
from sat_toolkit.data.imagefolder import seeded_subset
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
)
from sat_toolkit.errors import SatError, first_line
from sat_toolkit.params import Param

TEST_SPLIT_CANDIDATES = ("validation", "val", "test")
OFFLINE_VARS = "HF_HUB_OFFLINE / HF_DATASETS_OFFLINE"


class HubSplit(DecodedImageDataset):
    """One split: the (memory-mapped) table with its image column, labels as an array."""

    def __init__(
        self,
        table: datasets.Dataset,
        image_column: str,
        labels: np.ndarray,
        transform: Transform,
        channels: int,
        split: str = "",
        rows: np.ndarray | None = None,
    ) -> None:
        super().__init__(transform, channels)
        self.table = table.select_columns([image_column])
        self.image_column = image_column
        self.labels = labels
        self.split = split
        self.rows = rows  # the table rows kept by limit_train/limit_test, in serving order

    def describe(self, index: int) -> str:
        row = index if self.rows is None else int(self.rows[index])
        return f"row {row} of split '{self.split}'" if self.split else f"row {row}"

    def __len__(self) -> int:
        return len(self.labels)

    def load_image(self, index: int) -> Image.Image:
        image = self.table[index][self.image_column]
        if not isinstance(image, Image.Image):
            raise SatError(f"dataset 'hub': row {index} of column '{self.image_column}' is not an image")
        return image

    def label(self, index: int) -> int:
        return int(self.labels[index])


class HubImages:
    """Images and labels from a Hugging Face dataset (hub id or ``save_to_disk`` folder).

    Args:
        id: a hub dataset id; downloads unless cached (never when offline).
        path: a folder saved with ``DatasetDict.save_to_disk``; with ``id``, a local copy of it, read instead.
        image_column: the ``Image`` column.
        label_column: the ``ClassLabel`` (or integer) column.
        train_split: the split served as ``"train"``.
        test_split: the split served as ``"test"``; default: validation, val or test.
        image_size: side of the square images served.
        channels: 3 (RGB) or 1 (grey); every image is converted to it.
        augmentation, color_jitter, lighting, crop_padding: see :class:`Augmentation`.
        num_classes: the class count; checked against a ``ClassLabel`` column, read instead
            of the labels of an integer one.
        mean, std: per-channel statistics of the training pixels; default ImageNet's.
        revision: a hub revision (branch, tag or commit) to pin ``id`` to.
        limit_train: keep a seeded sample of N training images.
        limit_test: keep a seeded sample of N test images.
    """

    name = "hub"
    description = (
        "Hugging Face image dataset (hub id or save_to_disk folder); decoded and augmented in workers"
    )

    def __init__(
        self,
        id: str | None = None,  # shadows the builtin: it is the recipe key users know from the hub
        path: Annotated[str | os.PathLike[str] | None, Param(local="folder")] = None,
        image_column: str = "image",
        label_column: str = "label",
        train_split: str = "train",
        test_split: str | None = None,
        image_size: ImageSizeParam = 224,
        channels: ChannelsParam = 3,
        augmentation: AugmentationParam = "imagenet",
        color_jitter: ColorJitterParam = None,
        lighting: LightingParam = None,
        crop_padding: CropPaddingParam = None,
        num_classes: Annotated[int | None, Param(ge=2)] = None,
        mean: MeanParam = None,
        std: StdParam = None,
        revision: str | None = None,
        limit_train: Limit = None,
        limit_test: Limit = None,
    ) -> None:
        if id is None and path is None:
            raise SatError(
                "dataset 'hub': set id (a hub dataset id) or path (a save_to_disk folder; with id, a local "
                "copy of that dataset, read instead of the hub)"
            )
        self.path = None if path is None else Path(path).expanduser()
        self.id = id  # with a path, what the local copy is a copy of (recorded, never fetched)
        self.image_column = image_column
        self.label_column = label_column
        self.train_split = train_split
        self.test_split = test_split
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
        self.num_classes = num_classes
        self.mean, self.std = mean, std
        self.statistics = normalisation_stats(channels, mean, std, dataset=self.name)
        self.revision = revision
        self.limit_train = limit_train
        self.limit_test = limit_test
        self._local: datasets.DatasetDict | None = None
        self._tables: dict[str, datasets.Dataset] = {}
        self._cache: dict[str, HubSplit] = {}
        self._info: DatasetInfo | None = None
        if self.path is not None:
            self._check_path(self.path)

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        check_image_params(cls, params)

    def params(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": None if self.path is None else str(self.path),
            "image_column": self.image_column,
            "label_column": self.label_column,
            "train_split": self.train_split,
            "test_split": self.test_split,
            "image_size": self.image_size,
            "channels": self.channels,
            **self.augmentation.params(),
            "num_classes": self.num_classes,
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
            "revision": self.revision,
            "limit_train": self.limit_train,
            "limit_test": self.limit_test,
        }

    # ---- where the tables come from -------------------------------------------------

    @staticmethod
    def _check_path(path: Path) -> None:
        if not path.is_dir():
            raise SatError(
                f"dataset 'hub': path '{path}' is not a folder; give a DatasetDict.save_to_disk folder"
            )
        if not (path / "dataset_dict.json").is_file():
            what = (
                "a single-split Dataset" if (path / "state.json").is_file() else "not a save_to_disk folder"
            )
            raise SatError(
                f"dataset 'hub': path '{path}' is {what}; save a DatasetDict with '{SPLITS[0]}' and a "
                "test split (DatasetDict({...}).save_to_disk(path)), or use the 'imagefolder' dataset "
                "for image files"
            )

    @property
    def reads_copy(self) -> bool:
        """Whether the local ``path`` is read: the hub is asked only when there is none."""
        return self.path is not None

    def _where(self) -> str:
        return f"'{self.path}'" if self.reads_copy else f"'{self.id}'"

    def _hub_error(self, action: str, exc: Exception) -> SatError:
        if hub_offline():
            return SatError(
                f"dataset 'hub': cannot {action} {self._where()}: it is not in the local Hugging Face cache "
                f"and {OFFLINE_VARS} is set, so nothing is downloaded; unset HF_HUB_OFFLINE to download it, "
                "or set path to a folder saved with DatasetDict.save_to_disk"
            )
        return SatError(f"dataset 'hub': cannot {action} {self._where()} ({first_line(exc, with_type=True)})")

    def _local_dict(self) -> datasets.DatasetDict:
        if self._local is None:
            assert self.path is not None
            try:
                loaded = datasets.load_from_disk(str(self.path))
            except Exception as exc:  # corrupt or foreign folder: one line naming it
                detail = first_line(exc, with_type=True)
                raise SatError(f"dataset 'hub': cannot read '{self.path}' ({detail})") from None
            if not isinstance(loaded, datasets.DatasetDict):
                raise SatError(f"dataset 'hub': '{self.path}' holds a single split; save a DatasetDict")
            self._local = loaded
        return self._local

    def _builder_info(self) -> datasets.DatasetInfo:
        """A hub dataset's metadata (features, splits), without downloading its data."""
        try:
            return datasets.load_dataset_builder(self.id, revision=self.revision).info
        except Exception as exc:
            raise self._hub_error("find", exc) from None

    def available_splits(self) -> list[str] | None:
        """Split names of the source; None when a hub dataset's metadata does not list them."""
        if self.reads_copy:
            return list(self._local_dict())
        splits = self._builder_info().splits
        return None if not splits else list(splits)

    def train_features(self) -> datasets.Features:
        """The train split's columns: from the hub metadata when it has them (no download)."""
        if not self.reads_copy:
            features = self._builder_info().features
            if features is not None and self.label_column in features:
                return features
        return self.table("train").features

    def split_name(self, split: str) -> str:
        """The source's name for ``split`` ("train" or "test")."""
        if split not in SPLITS:
            raise SatError(f"dataset 'hub': unknown split {split!r}; use one of {', '.join(SPLITS)}")
        if split == "train":
            return self.train_split
        if self.test_split is not None:
            return self.test_split
        available = self.available_splits()
        if available is None:
            return "validation"
        for candidate in TEST_SPLIT_CANDIDATES:
            if candidate in available:
                return candidate
        raise SatError(
            f"dataset 'hub': {self._where()} has no validation/val/test split "
            f"(it has {', '.join(available)}); set test_split"
        )

    def table(self, split: str) -> datasets.Dataset:
        """The raw split (images still encoded), cached on this instance."""
        name = self.split_name(split)
        if name not in self._tables:
            if self.reads_copy:
                local = self._local_dict()
                if name not in local:
                    raise SatError(
                        f"dataset 'hub': '{self.path}' has no split '{name}' (it has {', '.join(local)}); "
                        f"set {'train_split' if split == 'train' else 'test_split'}"
                    )
                table = local[name]
            else:
                try:
                    table = datasets.load_dataset(self.id, split=name, revision=self.revision)
                except Exception as exc:
                    raise self._hub_error(f"load split '{name}' of", exc) from None
            self._check_columns(table, name)
            self._tables[name] = table
        return self._tables[name]

    def _check_columns(self, table: datasets.Dataset, name: str) -> None:
        features = table.features
        for key, column in (("image_column", self.image_column), ("label_column", self.label_column)):
            if column not in features:
                raise SatError(
                    f"dataset 'hub': split '{name}' of {self._where()} has no column '{column}' "
                    f"(columns: {', '.join(features)}); set {key}"
                )
        if not isinstance(features[self.image_column], datasets.Image):
            raise SatError(
                f"dataset 'hub': column '{self.image_column}' is "
                f"{type(features[self.image_column]).__name__}, not an Image feature"
            )
        label = features[self.label_column]
        if not isinstance(label, datasets.ClassLabel) and not (
            isinstance(label, datasets.Value) and label.dtype.startswith(("int", "uint"))
        ):
            raise SatError(
                f"dataset 'hub': column '{self.label_column}' is {label}, not a ClassLabel or integer"
            )

    # ---- the plugin contract --------------------------------------------------------

    def labels(self, table: datasets.Dataset) -> np.ndarray:
        """The label column as int64, honouring any ``select`` on ``table``."""
        column = table.select_columns([self.label_column]).with_format("arrow")[:].column(self.label_column)
        return column.to_numpy().astype(np.int64, copy=True)

    def info(self) -> DatasetInfo:
        """From the train split's features; integer labels without ``num_classes`` cost one pass
        over the label column."""
        if self._info is None:
            feature = self.train_features().get(self.label_column)
            if isinstance(feature, datasets.ClassLabel):
                num_classes, names = feature.num_classes, tuple(feature.names)
                if self.num_classes not in (None, num_classes):
                    raise SatError(
                        f"dataset 'hub': num_classes = {self.num_classes}, but column '{self.label_column}' "
                        f"of {self._where()} is a ClassLabel of {num_classes} classes; set num_classes = "
                        f"{num_classes} (or remove it), or pick the label column you meant"
                    )
            elif self.num_classes is not None:
                num_classes, names = self.num_classes, None  # load() refuses a label outside it
            else:
                labels = self.labels(self.table("train"))
                num_classes, names = (int(labels.max()) + 1 if len(labels) else 0), None
                self._refuse_empty_classes(labels)
            if num_classes < 2:
                raise SatError(f"dataset 'hub': {self._where()} has {num_classes} classes; need at least 2")
            mean, std = self.statistics
            self._info = DatasetInfo(
                num_classes=num_classes,
                channels=self.channels,
                image_size=(self.image_size, self.image_size),
                mean=mean,
                std=std,
                class_names=names,
            )
        return self._info

    def _refuse_empty_classes(self, labels: np.ndarray) -> None:
        """Integer labels that skip a class (1-based ones skip 0) would give the model an output
        no training image ever teaches: refused, since the class count is read off the labels."""
        if not len(labels) or labels.min() < 0:
            return  # no labels, or unlabelled rows: load() names those
        empty = np.flatnonzero(np.bincount(labels) == 0)
        if len(empty):
            shown = ", ".join(str(c) for c in empty[:5]) + (" ..." if len(empty) > 5 else "")
            raise SatError(
                f"dataset 'hub': the integer labels of {self._where()}'s train split run from "
                f"{int(labels.min())} to {int(labels.max())} with no training image of class {shown}; "
                "number the classes 0..K-1, or make the column a ClassLabel "
                "(table.cast_column(column, datasets.ClassLabel(names=[...])))"
            )

    def load(self, split: str) -> HubSplit:
        """The split, lazily decoded; cached on this instance."""
        if split not in self._cache:
            table = self.table(split)
            keep = seeded_subset(len(table), self.limit_train if split == "train" else self.limit_test)
            if keep is not None:
                table = table.select(keep)
            labels = self.labels(table)
            num_classes = self.info().num_classes
            if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
                bad = int(labels.min()) if labels.min() < 0 else int(labels.max())
                if bad < 0:
                    hint = "; it is unlabelled, pick a labelled test_split"
                elif self.num_classes is not None:
                    hint = f"; raise num_classes ({self.num_classes}) or pick the label column you meant"
                else:
                    hint = ""
                raise SatError(
                    f"dataset 'hub': split '{self.split_name(split)}' has label {bad} "
                    f"outside 0..{num_classes - 1}{hint}"
                )
            transform = self.augmentation.transform(split)
            self._cache[split] = HubSplit(
                table, self.image_column, labels, transform, self.channels, self.split_name(split), keep
            )
        return self._cache[split]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items() if v is not None)
        return f"HubImages({args})"
