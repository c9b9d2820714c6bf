"""The CIFAR recipes: the CIFAR augmentation chosen in the recipe, and a run on a local copy.

No CIFAR image is downloaded: a CIFAR-shaped ``save_to_disk`` copy (32x32 RGB, the hub
datasets' column names) stands in for ``uoft-cs/cifar10`` / ``uoft-cs/cifar100``, given
the way the recipes tell a user without the network to give theirs (``--set data.path``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from sat_toolkit.cli import cli
from sat_toolkit.data import create_dataset
from sat_toolkit.data.transforms import CROP_PADDING, Augmentation
from sat_toolkit.errors import SatError
from sat_toolkit.export import load_model
from sat_toolkit.recipe import load_recipe
from sat_toolkit.recipe.toml_io import read_file

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
SIDE = 32


def cifar_copy(directory: Path, label_columns: dict[str, int], n_train: int = 24, n_test: int = 8) -> Path:
    """A DatasetDict like the hub's CIFAR: an ``img`` column and ClassLabel columns, saved to disk."""
    rng = np.random.default_rng(0)
    features = datasets.Features(
        {
            "img": datasets.Image(),
            **{c: datasets.ClassLabel(names=[f"{c}{i}" for i in range(k)]) for c, k in label_columns.items()},
        }
    )

    def split(n: int) -> datasets.Dataset:
        rows = {
            "img": [Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)) for _ in range(n)]
        }
        rows.update({c: [i % k for i in range(n)] for c, k in label_columns.items()})
        return datasets.Dataset.from_dict(rows, features=features)

    path = directory / "cifar"
    datasets.DatasetDict({"train": split(n_train), "test": split(n_test)}).save_to_disk(str(path))
    return path


@pytest.fixture(scope="module")
def cifar10(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cifar_copy(tmp_path_factory.mktemp("cifar10"), {"label": 10})


def _recipe_data(recipe: str, path: Path) -> dict:
    """The recipe's own [data] table, pointed at a local copy as its comment says."""
    data = load_recipe(RECIPES / recipe, [f"data.path={str(path)!r}"]).data.plugin.to_dict()
    return {
        key: value
        for key, value in data.items()
        if key not in ("batch_size", "eval_batch_size", "num_workers")
    }


def _stored(image: Image.Image) -> torch.Tensor:
    """A stored image's uint8 pixels, C x H x W."""
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


def _served(image: torch.Tensor) -> torch.Tensor:
    """A served [0, 1] float image as uint8 pixels (after checking it is exactly k / 255)."""
    pixels = (image * 255).round().to(torch.uint8)
    assert torch.allclose(image, pixels.float() / 255, atol=1e-6, rtol=0)
    return pixels


def _placement(augmented: torch.Tensor, original: torch.Tensor) -> tuple[int, int, bool] | None:
    """(dx, dy, flipped) such that ``augmented`` is ``original`` zero-padded, cropped, maybe flipped."""
    pad = CROP_PADDING
    padded = torch.nn.functional.pad(original, (pad, pad, pad, pad))
    for flipped in (False, True):
        for dy in range(2 * pad + 1):
            for dx in range(2 * pad + 1):
                crop = padded[:, dy : dy + SIDE, dx : dx + SIDE]
                if torch.equal(crop.flip(-1) if flipped else crop, augmented):
                    return dx - pad, dy - pad, flipped
    return None


def test_crop_flip_pads_crops_and_flips_training_images_and_never_resizes_test_images(cifar10: Path) -> None:
    source = create_dataset(_recipe_data("cifar10_preact_resnet18.toml", cifar10))
    assert source.info().num_classes == 10 and source.info().input_shape == (3, SIDE, SIDE)
    assert source.augmentation == Augmentation("hub", "crop_flip", SIDE, 0.0, 0.0, CROP_PADDING)
    stored = datasets.load_from_disk(str(cifar10))

    test = source.load("test")
    for index in range(len(test)):  # exactly the stored pixels: no resize, no crop, no jitter
        assert torch.equal(_served(test[index][0]), _stored(stored["test"][index]["img"]))

    train = source.load("train")
    torch.manual_seed(0)
    placements = [
        _placement(_served(train[i][0]), _stored(stored["train"][i]["img"])) for i in range(len(train))
    ]
    assert None not in placements  # every training image is a padded, shifted, maybe flipped copy
    assert {flipped for _, _, flipped in placements} == {False, True}
    assert len({(dx, dy) for dx, dy, _ in placements}) > 5  # random offsets, not a fixed crop


def test_crop_flip_refuses_images_of_another_size(cifar10: Path) -> None:
    data = {**_recipe_data("cifar10_preact_resnet18.toml", cifar10), "image_size": 28}
    with pytest.raises(SatError, match=r"row 0 of split 'test' is 32x32 and image_size = 28; set image_size"):
        create_dataset(data).load("test")[0]


def test_one_odd_sized_image_is_named_by_split_and_row(tmp_path: Path) -> None:
    """Among thousands of right-sized images, the error says which one is not (its row in the
    stored table, also when limit_train serves a sample of the rows)."""
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=2)})
    sides = [SIDE] * 20
    sides[13] = 30
    rows = {"img": [Image.new("RGB", (side, side)) for side in sides], "label": [i % 2 for i in range(20)]}
    split = datasets.Dataset.from_dict(rows, features=features)
    path = tmp_path / "copy"
    datasets.DatasetDict({"train": split, "test": split}).save_to_disk(str(path))
    spec = {
        "name": "hub",
        "path": str(path),
        "image_column": "img",
        "image_size": SIDE,
        "augmentation": "crop_flip",
    }
    expected = "but row 13 of split 'train' is 30x30 and image_size = 32"
    with pytest.raises(SatError, match=expected):
        create_dataset(spec).load("train")[13]
    sample = create_dataset({**spec, "limit_train": 15}).load("train")
    position = [i for i in range(len(sample)) if sample.describe(i) == "row 13 of split 'train'"]
    assert len(position) == 1 and position[0] != 13
    with pytest.raises(SatError, match=expected):
        sample[position[0]]


def test_augmentation_defaults_follow_the_choice_and_mistakes_are_one_line_errors() -> None:
    assert Augmentation.checked("hub", "imagenet", 224, 3).params() == {
        "augmentation": "imagenet", "color_jitter": 0.4, "lighting": 0.1, "crop_padding": None,
    }  # fmt: skip
    assert Augmentation.checked("hub", "imagenet", 224, 1).lighting == 0.0  # grey: no PCA lighting
    assert Augmentation.checked("hub", "crop_flip", 32, 3).params() == {
        "augmentation": "crop_flip", "color_jitter": 0.0, "lighting": 0.0, "crop_padding": 4,
    }  # fmt: skip
    mistakes = [
        ({"name": "cifar"}, "augmentation must be one of imagenet, crop_flip, none, got 'cifar'"),
        ({"name": "imagenet", "crop_padding": 4}, "crop_padding belongs to augmentation = 'crop_flip'"),
        ({"name": "none", "color_jitter": 0.4}, "color_jitter = 0.4 with augmentation = 'none'"),
        ({"name": "crop_flip", "crop_padding": -1}, "crop_padding must be a whole number of pixels >= 0"),
    ]
    for params, message in mistakes:
        name = params.pop("name")
        with pytest.raises(SatError, match=message):
            Augmentation.checked("hub", name, 32, 3, **params)


def test_a_recipe_that_names_the_hub_id_reads_a_local_copy_instead(cifar10: Path) -> None:
    source = create_dataset(_recipe_data("cifar10_preact_resnet18.toml", cifar10))
    assert source.params()["id"] == "uoft-cs/cifar10" and source.params()["path"] == str(cifar10)
    assert len(source.load("train")) == 24  # read from the copy; offline, the hub id could not be


@pytest.mark.parametrize(
    ("recipe", "labels"),
    [
        ("cifar10_preact_resnet18.toml", {"label": 10}),
        ("cifar100_preact_resnet18.toml", {"fine_label": 100, "coarse_label": 20}),
    ],
)
def test_cifar_recipe_trains_and_evaluates_on_a_local_copy(
    recipe: str, labels: dict[str, int], tmp_path: Path
) -> None:
    """The README's path for a machine without the network: the recipe plus --set data.path."""
    copy = cifar_copy(tmp_path, labels)
    out = tmp_path / "run"
    small = [
        f"data.path={str(copy)!r}", f"run.output_dir={str(out)!r}", "train.steps=2", "data.batch_size=8",
        "data.num_workers=0", "model.width=8", "attack.train.steps=2", "attack.eval.samples=8",
        "attack.eval.apgd_ce.steps=5", "attack.eval.apgd_t.steps=5", "attack.eval.apgd_t.n_target_classes=2",
        "logging.tensorboard=false",
    ]  # fmt: skip
    args = ["run", str(RECIPES / recipe), "--no-progress"]
    for item in small:
        args += ["--set", item]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["evaluation"]["samples"] == 8
    saved = load_recipe(out / "recipe.toml")
    data = saved.data.plugin.to_dict()
    assert (data["augmentation"], data["path"], data["image_size"]) == ("crop_flip", str(copy), SIDE)
    classes = next(iter(labels.values()))  # the recipe's label column: label / fine_label
    model = load_model(out / "model.safetensors")
    assert model(torch.rand(2, 3, SIDE, SIDE)).shape == (2, classes)
    declared = read_file(RECIPES / recipe)["data"]  # CIFAR's own statistics, not ImageNet's
    assert model.normalize.mean.flatten().tolist() == pytest.approx(declared["mean"])
    assert model.normalize.std.flatten().tolist() == pytest.approx(declared["std"])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_images_the_augmentation_cannot_take_stop_the_run_before_it_writes_anything(
    cifar10: Path, tmp_path: Path, num_workers: int
) -> None:
    """crop_flip at image_size 28 on 32x32 images: one line naming the fix, and no run
    directory. It used to fail at the first batch, in a loader worker (the worker's traceback
    inside the message), after recipe.toml was written: a corrected recipe was then refused."""
    out = tmp_path / "run"
    small = [
        f"data.path={str(cifar10)!r}", f"run.output_dir={str(out)!r}", "data.image_size=28",
        "train.steps=2", "data.batch_size=8", f"data.num_workers={num_workers}", "model.width=8",
    ]  # fmt: skip
    args = ["run", str(RECIPES / "cifar10_preact_resnet18.toml"), "--no-progress"]
    for item in small:
        args += ["--set", item]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == (
        "Error: dataset 'hub': augmentation = 'crop_flip' serves images at their own size, but row 0 of "
        "split 'train' is 32x32 and image_size = 28; set image_size (data.image_size in the recipe, or "
        "--set data.image_size=...) to the images' size, or augmentation = 'imagenet' to resize and crop"
    )
    assert not out.exists()


def test_a_sat_error_from_a_loader_worker_keeps_its_one_line() -> None:
    """torch re-raises a worker's exception with the worker's traceback as its message."""

    class Broken(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, index: int) -> object:
            raise SatError("dataset 'broken': image 3 is not an image; remove it")

    with pytest.raises(SatError) as caught:
        list(torch.utils.data.DataLoader(Broken(), num_workers=1))
    assert caught.value.format_message() == "dataset 'broken': image 3 is not an image; remove it"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.channels=2", "data.channels: must be one of 1, 3, got integer 2 (from --set)"),
        ("data.image_size=0", "data.image_size: must be >= 1, got 0 (from --set)"),
    ],
)
def test_recipe_validate_checks_the_image_shape_a_run_would_refuse(override: str, message: str) -> None:
    """`recipe validate` once said ok to both; only `run` refused them, without the key."""
    recipe = RECIPES / "cifar10_preact_resnet18.toml"
    result = CliRunner().invoke(cli, ["recipe", "validate", str(recipe), "--set", override])
    assert result.exit_code == 2 and message in result.output, result.output


def test_eval_of_foreign_weights_reads_a_local_cifar_copy_at_its_own_size(
    cifar10: Path, tmp_path: Path
) -> None:
    """--data takes the plugin's parameters as --arch does: the copy's column, its 32 px, no resize.

    Without them eval could not name the column 'img', and the hub's defaults serve the
    32 px images upscaled to 224 px (which eval now says).
    """
    import timm
    from safetensors.torch import save_file

    body = timm.create_model("resnet10t", pretrained=False, num_classes=10, in_chans=3)
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in body.state_dict().items()}, str(weights))
    report = tmp_path / "report.json"
    data = "hub:image_column=img,image_size=32,augmentation=crop_flip"
    args = [
        "eval", str(weights), "--arch", "resnet10t", "--data", data, "--data-path", str(cifar10),
        "--mean", "0.5", "--std", "0.25", "--eps", "8/255", "--suite", "none", "--attack", "fgsm",
        "--samples", "8", "--no-checks", "--output", str(report),
    ]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    recorded = json.loads(report.read_text())["dataset"]
    chosen = {"image_column": "img", "image_size": 32, "augmentation": "crop_flip", "path": str(cifar10)}
    assert recorded == {"name": "hub", **chosen}
    served = create_dataset(recorded).load("test")[0][0]
    assert served.shape == (3, SIDE, SIDE)
    wrong = CliRunner().invoke(cli, [*args[:5], "hub:image_colum=img", *args[6:]])
    assert wrong.exit_code == 2 and "image_colum" in wrong.output and "image_column" in wrong.output
    assert "note: the test images are" not in result.output  # served whole: nothing to say of them
    # Left to the hub's defaults, the 32 px images are upscaled and cropped: the console says so.
    default_size = CliRunner().invoke(cli, [*args[:5], "hub:image_column=img", *args[6:-2]])
    assert default_size.exit_code == 0, default_size.output
    whole = "to evaluate them whole at their own size, add image_size=32,augmentation=none to --data"
    assert (
        "note: the test images are 32x32, served as augmentation=imagenet's evaluation does: resized to a "
        "short side of 256 and centre-cropped to 224x224, which cuts 6.25% of each side (dataset 'hub' "
        f"defaults to image_size=224); {whole}"
    ) in default_size.output
    # At their own size the ImageNet pipeline still crops them (a resize to 36, then 32 of it):
    # a stranger followed the old note's "add image_size=32" and lost 1/16 of each side unwarned.
    own_size = CliRunner().invoke(cli, [*args[:5], "hub:image_column=img,image_size=32", *args[6:-2]])
    assert own_size.exit_code == 0, own_size.output
    assert (
        "served as augmentation=imagenet's evaluation does: resized to a short side of 36 and centre-cropped "
        f"to 32x32, which cuts 6.25% of each side; {whole}"
    ) in own_size.output


def test_eval_names_the_data_option_a_datasets_hint_means(cifar10: Path, tmp_path: Path) -> None:
    """A dataset words its errors for a recipe ("set image_column"); eval says where that
    key goes on its command line, keeping what the user already gave in --data."""
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")  # never read: the data is refused first
    base = ["eval", str(weights), "--arch", "resnet10t", "--mean", "0.5", "--std", "0.25", "--eps", "8/255"]
    no_column = CliRunner().invoke(cli, [*base, "--data", f"hub:path={cifar10},image_size=32"])
    assert no_column.exit_code == 2
    assert no_column.output.strip().splitlines()[-1] == (
        f"Error: dataset 'hub': split 'train' of '{cifar10}' has no column 'image' (columns: img, label); "
        f"set image_column (with eval: --data hub:path={cifar10},image_size=32,image_column=...)"
    )
    no_folder = CliRunner().invoke(cli, [*base, "--data", "imagefolder"])
    assert no_folder.exit_code == 2
    assert no_folder.output.strip().splitlines()[-1] == (
        "Error: dataset 'imagefolder' needs the parameter 'path' (with eval: --data-path DIR)"
    )


def _integer_labelled_copy(directory: Path, labels: list[int]) -> Path:
    features = datasets.Features({"img": datasets.Image(), "label": datasets.Value("int64")})
    rng = np.random.default_rng(0)
    rows = {
        "img": [Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)) for _ in labels],
        "label": labels,
    }
    split = datasets.Dataset.from_dict(rows, features=features)
    path = directory / "copy"
    datasets.DatasetDict({"train": split, "test": split}).save_to_disk(str(path))
    return path


def test_run_names_the_recipe_key_a_datasets_hint_means(cifar10: Path, tmp_path: Path) -> None:
    """The same hint from `run`: the key is data.image_column in a recipe (a stranger's walk
    found "set image_column" the one hint that did not say where)."""
    args = [
        "run", str(RECIPES / "cifar10_preact_resnet18.toml"), "--no-progress",
        "--set", f"data.path={str(cifar10)!r}", "--set", 'data.image_column="image"',
        "--set", f"run.output_dir={str(tmp_path / 'run')!r}",
    ]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert (
        result.output.strip()
        .splitlines()[-1]
        .endswith(
            "has no column 'image' (columns: img, label); set image_column "
            "(data.image_column in the recipe, or --set data.image_column=...)"
        )
    )
    assert not (tmp_path / "run").exists()


def test_integer_labels_that_skip_a_class_are_refused_not_turned_into_an_untrained_output(
    tmp_path: Path,
) -> None:
    """1-based labels (1..10) once made an 11-class model whose class 0 no image taught."""
    spec = {"name": "hub", "image_column": "img", "image_size": SIDE, "augmentation": "crop_flip"}
    one_based = _integer_labelled_copy(tmp_path / "one", [1 + i % 10 for i in range(20)])
    with pytest.raises(SatError, match=r"run from 1 to 10 with no training image of class 0; number the"):
        create_dataset({**spec, "path": str(one_based)}).info()
    zero_based = _integer_labelled_copy(tmp_path / "zero", [i % 10 for i in range(20)])
    assert create_dataset({**spec, "path": str(zero_based)}).info().num_classes == 10


def test_a_declared_class_count_must_match_a_class_label_column(cifar10: Path) -> None:
    spec = _recipe_data("cifar10_preact_resnet18.toml", cifar10)
    assert spec["num_classes"] == 10 and create_dataset(spec).info().num_classes == 10
    with pytest.raises(
        SatError, match=r"num_classes = 100, but column 'label' of '.*' is a ClassLabel of 10 "
    ):
        create_dataset({**spec, "num_classes": 100}).info()


def test_a_declared_class_count_is_read_instead_of_the_integer_labels_and_bounds_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sat_toolkit.data.hub import HubImages

    copy = _integer_labelled_copy(tmp_path, [i % 10 for i in range(20)])
    spec = {"name": "hub", "image_column": "img", "image_size": SIDE, "augmentation": "crop_flip",
            "path": str(copy)}  # fmt: skip
    declared = create_dataset({**spec, "num_classes": 12})
    with monkeypatch.context() as patch:  # no pass over the label column
        patch.setattr(HubImages, "labels", lambda *_: pytest.fail("read the labels"))
        assert declared.info().num_classes == 12
    assert create_dataset(spec).info().num_classes == 10  # undeclared: read off the labels
    with pytest.raises(SatError, match=r"has label 9 outside 0\.\.4; raise num_classes \(5\) or pick"):
        create_dataset({**spec, "num_classes": 5}).load("train")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"std": None}, "data.mean: needs std too: set both (the statistics of your training images)"),
        ({"mean": None}, "data.std: needs mean too: set both"),
        (
            {"mean": [0.5, 0.4]},
            "data.mean: the data has 3 channel(s); give 1 or 3 values (one per channel), got 2",
        ),
        (
            {"std": [0.2, 0.0, 0.2]},
            "data.std: [0.2, 0.0, 0.2]: the model sees pixels in [0, 1], so a std lies in (0, 1]",
        ),
    ],
)
def test_a_recipes_statistics_are_checked_with_the_recipe(data: dict, message: str) -> None:
    from sat_toolkit.recipe import RecipeError

    raw = read_file(RECIPES / "cifar10_preact_resnet18.toml")
    raw["data"] = {key: value for key, value in {**raw["data"], **data}.items() if value is not None}
    with pytest.raises(RecipeError, match=re.escape(message)):
        load_recipe(raw)


def test_recipe_validate_names_8_bit_statistics_and_the_fix() -> None:
    recipe = RECIPES / "cifar10_preact_resnet18.toml"
    result = CliRunner().invoke(
        cli, ["recipe", "validate", str(recipe), "--set", "data.mean=[125.3, 123.0, 113.9]"]
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("Error: ") and line.endswith(
        "cifar10_preact_resnet18.toml: data.mean: [125.3, 123.0, 113.9]: the model sees pixels in [0, 1], "
        "so a mean lies in [0, 1]; for 8-bit statistics divide by 255 (e.g. 125.3 -> 0.4914) (from --set)"
    )


def _cifar_model_file(directory: Path, data: dict) -> Path:
    """What a CIFAR run exports: a 32 px model whose file records the dataset it was trained on."""
    from sat_toolkit.data.info import DatasetInfo
    from sat_toolkit.export import save_model
    from sat_toolkit.models import create_model

    info = DatasetInfo(num_classes=10, channels=3, image_size=(SIDE, SIDE), mean=(0.5,) * 3, std=(0.25,) * 3)
    model = create_model({"name": "small_cnn", "width": 8}, info, {"name": "silu"})
    config = {
        **model.sat_config,
        "dataset": data,
        "train_attack": {"name": "pgd", "eps": 8 / 255, "norm": "linf"},
    }
    return save_model(model, config, directory / "model.safetensors")


def test_eval_data_option_keeps_what_the_model_was_trained_on_and_refuses_another_size(
    cifar10: Path, tmp_path: Path
) -> None:
    """A stranger's walk: --data hub:image_column=img replaced the recorded settings, so the
    hub defaults (224 px, ImageNet crops) came back and a 32 px model was scored on 224 px
    images with normal-looking numbers."""
    model_file = _cifar_model_file(
        tmp_path, {"name": "hub", **_recipe_data("cifar10_preact_resnet18.toml", cifar10)}
    )
    base = ["eval", str(model_file), "--suite", "none", "--attack", "pgd:steps=2", "--samples", "8",
            "--no-checks", "--device", "cpu"]  # fmt: skip
    kept = CliRunner().invoke(
        cli, [*base, "--data", "hub:image_column=img", "--output", str(tmp_path / "r.json")]
    )
    assert kept.exit_code == 0, kept.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["n_examples"] == 8 and report["input_shape"] == [3, SIDE, SIDE]
    assert report["normalization"] == {"mean": [0.5] * 3, "std": [0.25] * 3}  # what the model applies
    statistics = CliRunner().invoke(cli, [*base, "--data", "hub:image_column=img,mean=[0.5],std=[0.5]"])
    assert statistics.exit_code == 2 and statistics.output.strip().splitlines()[-1].startswith(
        "Error: --data: mean does not change an evaluation: the model applies the normalisation it was "
        "trained with"
    )  # the report's dataset said mean 0.5 beside the model's own normalisation
    other = CliRunner().invoke(cli, [*base, "--data", "hub:image_column=img,image_size=64"])
    assert other.exit_code == 2 and "Traceback" not in other.output
    assert other.output.strip().splitlines()[-1] == (
        "Error: the dataset serves 3x64x64 images but the model was trained on 3x32x32 (its file records "
        "them); give --data the dataset's image_size and channels (e.g. --data NAME:image_size=32,channels=3)"
    )


def test_eval_refuses_a_dataset_with_other_classes_than_the_model_was_trained_on(tmp_path: Path) -> None:
    """A CIFAR-10 model on a CIFAR-100 copy: once an error naming the Python argument `y`
    (labels beyond 9), or numbers for the test images that happened to be labelled below 10."""
    copy = cifar_copy(tmp_path, {"fine_label": 100, "coarse_label": 20})
    data = {"name": "hub", **_recipe_data("cifar100_preact_resnet18.toml", copy)}
    model_file = _cifar_model_file(tmp_path, data)  # records the 100-class data, has 10 outputs
    args = ["eval", str(model_file), "--suite", "none", "--attack", "pgd:steps=2", "--samples", "8",
            "--no-checks", "--device", "cpu"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert result.output.strip().splitlines()[-1] == (
        "Error: the dataset has 100 classes but the model was trained on 10 (its file records them); "
        "evaluate it on the dataset it was trained on (with hub data, check --data's label_column)"
    )


def test_a_dry_run_on_a_local_copy_that_does_not_fit_the_recipe_stops_as_the_run_would(
    tmp_path: Path,
) -> None:
    """A stranger's walk: a CIFAR-100 copy under the CIFAR-10 recipe (no 'label' column) said
    "dry run ok" (data errors were swallowed as absent data); the real run then stopped."""
    copy = cifar_copy(tmp_path, {"fine_label": 100, "coarse_label": 20})
    args = ["run", str(RECIPES / "cifar10_preact_resnet18.toml"), "--dry-run", "--set", "data.batch_size=4",
            "--set", f"data.path={str(copy)!r}"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    (line,) = result.output.strip().splitlines()
    assert "label" in line and "dry run ok" not in result.output
