"""What a model needs to know about a dataset, without loading it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from sat_toolkit.errors import SatError


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Shape and statistics of a dataset: enough to build (and rebuild) a model for it.

    ``mean`` and ``std`` are per-channel statistics of the *training* images in [0, 1]
    pixel space. They go into the model's first layer (:class:`sat_toolkit.models.Normalize`),
    so the attacker always works in pixel space, where epsilon is defined.

    Attributes:
        num_classes: number of labels; labels are ``0 .. num_classes - 1``.
        channels: image channels (1 for grey, 3 for RGB).
        image_size: ``(height, width)``.
        mean: per-channel mean, one float per channel.
        std: per-channel standard deviation, one positive float per channel.
        class_names: optional human-readable label names, one per class.
    """

    num_classes: int
    channels: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        # Normalise list inputs (JSON/TOML round trips give lists) so equality is by value.
        object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(str(v) for v in self.class_names))
        self._validate()

    def _validate(self) -> None:
        if self.num_classes < 2:
            raise SatError(f"DatasetInfo: num_classes must be >= 2, got {self.num_classes}")
        if self.channels < 1:
            raise SatError(f"DatasetInfo: channels must be >= 1, got {self.channels}")
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise SatError(f"DatasetInfo: image_size must be (height, width) >= 1, got {self.image_size}")
        for key in ("mean", "std"):
            values = getattr(self, key)
            if len(values) != self.channels:
                raise SatError(
                    f"DatasetInfo: {key} needs one value per channel ({self.channels}), got {values}"
                )
        problem = pixel_statistics_problem(self.mean, self.std)
        if problem:  # a plugin's mean over uint8 pixels would train on inputs off by 255
            raise SatError(f"DatasetInfo: {problem}")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise SatError(f"DatasetInfo: {len(self.class_names)} class_names for {self.num_classes} classes")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of one image."""
        return (self.channels, *self.image_size)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/TOML-friendly values (lists, not tuples); inverse of :meth:`from_dict`."""
        return {
            "num_classes": self.num_classes,
            "channels": self.channels,
            "image_size": list(self.image_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "class_names": None if self.class_names is None else list(self.class_names),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetInfo:
        """Rebuild from :meth:`to_dict` output (e.g. a checkpoint's ``sat_config``)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise SatError(
                f"DatasetInfo: unknown key '{unknown[0]}'; valid keys: {', '.join(sorted(fields))}"
            )
        missing = sorted(fields - {"class_names"} - set(data))
        if missing:
            raise SatError(f"DatasetInfo: missing key '{missing[0]}'")
        class_names: Sequence[str] | None = data.get("class_names")
        return cls(**{**dict(data), "class_names": None if class_names is None else tuple(class_names)})


def checked_statistics(
    mean: Sequence[float], std: Sequence[float], channels: int, *, names: tuple[str, str]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` with one value per channel, in the [0, 1] pixel space a model takes.

    The one check for statistics a user types (a recipe's ``data.mean`` / ``data.std``,
    eval's ``--mean`` / ``--std``): a single value stands for every channel (``--mean 0
    --std 1``: no normalisation), and 8-bit statistics (125.3 for 0.4914) are refused,
    since a model would otherwise train or be scored on inputs off by a factor of 255
    with no other sign. ``names`` say in the error what to fix (``("--mean", "--std")``).
    """
    checked = []
    for given, name in ((mean, names[0]), (std, names[1])):
        values = tuple(float(v) for v in given)
        if len(values) == 1:
            values *= channels
        if len(values) != channels:
            wanted = "1 value" if channels == 1 else f"1 or {channels} values (one per channel)"
            raise SatError(f"{name}: the data has {channels} channel(s); give {wanted}, got {len(values)}")
        checked.append(values)
    mean_values, std_values = checked
    problem = pixel_statistics_problem(mean_values, std_values, names)
    if problem:
        raise SatError(problem)
    return mean_values, std_values


def pixel_statistics_problem(
    mean: Sequence[float], std: Sequence[float], names: tuple[str, str] = ("mean", "std")
) -> str | None:
    """Why ``mean`` / ``std`` cannot be statistics of pixels in [0, 1]; else ``None``."""
    for values, name, what, allowed, fits in (
        (mean, names[0], "mean", "[0, 1]", lambda v: 0 <= v <= 1),
        (std, names[1], "std", "(0, 1]", lambda v: 0 < v <= 1),
    ):
        if not all(fits(v) for v in values):
            hint = "; for 8-bit statistics divide by 255 (e.g. 125.3 -> 0.4914)" if max(values) > 1 else ""
            return (
                f"{name} {list(values)}: the model sees pixels in [0, 1], so a {what} lies in {allowed}{hint}"
            )
    return None
