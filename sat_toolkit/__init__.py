"""sat-toolkit: smooth adversarial training as a product.

``sat_toolkit.run(recipe)`` trains and evaluates like ``sat-toolkit run``;
``sat_toolkit.load_model(run_dir)`` gives back the trained model, inputs in [0, 1].
"""

from __future__ import annotations

__version__ = "0.1.0"

from sat_toolkit.api import load_model, run  # noqa: E402

__all__ = ["__version__", "load_model", "run"]
