"""ImageNet-style data plugins: ``imagefolder``, ``hub``, ``synthetic`` and their transforms.

Every image is generated here with PIL, a few per class, and each class has its own
dominant colour channel, so a decoded image tells which label it must carry.
Nothing is downloaded: the hub plugin reads a ``save_to_disk`` folder made in the test.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from sat_toolkit.data import create_dataset
from sat_toolkit.data.fashion_mnist import hub_offline
from sat_toolkit.data.hub import HubImages
from sat_toolkit.data.imagefolder import ImageFolder
from sat_toolkit.data.synthetic import Synthetic
from sat_toolkit.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PCA_EIGVAL,
    PCA_EIGVEC,
    Lighting,
    eval_resize_size,
    eval_transform,
    train_transform,
)
from sat_toolkit.engine.loader import training_loader
from sat_toolkit.errors import SatError

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 24
#: Created in this (non-alphabetical) order; labels must follow sorted folder names.
COLOUR_CHANNEL = {"dog": 2, "ant": 0, "cat": 1}
SORTED = ("ant", "cat", "dog")
SHAPES = ((40, 48), (56, 40), (32, 32))  # (width, height): landscape, portrait, square


def make_image(channel: int, size: tuple[int, int], seed: int, mode: str = "RGB") -> Image.Image:
    """A gradient image whose brightest channel is ``channel`` (survives JPEG and crops)."""
    width, height = size
    rng = np.random.default_rng(seed)
    pixels = np.full((height, width, 3), 30, dtype=np.int64)
    pixels[..., channel] = 170 + np.linspace(0, 60, width, dtype=np.int64)[None, :]
    pixels += rng.integers(0, 20, size=pixels.shape)
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")
    return image.convert(mode)


def class_of(image: torch.Tensor) -> str:
    """The class whose colour channel dominates ``image`` (3 x H x W)."""
    channel = int(image.mean(dim=(1, 2)).argmax())
    return next(name for name, c in COLOUR_CHANNEL.items() if c == channel)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``root/train/<class>/`` (3 images each, JPEG + PNG) and ``root/val/<class>/`` (2 each)."""
    root = tmp_path_factory.mktemp("imagefolder")
    for split, count in (("train", 3), ("val", 2)):
        for name, channel in COLOUR_CHANNEL.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                image = make_image(channel, SHAPES[i], seed=100 * (split == "val") + 10 * channel + i)
                if i == 1:
                    image.convert("RGBA").save(folder / f"img{i}.png")
                else:
                    image.save(folder / f"img{i}.JPEG", quality=95)
            (folder / "notes.txt").write_text("not an image")
    (root / "train" / ".cache").mkdir()  # hidden folders are not classes
    return root


@pytest.fixture(scope="module")
def hub_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``DatasetDict`` (train / validation / unlabelled test) saved with ``save_to_disk``."""
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=list(SORTED))}
    )

    def split(count: int, unlabelled: bool = False) -> datasets.Dataset:
        rows = [(name, i) for name in SORTED for i in range(count)]
        images = [make_image(COLOUR_CHANNEL[n], SHAPES[i % 3], seed=i) for n, i in rows]
        labels = [-1 if unlabelled else SORTED.index(n) for n, _ in rows]
        return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)

    path = tmp_path_factory.mktemp("hub") / "saved"
    datasets.DatasetDict(
        {"train": split(3), "validation": split(2), "test": split(1, unlabelled=True)}
    ).save_to_disk(str(path))
    return path


# ---- transforms ------------------------------------------------------------------------


def test_eval_transform_resizes_short_side_then_centre_crops() -> None:
    assert eval_resize_size(224) == 256 and eval_resize_size(128) == 146
    image = make_image(0, (64, 32), seed=0)
    out = eval_transform(16)(image)
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32
    white = eval_transform(16)(Image.new("RGB", (50, 40), (255, 255, 255)))
    assert torch.equal(white, torch.ones(3, 16, 16))  # no normalisation: white stays 1.0
    assert torch.equal(eval_transform(16)(image), out)  # deterministic


def test_train_transform_is_random_and_stays_in_range() -> None:
    image = make_image(1, (48, 40), seed=1)
    transform = train_transform(SIZE, lighting=0.1)
    torch.manual_seed(0)
    outs = [transform(image) for _ in range(4)]
    for out in outs:
        assert out.shape == (3, SIZE, SIZE) and out.dtype == torch.float32
        assert out.min() >= 0.0 and out.max() <= 1.0
    assert not torch.equal(outs[0], outs[1])
    torch.manual_seed(0)
    assert torch.equal(transform(image), outs[0])  # randomness comes from torch's seeded RNG


def test_lighting_adds_one_pca_colour_shift_per_image() -> None:
    torch.manual_seed(3)
    out = Lighting(0.1)(torch.full((3, 4, 4), 0.5))
    shift = out[:, 0, 0] - 0.5
    assert torch.allclose(out, (0.5 + shift).view(3, 1, 1).expand(3, 4, 4))
    # The shift is a combination of the eigenvectors weighted by the eigenvalues.
    alpha = torch.linalg.solve(torch.tensor(PCA_EIGVEC), shift) / torch.tensor(PCA_EIGVAL)
    assert alpha.abs().max() < 0.6  # |N(0, 0.1)| draws
    assert torch.equal(Lighting(0.0)(out), out)


# ---- imagefolder -------------------------------------------------------------------------


def test_imagefolder_info_and_label_mapping(tree: Path) -> None:
    source = create_dataset({"name": "imagefolder", "path": str(tree), "image_size": SIZE})
    info = source.info()
    assert info.class_names == SORTED and info.num_classes == 3
    assert info.image_size == (SIZE, SIZE) and info.channels == 3
    assert info.mean == IMAGENET_MEAN and info.std == IMAGENET_STD
    test = source.load("test")
    assert len(test) == 6 and len(source.load("train")) == 9
    for index in range(len(test)):
        image, label = test[index]
        assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32
        assert image.min() >= 0.0 and image.max() <= 1.0
        assert label.dtype == torch.int64 and label.ndim == 0
        assert SORTED[int(label)] == class_of(image)


def test_imagefolder_reports_the_recipes_statistics_one_value_standing_for_every_channel(tree: Path) -> None:
    spec = {
        "name": "imagefolder",
        "path": str(tree),
        "image_size": SIZE,
        "mean": [0.5],
        "std": [0.1, 0.2, 0.3],
    }
    info = create_dataset(spec).info()
    assert info.mean == (0.5, 0.5, 0.5) and info.std == (0.1, 0.2, 0.3)
    with pytest.raises(SatError, match=r"dataset 'imagefolder': std: needs mean too: set both"):
        create_dataset({"name": "imagefolder", "path": str(tree), "std": [0.2]})


def test_imagefolder_eval_deterministic_train_random(tree: Path) -> None:
    source = ImageFolder(path=tree, image_size=SIZE)
    test, train = source.load("test"), source.load("train")
    assert torch.equal(test[0][0], test[0][0])
    torch.manual_seed(0)
    first, second = train[4][0], train[4][0]
    assert not torch.equal(first, second)
    assert SORTED[int(train[4][1])] == class_of(first) == class_of(second)


def test_imagefolder_batches_for_the_engine(tree: Path) -> None:
    test = ImageFolder(path=tree, image_size=SIZE).load("test")
    images, labels = test[[0, 3, 5]]
    assert images.shape == (3, 3, SIZE, SIZE) and labels.tolist() == [test.label(i) for i in (0, 3, 5)]
    for index in (torch.tensor([0, 3, 5]), np.array([0, 3, 5])):
        images_i, labels_i = test[index]
        assert torch.equal(images, images_i) and torch.equal(labels, labels_i)
    batch_x, batch_y = next(iter(training_loader(test, batch_size=4)))
    assert batch_x.shape == (4, 3, SIZE, SIZE) and batch_y.shape == (4,)


def test_imagefolder_decodes_in_worker_processes(tree: Path) -> None:
    test = ImageFolder(path=tree, image_size=SIZE).load("test")
    # What a spawned worker (macOS, Windows, CUDA setups) receives: paths and labels, no
    # pixels, and it decodes the same. Spawning two fresh interpreters here would cost
    # ~15 s of imports on two shared cores, so the loader below uses the platform default.
    blob = pickle.dumps(test)
    assert len(blob) < 20_000
    assert torch.equal(pickle.loads(blob)[4][0], test[4][0])
    loader = DataLoader(test, batch_size=3, num_workers=2)
    batches = list(loader)
    assert [len(y) for _, y in batches] == [3, 3]
    images = torch.cat([x for x, _ in batches])
    expected = torch.stack([test[i][0] for i in range(len(test))])
    assert torch.equal(images, expected)
    assert torch.cat([y for _, y in batches]).tolist() == [test.label(i) for i in range(len(test))]


def test_imagefolder_grey_and_limits(tree: Path) -> None:
    grey = ImageFolder(path=tree, image_size=SIZE, channels=1, lighting=0.0)
    assert grey.info().channels == 1 and grey.info().mean == (0.449,)
    assert grey.load("test")[0][0].shape == (1, SIZE, SIZE)
    limited = ImageFolder(path=tree, image_size=SIZE, limit_train=4)
    again = ImageFolder(path=tree, image_size=SIZE, limit_train=4)
    assert len(limited.load("train")) == 4
    assert limited.load("train").paths.tolist() == again.load("train").paths.tolist()
    assert len(set(limited.load("train").labels.tolist())) > 1  # a sample, not the first class


def test_imagefolder_explicit_classes_for_eval_only_machines(tree: Path) -> None:
    source = ImageFolder(path=tree, image_size=SIZE, train_split="missing", classes=list(SORTED))
    assert source.info().class_names == SORTED
    assert len(source.load("test")) == 6


def test_imagefolder_errors(tree: Path, tmp_path: Path) -> None:
    with pytest.raises(
        SatError, match=r"'.*nowhere' is not a folder; expected the layout <path>/<split>/<class>"
    ):
        ImageFolder(path=tmp_path / "nowhere")
    source = ImageFolder(path=tree, test_split="validation")
    with pytest.raises(
        SatError, match=r"no 'validation' folder for the test split .*sub-folders there: train, val"
    ):
        source.load("test")
    with pytest.raises(SatError, match="unknown split"):
        source.load("val")
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "train" / "b").mkdir()
    (tmp_path / "val" / "c").mkdir(parents=True)
    with pytest.raises(SatError, match="no images"):
        ImageFolder(path=tmp_path).load("train")
    with pytest.raises(SatError, match="class folder 'c' that the train split lacks"):
        ImageFolder(path=tmp_path).load("test")
    with pytest.raises(SatError, match="lighting noise needs RGB"):
        ImageFolder(path=tree, channels=1, lighting=0.1)
    assert ImageFolder(path=tree, channels=1).augmentation.lighting == 0.0  # grey: no lighting by default
    with pytest.raises(SatError, match="dataset 'imagefolder': image_size must be >= 1, got 0"):
        create_dataset({"name": "imagefolder", "path": str(tree), "image_size": 0})
    with pytest.raises(SatError, match="no parameter 'size'"):
        create_dataset({"name": "imagefolder", "path": str(tree), "size": 3})


# ---- hub -----------------------------------------------------------------------------------


def test_hub_local_save_to_disk(hub_dir: Path) -> None:
    source = create_dataset({"name": "hub", "path": str(hub_dir), "image_size": SIZE})
    info = source.info()
    assert info.class_names == SORTED and info.num_classes == 3 and info.image_size == (SIZE, SIZE)
    assert source.split_name("test") == "validation"  # preferred over the unlabelled "test"
    test = source.load("test")
    assert len(test) == 6 and len(source.load("train")) == 9
    for index in range(len(test)):
        image, label = test[index]
        assert image.shape == (3, SIZE, SIZE) and image.min() >= 0.0 and image.max() <= 1.0
        assert SORTED[int(label)] == class_of(image)
    assert torch.equal(test[2][0], test[2][0])
    copy = pickle.loads(pickle.dumps(test))  # what a spawned worker receives
    assert torch.equal(copy[2][0], test[2][0]) and len(pickle.dumps(test)) < 50_000
    images, labels = test[[0, 5]]
    assert images.shape == (2, 3, SIZE, SIZE) and labels.tolist() == [0, 2]
    assert len(HubImages(path=hub_dir, limit_test=4).load("test")) == 4


def test_hub_integer_labels(tmp_path: Path) -> None:
    features = datasets.Features({"img": datasets.Image(), "y": datasets.Value("int64")})
    # Every class 0..3 has a training image (one that skips a class is refused: test_cifar_recipes).
    rows = {"img": [make_image(c, (20, 20), seed=c) for c in (0, 1, 2, 1)], "y": [0, 1, 3, 2]}
    table = datasets.Dataset.from_dict(rows, features=features)
    datasets.DatasetDict({"train": table, "test": table}).save_to_disk(str(tmp_path / "d"))
    source = HubImages(path=tmp_path / "d", image_column="img", label_column="y", image_size=8)
    assert source.info().num_classes == 4 and source.info().class_names is None
    assert source.load("test")[2][1] == 3


def test_hub_id_offline_names_the_switch() -> None:
    if not hub_offline():  # conftest sets it; never let this test reach the network
        pytest.skip("needs HF_HUB_OFFLINE=1")
    with pytest.raises(SatError, match="not in the local Hugging Face cache and HF_HUB_OFFLINE"):
        HubImages(id="nobody/no-such-dataset").info()


def test_hub_errors(hub_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(SatError, match="set id .* or path"):
        HubImages()
    with pytest.raises(SatError, match="not a save_to_disk folder"):
        HubImages(path=tmp_path)
    with pytest.raises(SatError, match="unlabelled"):
        HubImages(path=hub_dir, test_split="test").load("test")
    with pytest.raises(SatError, match="no split 'holdout'"):
        HubImages(path=hub_dir, test_split="holdout").load("test")
    with pytest.raises(SatError, match="no column 'pixels'.*set image_column"):
        HubImages(path=hub_dir, image_column="pixels").info()


# ---- synthetic ------------------------------------------------------------------------------


def test_synthetic_is_deterministic_per_index() -> None:
    source = create_dataset({"name": "synthetic", "num_classes": 5, "image_size": 16, "train_size": 20})
    info = source.info()
    assert info.num_classes == 5 and info.input_shape == (3, 16, 16) and info.mean == IMAGENET_MEAN
    train = source.load("train")
    assert len(train) == 20 and len(source.load("test")) == 256
    image, label = train[7]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32 and label.dtype == torch.int64
    assert image.min() >= 0.0 and image.max() <= 1.0 and 0 <= int(label) < 5
    fresh = Synthetic(num_classes=5, image_size=16, train_size=20).load("train")
    assert torch.equal(fresh[7][0], image) and fresh[7][1] == label  # any instance, any order
    batch, labels = train[[7, 3]]
    assert torch.equal(batch[0], image) and labels[0] == label
    assert not torch.equal(source.load("test")[7][0], image)
    assert not torch.equal(Synthetic(num_classes=5, image_size=16, seed=1).load("train")[7][0], image)
    x, y = next(iter(DataLoader(train, batch_size=4)))
    assert x.shape == (4, 3, 16, 16) and y.shape == (4,)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("num_classes", 1, "num_classes must be >= 2, got 1"),
        ("test_size", 0, "test_size must be >= 1, got 0"),
        ("channels", 2, "channels must be one of 1, 3, got integer 2"),
        ("image_size", 0, "image_size must be >= 1, got 0"),
    ],
)
def test_synthetic_parameters_are_checked_by_the_factory_from_their_declaration(
    key: str, value: int, message: str
) -> None:
    """Declared once in the signature: recipe validation and create_dataset share the check."""
    with pytest.raises(SatError, match=message):
        create_dataset({"name": "synthetic", key: value})


def test_synthetic_errors() -> None:
    with pytest.raises(IndexError):
        Synthetic(train_size=3).load("train")[3]
