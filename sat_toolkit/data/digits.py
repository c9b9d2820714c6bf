"""``digits``: scikit-learn's bundled 8x8 handwritten digits, the dataset that needs nothing.

1797 grey 8x8 images with pixel values 0..16, ten classes. scikit-learn ships no
train/test split, so this module defines one and never changes it: results stay
comparable across machines and versions. The split is stratified (each class keeps
its share in both parts) and drawn with NumPy's legacy ``RandomState``, whose stream
NumPy freezes for exactly this kind of reproducibility.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import datasets
import numpy as np

from sat_toolkit.data.base import DatasetSource
from sat_toolkit.data.info import DatasetInfo
from sat_toolkit.data.store import build_store

SPLIT_SEED = 0
TEST_FRACTION = 0.2
CLASS_NAMES = tuple(str(d) for d in range(10))


def _bundled_csv() -> Path | None:
    """scikit-learn's own copy of the digits, found without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    for root in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if candidate.is_file():
            return candidate
    return None


@functools.lru_cache(maxsize=1)
def load_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 ``(images uint8 N x 1 x 8 x 8 in 0..16, labels int64)``, read-only.

    Reads the CSV that ``sklearn.datasets.load_digits`` reads (same values, same order)
    directly: importing scikit-learn costs over a second, the file 10 ms.
    """
    csv = _bundled_csv()
    if csv is not None:
        table = np.loadtxt(csv, delimiter=",", dtype=np.int64)
        pixels, target = table[:, :-1], table[:, -1]
    else:  # an unusual install layout: take the slow, official route
        from sklearn.datasets import load_digits

        bunch = load_digits()
        pixels, target = bunch.data.astype(np.int64), bunch.target.astype(np.int64)
    images = pixels.astype(np.uint8).reshape(-1, 1, 8, 8)
    labels = target.astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def split_indices(labels: np.ndarray, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Stratified ``(train, test)`` indices: about ``TEST_FRACTION`` of each class goes to test.

    Both index arrays follow one seeded permutation, so "the first N" of either split is
    itself a shuffled, roughly class-balanced sample (what ``limit_train`` takes).
    """
    order = np.random.RandomState(seed).permutation(len(labels))
    is_test = np.zeros(len(labels), dtype=bool)
    for cls in np.unique(labels):
        members = order[labels[order] == cls]
        is_test[members[: round(len(members) * TEST_FRACTION)]] = True
    return order[~is_test[order]], order[is_test[order]]


class Digits(DatasetSource):
    """8x8 digits from scikit-learn, pixels / 16 -> [0, 1]; fixed stratified split (1438/359).

    Args:
        limit_train: keep only the first N training examples.
        limit_test: keep only the first N test examples.
    """

    name = "digits"
    description = "scikit-learn 8x8 digits (1797 images, 10 classes); embedded, needs no download"
    pixel_max = 16.0
    input_shape = (1, 8, 8)

    # Training-split statistics of pixels / 16 (checked by the tests).
    MEAN = (0.3058,)
    STD = (0.3764,)

    def info(self) -> DatasetInfo:
        return DatasetInfo(
            num_classes=10,
            channels=1,
            image_size=(8, 8),
            mean=self.MEAN,
            std=self.STD,
            class_names=CLASS_NAMES,
        )

    def _load_store(self, split: str) -> datasets.Dataset:
        images, labels = load_arrays()
        train, test = split_indices(labels)
        index = train if split == "train" else test
        return build_store(images[index], labels[index], CLASS_NAMES, split)
