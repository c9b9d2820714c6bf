"""sat-toolkit: smooth adversarial training as a product."""

from __future__ import annotations

__version__ = "0.1.0"
