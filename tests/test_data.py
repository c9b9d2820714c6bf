"""Dataset plugins: the IDX parser, the digits split, Fashion-MNIST sources and fast serving."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from sat_toolkit.data import (
    DatasetInfo,
    Digits,
    FashionMNIST,
    IdxFormatError,
    TensorImageDataset,
    create_dataset,
    iterate_batches,
    make_loader,
    read_idx,
)
from sat_toolkit.data import digits as digits_module
from sat_toolkit.data import fashion_mnist as fashion_module
from sat_toolkit.data.store import build_store, store_to_tensors
from sat_toolkit.errors import SatError
from sat_toolkit.plugins import PluginKind, get_plugin_host

REAL_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
#: First 16 hex digits of sha256(test indices as int64): the digits split, pinned forever.
PINNED_TEST_SPLIT = "2cea339a522480cc"

# An IDX writer independent of the parser under test: type codes and layout from the
# format description (http://yann.lecun.com/exdb/mnist/), written with struct.
_TYPE_CODES = {
    np.uint8: 0x08,
    np.int8: 0x09,
    np.int16: 0x0B,
    np.int32: 0x0C,
    np.float32: 0x0D,
    np.float64: 0x0E,
}


def idx_bytes(array: np.ndarray) -> bytes:
    code = _TYPE_CODES[array.dtype.type]
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool) -> Path:
    raw = idx_bytes(array)
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def write_fashion_folder(
    folder: Path, n_train: int = 12, n_test: int = 5, seed: int = 0
) -> dict[str, np.ndarray]:
    """Four synthetic Fashion-MNIST IDX files, mixing gzip/raw and '-'/'.' name styles."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    write_idx(folder / "train-images-idx3-ubyte.gz", arrays["train_images"], compress=True)
    write_idx(folder / "train-labels-idx1-ubyte", arrays["train_labels"], compress=False)
    write_idx(folder / "t10k-images.idx3-ubyte", arrays["test_images"], compress=False)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", arrays["test_labels"], compress=True)
    return arrays


# -- IDX parser ------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize(
    ("dtype", "shape"),
    [
        (np.uint8, (7, 28, 28)),
        (np.uint8, (9,)),
        (np.int8, (3, 4)),
        (np.int16, (2, 3, 5)),
        (np.int32, (6,)),
        (np.float32, (4, 2)),
        (np.float64, (3, 1, 2, 2)),
    ],
)
def test_read_idx_round_trips_exactly(
    tmp_path: Path, compress: bool, dtype: type, shape: tuple[int, ...]
) -> None:
    rng = np.random.default_rng(1)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    else:
        array = rng.standard_normal(shape).astype(dtype)
    parsed = read_idx(write_idx(tmp_path / "x.idx", array, compress))
    assert parsed.shape == array.shape
    assert parsed.dtype == np.dtype(dtype)  # native byte order, not the file's big-endian
    np.testing.assert_array_equal(parsed, array)
    assert parsed.flags.writeable and parsed.flags.c_contiguous


def test_read_idx_rejects_truncated_and_padded_files(tmp_path: Path) -> None:
    raw = idx_bytes(np.zeros((10, 28, 28), dtype=np.uint8))
    (tmp_path / "short").write_bytes(raw[:-1])
    with pytest.raises(IdxFormatError, match=r"short: truncated: header says shape \(10, 28, 28\)"):
        read_idx(tmp_path / "short")
    (tmp_path / "long").write_bytes(raw + b"\0")
    with pytest.raises(IdxFormatError, match="long: has trailing bytes"):
        read_idx(tmp_path / "long")
    (tmp_path / "header").write_bytes(raw[:9])
    with pytest.raises(IdxFormatError, match=r"header: truncated IDX header \(9 of 16 bytes\)"):
        read_idx(tmp_path / "header")


def test_read_idx_rejects_bad_magic_type_and_gzip(tmp_path: Path) -> None:
    (tmp_path / "text.idx").write_bytes(b"hello world, not idx")
    with pytest.raises(IdxFormatError, match=r"text.idx: not an IDX file \(magic number 68656c6c"):
        read_idx(tmp_path / "text.idx")
    (tmp_path / "type.idx").write_bytes(struct.pack(">BBBBI", 0, 0, 0x07, 1, 0))
    with pytest.raises(IdxFormatError, match="type.idx: unknown IDX type code 0x07"):
        read_idx(tmp_path / "type.idx")
    packed = gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32)))
    (tmp_path / "cut.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(IdxFormatError, match="cut.gz: corrupt or truncated gzip data"):
        read_idx(tmp_path / "cut.gz")
    with pytest.raises(IdxFormatError, match="absent.gz: cannot read"):
        read_idx(tmp_path / "absent.gz")


# -- Fashion-MNIST ---------------------------------------------------------------------------


def test_fashion_mnist_reads_a_folder_of_idx_files_exactly(tmp_path: Path) -> None:
    arrays = write_fashion_folder(tmp_path / "fm")
    source = FashionMNIST(path=str(tmp_path / "fm"))
    assert source.source() == str(tmp_path / "fm")
    for split in ("train", "test"):
        data = source.load(split)
        images, labels = data[list(range(len(data)))]
        assert images.dtype == torch.float32 and labels.dtype == torch.int64
        assert images.shape == (len(arrays[f"{split}_labels"]), 1, 28, 28)
        expected = torch.from_numpy(arrays[f"{split}_images"]).float().unsqueeze(1) / 255
        assert torch.equal(images, expected)
        assert labels.tolist() == arrays[f"{split}_labels"].tolist()
        # The canonical Hugging Face store holds the raw pixels.
        assert isinstance(data.store, datasets.Dataset)
        assert np.array_equal(np.array(data.store[0]["image"]), arrays[f"{split}_images"][:1])
        assert data.store.features["label"].names[9] == "Ankle boot"


def test_fashion_mnist_limits_take_the_first_examples(tmp_path: Path) -> None:
    arrays = write_fashion_folder(tmp_path)
    source = create_dataset(
        {"name": "fashion_mnist", "path": str(tmp_path), "limit_train": 4, "limit_test": 2}
    )
    assert len(source.load("train")) == 4 and len(source.load("test")) == 2
    assert source.load("train").labels.tolist() == arrays["train_labels"][:4].tolist()
    assert source.load("train") is source.load("train")  # converted once, then cached


def test_fashion_mnist_checks_label_and_image_files_agree(tmp_path: Path) -> None:
    write_fashion_folder(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(11, dtype=np.uint8), compress=False)
    with pytest.raises(IdxFormatError, match=r"train-labels-idx1-ubyte: 11 labels for 12 images"):
        FashionMNIST(path=tmp_path).load("train")
    write_idx(tmp_path / "t10k-images.idx3-ubyte", np.zeros((5, 27, 28), dtype=np.uint8), compress=False)
    with pytest.raises(IdxFormatError, match=r"t10k-images.idx3-ubyte: expected uint8 images N x 28 x 28"):
        FashionMNIST(path=tmp_path).load("test")


def test_fashion_mnist_bad_path_names_the_parameter(tmp_path: Path) -> None:
    with pytest.raises(SatError, match=r"path '.*nowhere' is not a folder; set data.path"):
        FashionMNIST(path=tmp_path / "nowhere")
    (tmp_path / "half").mkdir()
    write_idx(tmp_path / "half" / "train-images-idx3-ubyte", np.zeros((1, 28, 28), np.uint8), compress=False)
    with pytest.raises(
        SatError, match=r"lacks train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-lab"
    ):
        create_dataset({"name": "fashion_mnist", "path": str(tmp_path / "half")})


@pytest.mark.parametrize("hub", [True, False])
def test_fashion_mnist_without_any_source_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub: bool
) -> None:
    monkeypatch.setattr(fashion_module, "DEFAULT_DIR", tmp_path / "absent")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_download(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the hub must not be tried when offline")

    monkeypatch.setattr(datasets, "load_dataset", no_download)
    source = FashionMNIST(hub=hub)
    assert source.info().num_classes == 10  # info never needs the files
    with pytest.raises(SatError, match=r"apt-get install dataset-fashion-mnist`, or set data.path") as caught:
        source.load("train")
    assert ("offline" in str(caught.value)) is hub
    assert "\n" not in str(caught.value)


def test_fashion_mnist_falls_back_to_the_hub_when_online(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub route, with ``load_dataset`` replaced by an in-memory stand-in (no network)."""
    from PIL import Image

    monkeypatch.setattr(fashion_module, "DEFAULT_DIR", tmp_path / "absent")
    monkeypatch.setattr(fashion_module, "hub_offline", lambda: False)
    pixels = np.random.default_rng(2).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    hub_split = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(p) for p in pixels], "label": [7, 0, 3]}, features=features
    )
    calls: list[tuple[str, str]] = []

    def fake_load_dataset(name: str, split: str) -> datasets.Dataset:
        calls.append((name, split))
        return hub_split

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    source = FashionMNIST()
    assert source.source() == "hub:zalando-datasets/fashion_mnist"
    data = source.load("test")
    assert calls == [("zalando-datasets/fashion_mnist", "test")]
    assert torch.equal(data.images[:, 0], torch.from_numpy(pixels).float() / 255)
    assert data.labels.tolist() == [7, 0, 3]

    def failing_load_dataset(name: str, split: str) -> None:
        raise ConnectionError("Couldn't reach the hub")

    monkeypatch.setattr(datasets, "load_dataset", failing_load_dataset)
    with pytest.raises(
        SatError, match=r"the hub failed \(ConnectionError: Couldn't reach the hub\); install"
    ):
        FashionMNIST().load("train")


@pytest.mark.skipif(
    not REAL_FASHION_DIR.is_dir(),
    reason=f"{REAL_FASHION_DIR} absent: install it with `apt-get install dataset-fashion-mnist`",
)
def test_real_fashion_mnist_from_debian_package() -> None:
    source = FashionMNIST()
    assert source.source() == str(REAL_FASHION_DIR)
    info = source.info()
    train, test = source.load("train"), source.load("test")
    assert (len(train), len(test)) == (60000, 10000)
    assert train.shape == test.shape == (1, 28, 28) == info.input_shape
    assert train.images.dtype == torch.float32
    raw = read_idx(REAL_FASHION_DIR / "t10k-images-idx3-ubyte.gz")
    assert torch.equal(test.images[:, 0], torch.from_numpy(raw).float() / 255)
    # Fashion-MNIST is exactly balanced: 6000 / 1000 of each of the 10 classes.
    assert torch.bincount(train.labels, minlength=10).tolist() == [6000] * 10
    assert torch.bincount(test.labels, minlength=10).tolist() == [1000] * 10
    pixels = train.images.double()
    assert pixels.mean().item() == pytest.approx(info.mean[0], abs=1e-4)
    assert pixels.std().item() == pytest.approx(info.std[0], abs=1e-4)
    image, label = train[0]
    assert image.dtype == torch.float32 and image.min() >= 0 and image.max() <= 1
    assert label.item() == 9  # the first training image is an ankle boot


# -- digits ----------------------------------------------------------------------------------


def _digest(*tensors: torch.Tensor) -> str:
    sha = hashlib.sha256()
    for tensor in tensors:
        sha.update(tensor.contiguous().numpy().tobytes())
    return sha.hexdigest()


def test_digits_split_is_fixed_disjoint_and_stratified() -> None:
    train_idx, test_idx = digits_module.split_indices(digits_module.load_arrays()[1])
    assert (len(train_idx), len(test_idx)) == (1438, 359)
    assert set(train_idx).isdisjoint(test_idx)
    assert sorted([*train_idx, *test_idx]) == list(range(1797))
    # Pinned: the split must never change, or results stop being comparable.
    assert (
        hashlib.sha256(np.asarray(test_idx, dtype=np.int64).tobytes()).hexdigest()[:16] == PINNED_TEST_SPLIT
    )

    labels = digits_module.load_arrays()[1]
    per_class_total = np.bincount(labels, minlength=10)
    per_class_test = np.bincount(labels[test_idx], minlength=10)
    assert np.all(np.abs(per_class_test - per_class_total * 0.2) <= 0.5)  # round(20%) of each class


def test_digits_loads_deterministically_in_unit_range() -> None:
    first, second = Digits(), Digits()
    for split in ("train", "test"):
        a, b = first.load(split), second.load(split)
        assert _digest(a.images, a.labels) == _digest(b.images, b.labels)
    train = first.load("train")
    images, labels = train[torch.arange(len(train))]
    assert images.dtype == torch.float32 and labels.dtype == torch.int64
    assert images.shape == (1438, 1, 8, 8)
    assert images.min().item() == 0.0 and images.max().item() == 1.0
    assert torch.equal(images * 16, images.mul(16).round())  # exactly k/16
    info = first.info()
    assert images.mean().item() == pytest.approx(info.mean[0], abs=1e-4)
    assert images.std().item() == pytest.approx(info.std[0], abs=1e-3)
    assert info == DatasetInfo(10, 1, (8, 8), info.mean, info.std, tuple("0123456789"))


def test_digits_matches_scikit_learn_load_digits() -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images, labels = digits_module.load_arrays()
    assert np.array_equal(images.reshape(-1, 64), bunch.data)
    assert np.array_equal(labels, bunch.target)


def test_dataset_limits_are_validated_and_applied() -> None:
    full = Digits().load("train")
    small = Digits(limit_train=100, limit_test=10)
    assert torch.equal(small.load("train").images, full.images[:100])
    assert len(small.load("test")) == 10
    assert len(Digits(limit_train=10_000).load("train")) == 1438
    from sat_toolkit.data import create_dataset

    refused = [(0, "must be >= 1, got 0"), (-3, "must be >= 1, got -3"), ("100", ": expected an integer")]
    for bad, why in refused:
        with pytest.raises(SatError, match=rf"dataset 'digits': limit_train ?{why}"):
            create_dataset({"name": "digits", "limit_train": bad})
    for bad in (1.5, True):
        with pytest.raises(SatError, match=r"dataset 'digits': limit_train: expected an integer"):
            create_dataset({"name": "digits", "limit_train": bad})
    with pytest.raises(SatError, match=r"unknown split 'validation'; use one of train, test"):
        Digits().load("validation")


# -- serving ---------------------------------------------------------------------------------


def _toy_dataset(n: int = 37) -> TensorImageDataset:
    gen = torch.Generator().manual_seed(3)
    return TensorImageDataset(torch.rand(n, 2, 3, 3, generator=gen), torch.arange(n) % 5)


def test_item_and_batch_indexing_agree() -> None:
    data = _toy_dataset()
    image, label = data[4]
    assert image.shape == (2, 3, 3) and torch.equal(image, data.images[4]) and label.item() == 4
    for index in ([4, 0, 9], torch.tensor([4, 0, 9]), (4, 0, 9)):
        batch_images, batch_labels = data[index]
        assert torch.equal(batch_images, torch.stack([data[4][0], data[0][0], data[9][0]]))
        assert batch_labels.tolist() == [4, 0, 4]
    assert torch.equal(data[2:5][0], data[[2, 3, 4]][0])
    batch_images, _ = data[[1, 2]]
    batch_images.zero_()  # a batch is a copy: training code may modify it in place
    assert data.images[1].abs().sum() > 0


def test_from_store_scales_raw_pixels_exactly() -> None:
    raw = np.arange(2 * 1 * 4 * 4, dtype=np.uint8).reshape(2, 1, 4, 4) * 8
    data = TensorImageDataset.from_store(
        build_store(raw, np.array([1, 0]), ["a", "b"], "test"), pixel_max=255.0
    )
    assert data.images.dtype == torch.float32 and data.images.is_contiguous()
    assert torch.equal(data.images, torch.from_numpy(raw).float() / 255)
    assert data.labels.tolist() == [1, 0]


def test_make_loader_yields_what_a_plain_dataloader_yields() -> None:
    data = _toy_dataset()
    plain = DataLoader(data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(5))
    fast = make_loader(data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(5))
    pairs = list(zip(plain, fast, strict=True))
    assert len(pairs) == 5
    for (x1, y1), (x2, y2) in pairs:
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_make_loader_survives_accelerate_prepare() -> None:
    accelerate = pytest.importorskip("accelerate")
    data = _toy_dataset()
    try:
        loader = accelerate.Accelerator().prepare(make_loader(data, 8, shuffle=True))
        assert len(loader) == 5
        labels = torch.cat([y.cpu() for _, y in loader])
    finally:  # the accelerator state is a process-wide singleton: leave none behind
        accelerate.state.AcceleratorState._reset_state(reset_partial_state=True)
    assert sorted(labels.tolist()) == sorted(data.labels.tolist())


def test_iterate_batches_visits_each_example_once() -> None:
    data = _toy_dataset()
    seen = torch.cat([labels for _, labels in iterate_batches(data, 10)])
    assert torch.equal(seen, data.labels)
    gen = torch.Generator().manual_seed(0)
    batches = list(iterate_batches(data, 10, shuffle=True, drop_last=True, generator=gen))
    assert [len(y) for _, y in batches] == [10, 10, 10]
    images = torch.cat([x for x, _ in batches])
    flat = (images * 255).round().to(torch.uint8).flatten(1)
    assert len({tuple(row.tolist()) for row in flat}) == 30  # no example twice


def test_store_round_trip_after_select() -> None:
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (20, 3, 4, 5), dtype=np.uint8)
    labels = rng.integers(0, 3, 20)
    store = build_store(images, labels, ["a", "b", "c"], "train")
    got_images, got_labels = store_to_tensors(store.select([7, 2, 19]))
    assert np.array_equal(got_images.numpy(), images[[7, 2, 19]])
    assert got_labels.tolist() == labels[[7, 2, 19]].tolist()
    assert store_to_tensors(store.select([]))[0].shape == (0, 3, 4, 5)


# -- info and plugins ------------------------------------------------------------------------


def test_dataset_info_round_trips_and_validates() -> None:
    info = DatasetInfo(3, 3, (32, 32), (0.1, 0.2, 0.3), (0.4, 0.5, 0.6), ("a", "b", "c"))
    assert DatasetInfo.from_dict(info.to_dict()) == info
    assert info.input_shape == (3, 32, 32)
    with pytest.raises(SatError, match=r"mean needs one value per channel \(3\)"):
        DatasetInfo(3, 3, (32, 32), (0.1,), (0.4, 0.5, 0.6))
    with pytest.raises(SatError, match=r"std \[0.0\]: the model sees pixels in \[0, 1\], so a std lies in"):
        DatasetInfo(3, 1, (8, 8), (0.1,), (0.0,))
    # A plugin's statistics of uint8 pixels (a stranger's walk: trained at chance, no word).
    with pytest.raises(SatError, match=r"mean \[77.5\]: .* in \[0, 1\]; for 8-bit statistics divide by 255"):
        DatasetInfo(3, 1, (8, 8), (77.5,), (60.9,))
    with pytest.raises(SatError, match="unknown key 'colour'"):
        DatasetInfo.from_dict({**info.to_dict(), "colour": True})


def test_plugin_host_finds_builtin_datasets() -> None:
    host = get_plugin_host()
    assert host.get(PluginKind.DATASET, "digits") is Digits
    assert host.get(PluginKind.DATASET, "fashion_mnist") is FashionMNIST
    for cls in (Digits, FashionMNIST):
        assert cls.description and "\n" not in cls.description


def test_create_dataset_names_unknown_parameters() -> None:
    with pytest.raises(
        SatError, match=r"dataset 'digits' has no parameter 'limit'; valid parameters: limit_train"
    ):
        create_dataset({"name": "digits", "limit": 5})
    assert isinstance(create_dataset("digits"), Digits)
