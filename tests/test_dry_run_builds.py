"""A whole dry run builds each dataset once: the recipe's own for its shape, the stand-in to train on.

``test_recipe_dry_runs`` counts the look at the real dataset while the recipe is rewritten;
this walks ``dry_run`` end to end (validation, training, evaluation), where a second build
of the stand-in or a second load of a split would cost a large recipe its memory twice.
"""

from __future__ import annotations

import collections
import functools
import re
from pathlib import Path
from typing import Any

import pytest

from sat_toolkit.data.digits import Digits
from sat_toolkit.data.synthetic import Synthetic
from sat_toolkit.engine.dry_run import dry_run

QUICKSTART = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml"


def test_a_dry_run_builds_each_dataset_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: collections.Counter[str] = collections.Counter()

    def counting(cls: type, method: str) -> None:
        original = getattr(cls, method)

        @functools.wraps(original)  # the plugin host reads the signature
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            calls[f"{cls.__name__}.{method}{args}"] += 1
            return original(self, *args, **kwargs)

        monkeypatch.setattr(cls, method, wrapper)

    counting(Digits, "info")
    counting(Digits, "load")  # inherited from DatasetSource: patched on Digits alone
    counting(Synthetic, "__init__")
    counting(Synthetic, "load")
    summary = dry_run(QUICKSTART, ["train.epochs=1"], show_progress=False)
    assert summary.metrics["steps"] == 2
    assert calls == {
        "Digits.info()": 1,  # the real dataset: its shape only, never its images
        "Synthetic.__init__()": 1,
        "Synthetic.load('train',)": 1,
        "Synthetic.load('test',)": 1,
    }


CIFAR = Path(__file__).resolve().parents[1] / "recipes" / "cifar10_preact_resnet18.toml"
SMALL = ("data.batch_size=4",)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "data.image_colum=img",
            "data.image_colum: unknown parameter of dataset 'hub'; did you mean 'image_column'?",
        ),
        ("data.name=hubb", "data.name: unknown dataset 'hubb'. Did you mean 'hub'?"),
        ("data.channels=2", "data.channels: must be one of 1, 3, got integer 2"),
        # Checks between keys (the data plugin's check_params): once only the real run's
        # constructor made them, so a dry run without the data said ok.
        ("data.crop_padding=-1", "data.crop_padding: must be a whole number of pixels >= 0, got -1"),
        ("data.color_jitter=2", "data.color_jitter: must be a number in [0, 1), got 2.0"),
        ("data.mean=[0.5, 0.5]", "data.mean: the data has 3 channel(s); give 1 or 3 values"),
    ],
)
def test_a_dry_run_refuses_the_data_table_recipe_validate_refuses(override: str, message: str) -> None:
    """The dry run trains on synthetic images, yet once said ok to a [data] the real run refuses."""
    from sat_toolkit.recipe import RecipeError

    with pytest.raises(RecipeError, match=re.escape(message)):
        dry_run(CIFAR, [*SMALL, override], image_size=16, show_progress=False)


def test_a_dry_run_forgives_only_the_absent_data_files() -> None:
    summary = dry_run(CIFAR, [*SMALL, "data.path=/nowhere/cifar10"], image_size=16, show_progress=False)
    assert summary.metrics["steps"] == 2
