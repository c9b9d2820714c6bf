"""A whole dry run builds each dataset once: the recipe's own for its shape, the stand-in to train on.

``test_recipe_dry_runs`` counts the look at the real dataset while the recipe is rewritten;
this walks ``dry_run`` end to end (validation, training, evaluation), where a second build
of the stand-in or a second load of a split would cost a large recipe its memory twice.
"""

from __future__ import annotations

import collections
import functools
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
