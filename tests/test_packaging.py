"""Packaging names: what a plugin depends on must be the distribution that is this toolkit.

``sat-toolkit`` on PyPI is an unrelated project (a CNF-formula tool). A plugin declaring
``sat-toolkit>=0.1`` pulled that project into a clean environment instead of ours, so the
checks here ask the installed metadata, not a hard-coded expectation, which distribution
really ships the ``sat_toolkit`` package and its built-in plugins.
"""

from __future__ import annotations

import importlib.metadata as importlib_metadata
import re
import sys
from pathlib import Path

from sat_toolkit.plugins.manager import (
    BUILTIN_DISTRIBUTION,
    ENTRY_POINT_GROUP,
    normalise_distribution,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
PLUGIN_PYPROJECT = REPO / "plugins" / "sat-extra-activations" / "pyproject.toml"
TAKEN_ON_PYPI = "sat-toolkit"
# PEP 508: a requirement starts with the distribution name.
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _plugin_toolkit_requirement() -> str:
    """The name of the example plugin's dependency on the toolkit (the one that is not torch)."""
    dependencies = tomllib.loads(PLUGIN_PYPROJECT.read_text())["project"]["dependencies"]
    names = [normalise_distribution(_REQUIREMENT_NAME.match(dep).group(1)) for dep in dependencies]
    toolkit = [name for name in names if name != "torch"]
    assert len(toolkit) == 1, f"expected one toolkit dependency besides torch, got {names}"
    return toolkit[0]


def _distributions_providing_sat_toolkit() -> set[str]:
    """Every installed distribution whose files include the top-level ``sat_toolkit`` package."""
    providers = importlib_metadata.packages_distributions().get("sat_toolkit", [])
    return {normalise_distribution(name) for name in providers}


def test_the_builtin_distribution_provides_sat_toolkit_and_is_not_the_taken_name() -> None:
    assert normalise_distribution(BUILTIN_DISTRIBUTION) != TAKEN_ON_PYPI
    assert normalise_distribution(BUILTIN_DISTRIBUTION) in _distributions_providing_sat_toolkit()


def test_example_plugin_depends_on_the_distribution_that_ships_sat_toolkit() -> None:
    required = _plugin_toolkit_requirement()
    assert required != TAKEN_ON_PYPI, "sat-toolkit on PyPI is an unrelated project"
    assert required in _distributions_providing_sat_toolkit()
    # ... and that distribution is the one carrying the built-in plugins' entry points.
    entry_points = importlib_metadata.distribution(required).entry_points.select(group=ENTRY_POINT_GROUP)
    builtin = {ep.name: ep.value for ep in entry_points}
    assert builtin, f"{required} declares no '{ENTRY_POINT_GROUP}' entry points"
    assert all(name.startswith("builtin-") for name in builtin)
    assert all(value.startswith("sat_toolkit.builtin.") for value in builtin.values())
