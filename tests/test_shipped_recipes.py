"""Every recipe shipped in ``recipes/`` validates, on any machine.

Validation never loads data: a dataset's location is checked only when the recipe sets
``data.path`` (that the path exists), so recipes without one (digits, Fashion-MNIST)
validate without their data installed. Recipes that pin a ``data.path`` (the ImageNet
ones: ``--set data.path=...`` is part of running them) are validated with the path
pointed at an existing folder, and without it must fail on that key alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sat_toolkit.recipe import RecipeError, load_recipe
from sat_toolkit.recipe.toml_io import read_file

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
SHIPPED = sorted(RECIPES.glob("*.toml"))


def _pins_data_path(path: Path) -> bool:
    data = read_file(path).get("data", {})
    return isinstance(data, dict) and "path" in data


def test_recipes_are_shipped() -> None:
    names = {p.name for p in SHIPPED}
    assert {"quickstart.toml", "fashion_mnist_relu.toml", "fashion_mnist_silu.toml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_recipe_validates(path: Path, tmp_path: Path) -> None:
    overrides = [f"data.path={tmp_path}"] if _pins_data_path(path) else []
    recipe = load_recipe(path, overrides)
    assert recipe.to_toml()  # resolved: every default filled in


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_recipe_needs_no_data_to_validate(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No dataset installed, no network: only a pinned, missing data.path may be reported."""
    from sat_toolkit.data import fashion_mnist

    monkeypatch.setattr(fashion_mnist, "DEFAULT_DIR", tmp_path / "not-installed")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # a relative data.path resolves to nothing here
    if not _pins_data_path(path):
        load_recipe(path)
        return
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert [p.path for p in caught.value.problems] == ["data.path"], str(caught.value)


def test_fashion_mnist_pair_differs_only_in_the_activation() -> None:
    relu, silu = (RECIPES / f"fashion_mnist_{act}.toml" for act in ("relu", "silu"))
    raw_relu, raw_silu = read_file(relu), read_file(silu)
    assert (raw_relu.pop("activation"), raw_silu.pop("activation")) == ("relu", "silu")
    assert raw_relu == raw_silu
    changed = [
        (a, b)
        for a, b in zip(relu.read_text().splitlines(), silu.read_text().splitlines(), strict=True)
        if a != b
    ]
    assert len(changed) == 1 and changed[0][0].startswith('activation = "relu"'), changed
