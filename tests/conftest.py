"""Shared fixtures: offline settings, thread pinning, fake plugin distributions (sat_toolkit.testing)."""

from __future__ import annotations

import os
from collections.abc import Iterator

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


# The fixture plugin packages use too, so the core tests its error paths with the same tool.
from sat_toolkit.testing import fake_distribution  # noqa: E402, F401
