"""Shared fixtures: offline settings and a factory for fake plugin distributions."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

# Nothing in the test suite may touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """For modules of tiny models: a second intra-op thread only adds contention.

    Module-scoped and restored afterwards, so the thread count (which changes float
    reduction order) is the same for every other test and for subprocesses they start.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fresh_plugin_host(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Reload plugins from scratch before and after a test that changes what is installed."""
    from sat_toolkit.plugins import reset_plugin_host

    monkeypatch.delenv("SAT_TOOLKIT_DISABLE_PLUGINS", raising=False)
    reset_plugin_host()
    yield
    reset_plugin_host()


FakeDistribution = Callable[..., Path]


@pytest.fixture
def fake_distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_plugin_host: None
) -> FakeDistribution:
    """Install a throw-away distribution with a real ``sat_toolkit`` entry point.

    It writes ``<name>-<version>.dist-info/`` (METADATA + entry_points.txt) and the plugin
    module into a directory on ``sys.path``: exactly what pip leaves behind, so discovery
    goes through ``importlib.metadata`` like it does for a real install.
    """
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))

    def make(
        dist_name: str, module_source: str, version: str = "1.0", entry_point: str | None = None
    ) -> Path:
        module = dist_name.replace("-", "_") + "_plugin"
        (site / f"{module}.py").write_text(textwrap.dedent(module_source))
        info = site / f"{dist_name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[sat_toolkit]\n{entry_point or dist_name} = {module}\n")
        sys.modules.pop(module, None)
        return info

    return make
