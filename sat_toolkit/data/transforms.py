"""Image transforms for decoded image data, chosen by the recipe, and the per-item dataset they run in.

Every transform ends in a float32 ``C x H x W`` tensor in [0, 1] at ``image_size`` and
never normalises: the model's first layer does (:class:`sat_toolkit.models.Normalize`),
so the attacker perturbs raw pixels, where epsilon is defined.

* :func:`train_transform` is the augmentation of the official SAT code (tensorpack's
  ``fbresnet_augmentor``): a random-resized crop (8-100 % of the area, aspect 3/4..4/3,
  bicubic) to ``image_size``, a horizontal flip, colour jitter of 0.4 for brightness,
  contrast and saturation in random order, and optional AlexNet-style PCA lighting noise
  (std 0.1 in the official code; ``lighting = 0`` turns it off).
* :func:`eval_transform` resizes the short side to ``image_size / 0.875`` (256 for 224)
  and takes the centre crop, the standard ImageNet evaluation.
* :class:`Augmentation` is the recipe's choice between that pipeline (``imagenet``), the
  CIFAR protocol (``crop_flip``: pad 4, random crop, flip; no resize at evaluation) and
  none, for every dataset plugin that decodes images.

Geometry and colour work on uint8 tensors (torchvision's fast kernels); the conversion
to float happens once, at the end, before the lighting noise.

:data:`IMAGENET_MEAN` / :data:`IMAGENET_STD` are the usual ImageNet training-set
statistics of [0, 1] RGB pixels; the image datasets report them in ``DatasetInfo``
unless the recipe gives its own ``mean`` and ``std`` (CIFAR's, say): computing statistics
over a million files is not worth it, since they only condition the input and a
checkpoint stores whatever values it was trained with. Grey images get their channel
averages.

torchvision is imported lazily: importing ``transforms.v2`` costs seconds, which the
plugin listing and every command that never touches image files should not pay.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import math
import operator
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from sat_toolkit.data.info import checked_statistics
from sat_toolkit.errors import SatError
from sat_toolkit.params import Param, defaults

if TYPE_CHECKING:
    from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Channel averages of the ImageNet statistics, for images read as grey.
GREY_MEAN = (0.449,)
GREY_STD = (0.226,)

#: Evaluation crop: the centre ``CROP_FRACTION`` of the resized short side.
CROP_FRACTION = 0.875
#: Official SAT code: BrightnessScale((0.6, 1.4)), Contrast((0.6, 1.4)), Saturation(0.4).
COLOR_JITTER = 0.4
#: Official SAT code: Lighting(0.1, eigval, eigvec).
LIGHTING_STD = 0.1
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)

#: PCA of ImageNet RGB pixels in [0, 1] (AlexNet; fb.resnet.torch), RGB order.
#: Columns of ``PCA_EIGVEC`` are the eigenvectors.
PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
PCA_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)

Transform = Callable[[Any], torch.Tensor]


def normalisation_stats(
    channels: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    *,
    dataset: str = "",
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)``: the recipe's statistics of its images, else ImageNet's (1 or 3 channels).

    Given, they come in pairs: a CIFAR mean under ImageNet's std would normalise with the
    statistics of no dataset at all.
    """
    if mean is None and std is None:
        return (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else (GREY_MEAN, GREY_STD)
    if mean is None or std is None:
        given, absent = ("mean", "std") if std is None else ("std", "mean")
        raise SatError(
            f"dataset '{dataset}': {given} needs {absent} too: set both (the statistics of your training "
            "images), or neither for ImageNet's"
        )
    try:
        return checked_statistics(mean, std, channels, names=("mean", "std"))
    except SatError as exc:
        raise SatError(f"dataset '{dataset}': {exc}") from None


def pil_mode(channels: int) -> str:
    """The PIL mode every image is converted to before transforming ("RGB" or "L")."""
    return "RGB" if channels == 3 else "L"


def eval_resize_size(image_size: int, crop_fraction: float = CROP_FRACTION) -> int:
    """Short side before the centre crop: ``floor(image_size / crop_fraction)`` (224 -> 256)."""
    return math.floor(image_size / crop_fraction + 1e-6)


class Lighting(nn.Module):
    """AlexNet's PCA lighting noise on a float RGB image in [0, 1]; clipped back to [0, 1].

    Adds ``eigvec @ (alpha * eigval)`` to every pixel, ``alpha ~ N(0, std^2)`` per image
    (per channel triple), as the official code and fb.resnet.torch do. Draws from
    torch's global generator, which ``DataLoader`` seeds differently in each worker.
    """

    def __init__(self, std: float = LIGHTING_STD) -> None:
        super().__init__()
        self.std = float(std)
        self.register_buffer("eigval", torch.tensor(PCA_EIGVAL), persistent=False)
        self.register_buffer("eigvec", torch.tensor(PCA_EIGVEC), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.std == 0:
            return image
        if image.shape[-3] != 3:
            raise ValueError(f"Lighting needs RGB images, got {image.shape[-3]} channels")
        alpha = torch.randn(3) * self.std
        shift = self.eigvec @ (alpha * self.eigval)
        return (image + shift.view(3, 1, 1).to(image.dtype)).clamp_(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"std={self.std}"


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run per-image tensor ops on one intra-op thread, then restore the thread count.

    An image is small work: split over several threads, each op pays a fork/join, and
    when other processes keep the cores busy every join waits for a descheduled thread.
    Measured on 2 shared cores: colour jitter on one 128x128 image took 1 ms on one
    thread and 190 ms on two. ``DataLoader`` workers already run on one thread; this
    covers ``num_workers = 0`` and evaluation subsets built in the main process. Setting
    the count costs about a microsecond.
    """
    previous = torch.get_num_threads()
    if previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


#: The training augmentations a recipe chooses from (``data.augmentation``); each fixes
#: the evaluation transform too (see :class:`Augmentation`).
AugmentationName = Literal["imagenet", "crop_flip", "none"]
AUGMENTATIONS: tuple[str, ...] = typing.get_args(AugmentationName)
#: ``crop_flip``'s zero padding on every side before the random crop (the CIFAR protocol's 4 px).
CROP_PADDING = 4

# The four recipe keys of :class:`Augmentation`, declared once for every dataset plugin
# that decodes images (their docs reach ``plugins --show`` and docs/reference.md from
# here); :meth:`Augmentation.checked` validates them.
AugmentationParam = Annotated[
    AugmentationName,
    Param(
        doc="the training augmentation, which fixes the evaluation transform too: imagenet "
        "(random-resized crop, flip, jitter, lighting; evaluation resizes and centre-crops), "
        "crop_flip (the CIFAR protocol: pad, random crop, flip; evaluation never resizes) or none"
    ),
]
ColorJitterParam = Annotated[
    float | None,
    Param(doc="brightness/contrast/saturation jitter for training; default 0.4 with imagenet, else 0"),
]
LightingParam = Annotated[
    float | None,
    Param(doc="std of the PCA lighting noise for training; default 0.1 with imagenet on RGB images, else 0"),
]
CropPaddingParam = Annotated[
    int | None, Param(doc="crop_flip's zero padding in pixels before the crop (default 4)")
]
# The served images' shape, declared once for every dataset plugin that decodes or makes images.
ImageSizeParam = Annotated[int, Param(ge=1, le=8192, doc="side of the square images served")]
ChannelsParam = Annotated[Literal[1, 3], Param(doc="3 (RGB) or 1 (grey); every image is converted to it")]
# The normalisation a decoding dataset reports to the model (its first layer applies it).
MeanParam = Annotated[
    tuple[float, ...] | None,
    Param(
        doc="per-channel mean of the training pixels in [0, 1], applied inside the model; "
        "set with std; default ImageNet's"
    ),
]
StdParam = Annotated[
    tuple[float, ...] | None,
    Param(doc="per-channel std of the training pixels in [0, 1]; set with mean; default ImageNet's"),
]


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """What training and evaluation images go through; one recipe choice, validated once.

    * ``imagenet``: the official SAT code's pipeline (:func:`train_transform`) for
      training, resize and centre crop (:func:`eval_transform`) for evaluation.
    * ``crop_flip``: the CIFAR protocol: zero-pad ``crop_padding`` pixels, crop
      ``image_size`` at random, flip horizontally; evaluation serves each image as it is,
      never resized. Images must already be ``image_size`` square.
    * ``none``: every split served as it is (images ``image_size`` square).

    ``color_jitter`` and ``lighting`` default to the official code's 0.4 and 0.1 with
    ``imagenet`` on RGB images and to 0 otherwise; ``crop_padding`` belongs to
    ``crop_flip`` alone.
    """

    dataset: str
    name: str
    image_size: int
    color_jitter: float
    lighting: float
    crop_padding: int | None

    @classmethod
    def checked(
        cls,
        dataset: str,
        name: str,
        image_size: int,
        channels: int,
        *,
        color_jitter: float | None = None,
        lighting: float | None = None,
        crop_padding: int | None = None,
    ) -> Augmentation:
        """Validate the recipe's values and fill in the defaults that depend on ``name``."""
        if name not in AUGMENTATIONS:
            raise SatError(
                f"dataset '{dataset}': augmentation must be one of {', '.join(AUGMENTATIONS)}, got {name!r}"
            )
        imagenet = name == "imagenet"
        if color_jitter is None:
            color_jitter = COLOR_JITTER if imagenet else 0.0
        if lighting is None:
            lighting = LIGHTING_STD if imagenet and channels == 3 else 0.0
        values = []
        for key, value in (("color_jitter", color_jitter), ("lighting", lighting)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise SatError(f"dataset '{dataset}': {key} must be a number in [0, 1), got {value!r}")
            if name == "none" and value > 0:
                raise SatError(
                    f"dataset '{dataset}': {key} = {value} with augmentation = 'none', which augments "
                    "nothing; remove it or choose augmentation = 'imagenet' or 'crop_flip'"
                )
            values.append(float(value))
        if channels != 3 and values[1] > 0:
            raise SatError(
                f"dataset '{dataset}': lighting noise needs RGB images; set lighting = 0 for channels = 1"
            )
        if name == "crop_flip":
            crop_padding = CROP_PADDING if crop_padding is None else crop_padding
            if isinstance(crop_padding, bool) or not isinstance(crop_padding, int) or crop_padding < 0:
                raise SatError(
                    f"dataset '{dataset}': crop_padding must be a whole number of pixels >= 0, "
                    f"got {crop_padding!r}"
                )
        elif crop_padding is not None:
            raise SatError(
                f"dataset '{dataset}': crop_padding belongs to augmentation = 'crop_flip' "
                f"(this recipe's is {name!r}); remove it or set augmentation = 'crop_flip'"
            )
        return cls(dataset, name, image_size, values[0], values[1], crop_padding)

    def params(self) -> dict[str, Any]:
        """The recipe keys that rebuild this augmentation, defaults filled in."""
        return {
            "augmentation": self.name,
            "color_jitter": self.color_jitter,
            "lighting": self.lighting,
            "crop_padding": self.crop_padding,
        }

    def transform(self, split: str) -> Transform:
        """PIL image -> float32 ``C x image_size x image_size`` in [0, 1] for ``split``."""
        if self.name == "imagenet":
            if split == "train":
                return train_transform(
                    self.image_size, color_jitter=self.color_jitter, lighting=self.lighting
                )
            return eval_transform(self.image_size)
        from torchvision.transforms import v2

        steps: list[Callable[..., Any]] = [v2.ToImage(), ServedSize(self.dataset, self.name, self.image_size)]
        if split == "train" and self.name == "crop_flip":
            steps += [v2.RandomCrop(self.image_size, padding=self.crop_padding), v2.RandomHorizontalFlip()]
        if split == "train" and self.color_jitter > 0:
            jitter = self.color_jitter
            steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter))
        steps.append(v2.ToDtype(torch.float32, scale=True))
        if split == "train" and self.lighting > 0:
            steps.append(Lighting(self.lighting))
        return v2.Compose(steps)


def check_image_params(cls: type, params: Mapping[str, Any]) -> None:
    """A decoding dataset's checks between its keys, as its ``check_params`` hook.

    They run when the recipe is validated, so a dry run, which replaces the data with
    synthetic images, refuses the values the real run would (crop_padding with the
    ImageNet pipeline, a mean for 2 of 3 channels); the constructor runs the same
    functions again to fill in the defaults.
    """
    values = {**defaults(cls), **params}
    Augmentation.checked(
        cls.name,
        values["augmentation"],
        values["image_size"],
        values["channels"],
        color_jitter=values["color_jitter"],
        lighting=values["lighting"],
        crop_padding=values["crop_padding"],
    )
    normalisation_stats(values["channels"], values["mean"], values["std"], dataset=cls.name)


class ServedSize:
    """Refuses an image that is not ``image_size`` square, where no resize would fix it.

    ``crop_flip`` and ``none`` serve images at their own size (evaluation never resizes,
    so the attacked pixels are the dataset's), and a batch needs one size.
    """

    def __init__(self, dataset: str, augmentation: str, image_size: int) -> None:
        self.dataset, self.augmentation, self.image_size = dataset, augmentation, image_size

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        if height != self.image_size or width != self.image_size:
            raise WrongImageSize(self, width, height)
        return image

    def message(self, which: str, width: int, height: int) -> str:
        return (
            f"dataset '{self.dataset}': augmentation = '{self.augmentation}' serves images at their own "
            f"size, but {which} is {width}x{height} and image_size = {self.image_size}; set image_size "
            "to the images' size, or augmentation = 'imagenet' to resize and crop"
        )


class WrongImageSize(SatError):
    """:class:`ServedSize`'s refusal, which :class:`DecodedImageDataset` words again with the
    image's place (split and row, or file): one odd image among thousands is otherwise unfindable."""

    def __init__(self, check: ServedSize, width: int, height: int) -> None:
        super().__init__(check.message("an image", width, height))
        self.check, self.width, self.height = check, width, height

    def at(self, which: str) -> str:
        """The message with ``which`` (e.g. "row 17 of split 'train'") for "an image"."""
        return self.check.message(which, self.width, self.height)


def train_transform(
    image_size: int, *, color_jitter: float = COLOR_JITTER, lighting: float = LIGHTING_STD
) -> Transform:
    """PIL image -> augmented float32 ``C x image_size x image_size`` in [0, 1] (see module doc)."""
    from torchvision.transforms import v2

    steps: list[Callable[..., Any]] = [
        v2.ToImage(),
        v2.RandomResizedCrop(
            image_size,
            scale=CROP_SCALE,
            ratio=CROP_RATIO,
            interpolation=v2.InterpolationMode.BICUBIC,
            antialias=True,
        ),
        v2.RandomHorizontalFlip(),
    ]
    if color_jitter > 0:
        steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if lighting > 0:
        steps.append(Lighting(lighting))
    return v2.Compose(steps)


def eval_transform(image_size: int, crop_fraction: float = CROP_FRACTION) -> Transform:
    """PIL image -> float32 ``C x image_size x image_size``: resize short side, centre crop."""
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(
                eval_resize_size(image_size, crop_fraction),
                interpolation=v2.InterpolationMode.BICUBIC,
                antialias=True,
            ),
            v2.CenterCrop(image_size),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )


class DecodedImageDataset(Dataset, abc.ABC):
    """A map-style dataset that decodes and transforms one image per index.

    All work happens in ``__getitem__``, so a ``DataLoader`` with workers decodes and
    augments in the workers, never in the training process. A list or tensor index gives
    a stacked batch ``(B x C x H x W, B)``, which is what the engine's batch fetcher and
    the evaluation subset ask for; there is deliberately no ``__getitems__``, so a plain
    ``DataLoader`` with the default collate works too.

    Subclasses hold only light, picklable state (paths, label arrays, memory-mapped
    tables): spawned workers receive a pickled copy.
    """

    def __init__(self, transform: Transform, channels: int) -> None:
        self.transform = transform
        self.channels = channels

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def load_image(self, index: int) -> Image.Image:
        """The decoded PIL image at ``index``, in any mode (converted to ``channels`` afterwards)."""

    @abc.abstractmethod
    def label(self, index: int) -> int:
        """The label at ``index``, without decoding the image."""

    def describe(self, index: int) -> str:
        """Where the image at ``index`` lives, for an error about that one image."""
        return f"image {index}"

    def _item(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        size = len(self)
        if not -size <= index < size:
            raise IndexError(f"index {index} out of range for {size} images")
        index %= size
        image = self.load_image(index)
        mode = pil_mode(self.channels)
        if image.mode != mode:
            image = image.convert(mode)
        try:
            served = self.transform(image)
        except WrongImageSize as exc:
            # Plain SatError: a loader worker re-raises it by type with its message alone.
            raise SatError(exc.at(self.describe(index))) from None
        return served, torch.tensor(self.label(index), dtype=torch.int64)

    def __getitem__(self, index: int | Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(index, torch.Tensor) and index.ndim == 0:
            index = int(index)
        with single_threaded():
            if isinstance(index, (Sequence, torch.Tensor, np.ndarray)):
                items = [self._item(operator.index(i)) for i in index]
                if not items:
                    raise IndexError("empty index list")
                images, labels = zip(*items, strict=True)
                return torch.stack(images), torch.stack(labels)
            return self._item(operator.index(index))
