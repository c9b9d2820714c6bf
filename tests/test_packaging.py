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
import warnings
from pathlib import Path

import pytest

from sat_toolkit.plugins import get_plugin_host
from sat_toolkit.plugins.manager import (
    BUILTIN_DISTRIBUTION,
    ENTRY_POINT_GROUP,
    PluginWarning,
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


def test_contributings_pyproject_is_the_example_plugins_in_every_key_it_shows() -> None:
    """A stranger copies it: it once lacked version and [build-system], and pip refused it."""
    text = (REPO / "CONTRIBUTING.md").read_text(encoding="utf-8")
    snippet = re.search(r"```toml\n(# pyproject.toml of the plugin package.*?)```", text, re.DOTALL)
    assert snippet is not None
    shown = tomllib.loads(snippet.group(1))
    real = tomllib.loads(PLUGIN_PYPROJECT.read_text())
    assert shown["build-system"] == real["build-system"]
    assert {key: real["project"][key] for key in shown["project"]} == shown["project"]
    assert {"name", "version", "dependencies", "entry-points"} <= set(shown["project"])


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


def test_stale_metadata_of_the_old_name_does_not_break_the_builtins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_plugin_host: None
) -> None:
    """A clone installed before the rename keeps a ``sat_toolkit.egg-info`` at its root.

    Run from there (``python -m pytest`` puts the working directory on ``sys.path``), the
    built-ins' entry points are declared twice, by the old and the new name; they must
    still load once, from the built-in distribution, with no warning.
    """
    ours = importlib_metadata.distribution(BUILTIN_DISTRIBUTION)
    stale = tmp_path / "sat_toolkit.egg-info"
    stale.mkdir()
    (stale / "PKG-INFO").write_text(f"Metadata-Version: 2.1\nName: {TAKEN_ON_PYPI}\nVersion: 0.1.0\n")
    (stale / "entry_points.txt").write_text(ours.read_text("entry_points.txt"))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert TAKEN_ON_PYPI in _distributions_of_entry_point("builtin-activations")

    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)
        host = get_plugin_host()
        records = host.records("activation")
    silu = [r for r in records if r.name == "silu"]
    assert [(r.distribution, r.status) for r in silu] == [(ours.metadata["Name"], "ok")]


def _distributions_of_entry_point(name: str) -> set[str]:
    """Which distributions on ``sys.path`` declare the ``sat_toolkit`` entry point ``name``."""
    return {
        normalise_distribution(ep.dist.metadata["Name"])
        for ep in importlib_metadata.entry_points(group=ENTRY_POINT_GROUP)
        if ep.name == name and ep.dist is not None
    }
