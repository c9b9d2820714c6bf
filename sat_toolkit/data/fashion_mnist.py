"""``fashion_mnist``: Zalando's Fashion-MNIST (60k/10k grey 28x28 images, 10 classes).

Where the files come from, in order:

1. ``path`` (the recipe's ``data.path``): a folder with the four IDX files. If it is set
   and wrong, that is an error; there is no silent fallback past a path the user chose.
2. :data:`DEFAULT_DIR`, where Debian's ``dataset-fashion-mnist`` package installs them.
3. The Hugging Face hub (:data:`HUB_ID`), only when not offline (``HF_HUB_OFFLINE`` /
   ``HF_DATASETS_OFFLINE`` unset) and ``hub`` is true.

If none works the error says how to get the data.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import datasets
import numpy as np

from sat_toolkit.data.base import DatasetSource, Limit
from sat_toolkit.data.idx import IdxFormatError, read_idx
from sat_toolkit.data.info import DatasetInfo
from sat_toolkit.data.store import build_store
from sat_toolkit.errors import SatError, first_line
from sat_toolkit.params import Param

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
HUB_ID = "zalando-datasets/fashion_mnist"
APT_COMMAND = "apt-get install dataset-fashion-mnist"
HOW_TO_GET = f"install it with `sudo {APT_COMMAND}`, or set data.path to a folder with the four IDX files"
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IMAGE_SIZE = (28, 28)
_PREFIX = {"train": "train", "test": "t10k"}
_KINDS = {"images": 3, "labels": 1}  # kind -> IDX dimensions


def idx_file_name(split: str, kind: str) -> str:
    """The canonical file name, e.g. ``train-images-idx3-ubyte.gz``."""
    return f"{_PREFIX[split]}-{kind}-idx{_KINDS[kind]}-ubyte.gz"


def find_idx_file(directory: Path, split: str, kind: str) -> Path | None:
    """The IDX file for ``split``/``kind`` in ``directory``: gzipped or raw, ``-idx`` or ``.idx``."""
    for sep in ("-", "."):
        stem = f"{_PREFIX[split]}-{kind}{sep}idx{_KINDS[kind]}-ubyte"
        for name in (stem + ".gz", stem):
            candidate = directory / name
            if candidate.is_file():
                return candidate
    return None


def missing_files(directory: Path) -> list[str]:
    """Canonical names of the IDX files ``directory`` lacks (empty when complete)."""
    return [
        idx_file_name(split, kind)
        for split in _PREFIX
        for kind in _KINDS
        if find_idx_file(directory, split, kind) is None
    ]


def read_split(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 N x 28 x 28, labels uint8 N)`` from the IDX files, with sanity checks."""
    paths = {kind: find_idx_file(directory, split, kind) for kind in _KINDS}
    for kind, path in paths.items():
        if path is None:
            raise SatError(
                f"fashion_mnist: {directory} has no {idx_file_name(split, kind)} (or raw .idx file)"
            )
    images, labels = read_idx(paths["images"]), read_idx(paths["labels"])
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SIZE:
        raise IdxFormatError(
            f"{paths['images']}: expected uint8 images N x 28 x 28, got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise IdxFormatError(f"{paths['labels']}: expected uint8 labels N, got {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise IdxFormatError(
            f"{paths['labels']}: {len(labels)} labels for {len(images)} images in {paths['images'].name}"
        )
    if len(labels) and labels.max() >= len(CLASS_NAMES):
        raise IdxFormatError(f"{paths['labels']}: label {labels.max()} outside 0..{len(CLASS_NAMES) - 1}")
    return images, labels


def hub_offline() -> bool:
    """True when the user (or the test suite) forbids Hugging Face hub access."""
    flags = (os.environ.get(var, "") for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    if any(flag.strip().lower() in {"1", "true", "yes", "on"} for flag in flags):
        return True
    return bool(getattr(datasets.config, "HF_HUB_OFFLINE", False))


def load_from_hub(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Download (or read the HF cache of) one split; images decoded to uint8 arrays."""
    hub = datasets.load_dataset(HUB_ID, split=split)
    images = np.stack([np.asarray(image, dtype=np.uint8) for image in hub["image"]])
    labels = np.asarray(hub["label"], dtype=np.int64)
    if images.shape[1:] != IMAGE_SIZE:
        raise SatError(f"fashion_mnist: hub dataset {HUB_ID} has images {images.shape[1:]}, expected 28 x 28")
    return images, labels


class FashionMNIST(DatasetSource):
    """Fashion-MNIST from local IDX files (Debian package or ``path``), else the HF hub.

    Args:
        path: folder with ``train-images-idx3-ubyte(.gz)``, ``train-labels-idx1-ubyte(.gz)``,
            ``t10k-images-idx3-ubyte(.gz)`` and ``t10k-labels-idx1-ubyte(.gz)``.
        hub: allow the Hugging Face hub as a last resort (never when offline).
        limit_train: keep only the first N training examples.
        limit_test: keep only the first N test examples.
    """

    name = "fashion_mnist"
    input_shape = (1, *IMAGE_SIZE)
    description = "Fashion-MNIST 28x28 grey, 10 classes (IDX files from data.path, Debian, or the HF hub)"
    pixel_max = 255.0

    # Training-split statistics of pixels / 255 (checked by the tests on the real files).
    MEAN = (0.2860,)
    STD = (0.3530,)

    def __init__(
        self,
        path: Annotated[str | os.PathLike[str] | None, Param(local="folder")] = None,
        hub: bool = True,
        limit_train: Limit = None,
        limit_test: Limit = None,
    ) -> None:
        super().__init__(limit_train=limit_train, limit_test=limit_test)
        self.path = None if path is None or str(path) == "" else Path(path).expanduser()
        self.hub = bool(hub)
        if self.path is not None:
            self._check_path(self.path)

    @staticmethod
    def _check_path(path: Path) -> None:
        if not path.is_dir():
            raise SatError(
                f"dataset 'fashion_mnist': path '{path}' is not a folder; set data.path to the folder "
                f"holding the IDX files, or leave it out after `{APT_COMMAND}`"
            )
        missing = missing_files(path)
        if missing:
            raise SatError(
                f"dataset 'fashion_mnist': path '{path}' lacks {', '.join(missing)}; "
                "point data.path at the folder with all four IDX files (gzipped or raw)"
            )

    def params(self) -> dict[str, Any]:
        return {"path": None if self.path is None else str(self.path), "hub": self.hub, **super().params()}

    def info(self) -> DatasetInfo:
        return DatasetInfo(
            num_classes=10,
            channels=1,
            image_size=IMAGE_SIZE,
            mean=self.MEAN,
            std=self.STD,
            class_names=CLASS_NAMES,
        )

    def source(self) -> str:
        """Where :meth:`load` will read from: a folder, or ``"hub:<id>"``; raises if nowhere."""
        if self.path is not None:
            return str(self.path)
        if DEFAULT_DIR.is_dir() and not missing_files(DEFAULT_DIR):
            return str(DEFAULT_DIR)
        if self.hub and not hub_offline():
            return f"hub:{HUB_ID}"
        reason = (
            "hub disabled (hub = false)" if not self.hub else "offline, so the Hugging Face hub is not tried"
        )
        raise SatError(f"dataset 'fashion_mnist': no data found in {DEFAULT_DIR} and {reason}; {HOW_TO_GET}")

    def _load_store(self, split: str) -> datasets.Dataset:
        where = self.source()
        if where.startswith("hub:"):
            try:
                images, labels = load_from_hub(split)
            except SatError:
                raise
            except Exception as exc:  # network, auth, cache: all mean "not from the hub"
                raise SatError(
                    f"dataset 'fashion_mnist': no local files and the hub failed "
                    f"({first_line(exc, with_type=True)}); {HOW_TO_GET}"
                ) from None
        else:
            images, labels = read_split(Path(where), split)
        return build_store(images[:, None], labels, CLASS_NAMES, split)
